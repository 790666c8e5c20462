"""PLOT (issue 22's group-specific soft prompt) against CHENGY12/PLOT's plot-coop: its prompt
group, local features, Sinkhorn and transport score are ported below from
`trainers/plot.py` and `clip/model.py` and compared with ours on tiny open_clip models (a
ResNet, as their RN50, and a ViT); its recipe against `configs/trainers/PLOT/rn50.yaml`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import make_clip_checkpoint, make_image_folder
from descriptor_gen.learn.deep import encode_image_local
from descriptor_gen.learn.learners import Plot
from descriptor_gen.learn.methods import LEARNED
from descriptor_gen.learn.run import LearnConfig, LearnedScorer, learn
from descriptor_gen.paths import CachePaths
from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.score.features import load_clip

PROMPTS = CachePaths.resolve().prompts_dir
NAMES = ["tench", "goldfish", "great_white_shark", "eel", "ray"]
TINY_RN = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def rn_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    config, checkpoint = make_clip_checkpoint(tmp_path_factory.mktemp("rn-clip"), "tiny-rn-test",
                                              TINY_RN, seed=2)
    return config, checkpoint, load_clip(str(config), str(checkpoint), "cpu")


def ref_sinkhorn(K, u, v, max_iter=100):  # noqa: ANN001, ANN201
    """Their `CustomCLIP.Sinkhorn`, verbatim."""
    r = torch.ones_like(u)
    c = torch.ones_like(v)
    thresh = 1e-2
    for i in range(max_iter):
        r0 = r
        r = u / torch.matmul(K, c.unsqueeze(-1)).squeeze(-1)
        c = v / torch.matmul(K.permute(0, 2, 1).contiguous(), r.unsqueeze(-1)).squeeze(-1)
        err = (r - r0).abs().mean()
        if err.item() < thresh:
            break
    T = torch.matmul(r.unsqueeze(-1), c.unsqueeze(-2)) * K
    return T


def ref_forward(learner: Plot, tokens_all: torch.Tensor, imagenet: bool) -> torch.Tensor:
    """Their `PromptLearner.forward` and `CustomCLIP.forward` from the image encoder's output
    on (`tokens_all`: (HW + 1, B, D), their attention pool's)."""
    p, N = learner.prompt, learner.n_prompts
    n_cls = p.tokens.shape[0]
    ctx = p.ctx.unsqueeze(0).expand(n_cls, -1, -1, -1)
    ctx = ctx.permute(1, 0, 2, 3)
    ctx = ctx.contiguous().view(N * n_cls, p.n_ctx, ctx.shape[3])
    prefix = p.token_prefix.repeat(N, 1, 1)
    suffix = p.token_suffix.repeat(N, 1, 1)
    prompts = torch.cat([prefix, ctx, suffix], dim=1)
    tokenized_prompts = p.tokens.repeat(N, 1)
    model = learner.model[0]
    x = prompts + model.positional_embedding
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    text_features = x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ model.text_projection
    b = tokens_all.shape[1]
    image_feature_pool = tokens_all[0]
    image_features = tokens_all[1:]
    M = image_features.shape[0]
    d = image_features.shape[-1]
    text_features = text_features.contiguous().view(N, n_cls, d)
    text_feature_pool = text_features.mean(dim=0)
    image_features = F.normalize(image_features, dim=2)
    image_feature_pool = F.normalize(image_feature_pool, dim=1)
    text_features = F.normalize(text_features, dim=2)
    text_feature_pool = F.normalize(text_feature_pool, dim=1)
    sim = torch.einsum('mbd,ncd->mnbc', image_features, text_features).contiguous()
    sim = sim.view(M, N, b * n_cls)
    sim = sim.permute(2, 0, 1)
    wdist = 1.0 - sim
    xx = torch.zeros(b * n_cls, M, dtype=sim.dtype, device=sim.device).fill_(1. / M)
    yy = torch.zeros(b * n_cls, N, dtype=sim.dtype, device=sim.device).fill_(1. / N)
    with torch.no_grad():
        KK = torch.exp(-wdist / 0.1)
        T = ref_sinkhorn(KK, xx, yy)
    sim_op = torch.sum(T * sim, dim=(1, 2))
    sim_op = sim_op.contiguous().view(b, n_cls)
    logit_scale = model.logit_scale.exp()
    logits = logit_scale * image_feature_pool @ text_feature_pool.t()
    logits2 = logit_scale * sim_op
    if imagenet:
        logits2 = (logits2 + logits)
    return logits2


def ref_attention_pool(pool: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Their clip/model.py `AttentionPool2d.forward`, which returns every token."""
    x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]).permute(2, 0, 1)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + pool.positional_embedding[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False)
    return x


def _images(size: int, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_local_features_are_their_attention_pools_every_token(rn_clip: tuple) -> None:
    clip = rn_clip[2]
    visual = clip.model.visual
    with torch.no_grad():
        ours = encode_image_local(clip.model, _images(64))
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(_images(64))))))
        theirs = ref_attention_pool(visual.attnpool, x).permute(1, 0, 2)
        pooled = clip.model.encode_image(_images(64))
    torch.testing.assert_close(ours, theirs)
    assert ours.shape == (3, 1 + 4, 32)  # 64 px / 32 = 2 x 2 local features
    torch.testing.assert_close(ours[:, 0], pooled)  # token 0 is the model's own feature


def test_a_vits_local_features_start_with_its_pooled_feature(tiny_clip: tuple[Path, Path]) -> None:
    clip = load_clip(str(tiny_clip[0]), str(tiny_clip[1]), "cpu")
    with torch.no_grad():
        ours = encode_image_local(clip.model, _images(32))
        pooled = clip.model.encode_image(_images(32))
    assert ours.shape == (3, 1 + 16, 32)
    torch.testing.assert_close(ours[:, 0], pooled, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("imagenet", [False, True])
@pytest.mark.parametrize("n_prompts", [1, 4])
def test_plot_scores_as_the_reference(rn_clip: tuple, imagenet: bool, n_prompts: int) -> None:
    clip = rn_clip[2]
    learner = Plot(clip, NAMES, n_prompts, 4, seed=0, global_logits=imagenet)
    assert tuple(learner.prompt.ctx.shape) == (n_prompts, 4, 32)
    with torch.no_grad():
        learner.prompt.ctx.normal_(0, 0.3)  # away from the start, so that the prompts differ
        visual = clip.model.visual
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(_images(64))))))
        tokens = ref_attention_pool(visual.attnpool, x)
        theirs = ref_forward(learner, tokens, imagenet)
        ours = learner.logits(learner.encode(_images(64)))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


def test_the_recipe_is_their_config() -> None:
    entry = LEARNED["plot"]
    recipe, options = entry.recipe, entry.options()
    # configs/trainers/PLOT/rn50.yaml and train.py's TRAINER.PLOT defaults, main.sh's N_CTX 16
    assert (recipe.optimiser, recipe.lr, recipe.batch_size, recipe.epochs(16, "x")) == ("sgd", 0.002, 128, 50)
    assert recipe.schedule == "coop" and recipe.drop_last
    assert (options.n_prompts, options.n_ctx, options.global_logits) == (4, 16, None)
    assert entry.local and not entry.pixels


def test_plot_trains_on_cached_local_features_and_scores_new_classes(
        rn_clip: tuple, tmp_path: Path) -> None:
    config, checkpoint, clip = rn_clip
    train = make_image_folder(tmp_path / "train", {n: 3 for n in NAMES}, seed=1)
    test = make_image_folder(tmp_path / "test", {n: 2 for n in NAMES}, seed=0)
    cfg = LearnConfig(method="plot", dataset=str(train), options={"shots": 2, "epochs": 3, "lr": 0.5,
                                                                  "n_ctx": 4, "batch_size": 4},
                      classes=NAMES, model=str(config), pretrained=str(checkpoint), device="cpu",
                      workers=0, subsample="base")
    kept: list = []
    info = learn(cfg, tmp_path / "run", tmp_path / "cache", PROMPTS, progress=False, clip=clip,
                 log=lambda m: None, on_done=kept.append)
    assert info.finished and len(list((tmp_path / "cache" / "learn_features").glob("*.npy"))) == 1
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    results = {}
    for half in ("base", "new"):
        ecfg = EvalConfig(dataset=str(test), model=str(config), pretrained=str(checkpoint),
                          device="cpu", workers=0, batch_size=4, learned=tmp_path / "run",
                          subsample=half)
        results[half] = evaluate(ecfg, NAMES, tmp_path / "cache", PROMPTS, clip=clip,
                                 log=lambda m: None, scorer=LearnedScorer(tmp_path / "run"))
    assert results["base"].metrics["n_images"] == 6 and results["new"].metrics["n_images"] == 4
