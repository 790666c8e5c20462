"""VPT, IVLP and MaPLe (issue 22) against the multimodal-prompt-learning repository
(muzairkhattak/multimodal-prompt-learning): the token handling of its `VisionTransformer`,
`ResidualAttentionBlock_IVLP` and `ResidualAttentionBlock_MaPLe` is ported below line by line
(LND layout, slicing, the MaPLe counter), run on a tiny open_clip model's own blocks, and
compared with ours; the recipes are compared with its configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_clip_checkpoint, make_image_folder
from descriptor_gen.cli import main
from descriptor_gen.errors import DescgenError
from descriptor_gen.learn.learners import Ivlp, Maple, Vpt
from descriptor_gen.learn.methods import LEARNED
from descriptor_gen.learn.run import LearnConfig, LearnedScorer, learn, load_tensors
from descriptor_gen.paths import CachePaths
from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.score.features import load_clip

PROMPTS = CachePaths.resolve().prompts_dir
NAMES = ["tench", "goldfish", "great_white_shark", "eel"]
DEEP_CLIP = {  # deeper than the session's tiny CLIP, so that "which layers" can be seen
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
}


@pytest.fixture(scope="module")
def deep_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_clip_checkpoint(tmp_path_factory.mktemp("deep-clip"), "deep-clip-test", DEEP_CLIP, seed=1)


@pytest.fixture(scope="module")
def clip(deep_clip: tuple[Path, Path]) -> object:
    return load_clip(str(deep_clip[0]), str(deep_clip[1]), "cpu")


# -- the reference's token handling, ported ------------------------------------------------


def _block(block: torch.nn.Module, x_lnd: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """`x = x + attention(ln_1(x)); x = x + mlp(ln_2(x))` (their block body): open_clip's block
    on the batch-first layout."""
    return block(x_lnd.permute(1, 0, 2), attn_mask=mask).permute(1, 0, 2)


def ref_vision_ivlp(visual: torch.nn.Module, image: torch.Tensor, vpt: torch.Tensor | None,
                    vpt_shallow: dict[int, torch.Tensor]) -> torch.Tensor:
    """Their `VisionTransformer.forward` with `ResidualAttentionBlock_IVLP` blocks: block i
    (i != 0, prompts_needed > i) holds `VPT_shallow`."""
    x = visual.conv1(image)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    x = x.permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1],
                                                                     dtype=x.dtype), x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    if vpt is not None:
        visual_ctx = vpt.expand(x.shape[0], -1, -1)
        x = torch.cat([x, visual_ctx], dim=1)
    x = visual.ln_pre(x)
    x = x.permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if i in vpt_shallow:
            n_ctx_visual = vpt_shallow[i].shape[0]
            prefix = x[0:x.shape[0] - n_ctx_visual, :, :]
            visual_context = vpt_shallow[i].expand(x.shape[1], -1, -1).permute(1, 0, 2)
            x = torch.cat([prefix, visual_context], dim=0)
        x = _block(block, x)
    x = x.permute(1, 0, 2)
    x = visual.ln_post(x[:, 0, :])
    return x @ visual.proj


def ref_text_ivlp(model: torch.nn.Module, prompts: torch.Tensor, tokenized: torch.Tensor,
                  shallow: dict[int, torch.Tensor]) -> torch.Tensor:
    """Their `TextEncoder.forward` with text-layer `ResidualAttentionBlock_IVLP` blocks."""
    x = prompts + model.positional_embedding
    x = x.permute(1, 0, 2)
    for i, block in enumerate(model.transformer.resblocks):
        if i in shallow:
            n_ctx_text = shallow[i].shape[0]
            prefix = x[:1, :, :]
            suffix = x[1 + n_ctx_text:, :, :]
            textual_context = shallow[i].expand(x.shape[1], -1, -1).permute(1, 0, 2)
            x = torch.cat([prefix, textual_context, suffix], dim=0)
        x = _block(block, x, model.attn_mask)
    x = x.permute(1, 0, 2)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ model.text_projection


def ref_maple_blocks(blocks: torch.nn.Module, x: torch.Tensor, compound: list[torch.Tensor],
                     nctx: int, text_layer: bool, mask: torch.Tensor | None) -> torch.Tensor:
    """`ResidualAttentionBlock_MaPLe.forward` over the blocks, with its counter."""
    counter = 0
    for i, block in enumerate(blocks):
        if i != 0 and len(compound) > 0:
            if not text_layer:
                if not (counter > len(compound) - 1):
                    prefix = x[0:x.shape[0] - nctx, :, :]
                    visual_context = compound[counter].expand(x.shape[1], -1, -1).permute(1, 0, 2)
                    x = torch.cat([prefix, visual_context], dim=0)
                    counter += 1
            else:
                if not (counter > len(compound) - 1):
                    prefix = x[:1, :, :]
                    suffix = x[1 + nctx:, :, :]
                    textual_context = compound[counter].expand(x.shape[1], -1, -1).permute(1, 0, 2)
                    x = torch.cat([prefix, textual_context, suffix], dim=0)
                    counter += 1
        x = _block(block, x, mask)
    return x


def ref_maple(model: torch.nn.Module, learner: Maple, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MaPLe's `CustomCLIP.forward` up to the features: the prompt learner's outputs, their
    text encoder and `VisionTransformer_MaPLe`."""
    p = learner.prompt
    ctx = p.ctx.unsqueeze(0).expand(len(p.tokens), -1, -1)
    prompts = torch.cat([p.token_prefix, ctx, p.token_suffix], dim=1)
    shared_ctx = learner.proj(p.ctx)
    compound_text = list(learner.compound)
    visual_deep = [layer(compound_text[i]) for i, layer in enumerate(learner.compound_proj)]
    x = prompts + model.positional_embedding
    x = ref_maple_blocks(model.transformer.resblocks, x.permute(1, 0, 2), compound_text, p.n_ctx,
                         True, model.attn_mask).permute(1, 0, 2)
    x = model.ln_final(x)
    text = x[torch.arange(x.shape[0]), p.tokens.argmax(dim=-1)] @ model.text_projection
    visual = model.visual
    v = visual.conv1(image)
    v = v.reshape(v.shape[0], v.shape[1], -1).permute(0, 2, 1)
    v = torch.cat([visual.class_embedding + torch.zeros(v.shape[0], 1, v.shape[-1]), v], dim=1)
    v = v + visual.positional_embedding
    v = torch.cat([v, shared_ctx.expand(v.shape[0], -1, -1)], dim=1)
    v = visual.ln_pre(v).permute(1, 0, 2)
    v = ref_maple_blocks(visual.transformer.resblocks, v, visual_deep, p.n_ctx, False, None)
    v = visual.ln_post(v.permute(1, 0, 2)[:, 0, :]) @ visual.proj
    return text, v


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(5))


# -- prompt construction --------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_vpt_puts_its_prompts_where_the_reference_does(clip: object, depth: int) -> None:
    learner = Vpt(clip, torch.eye(len(NAMES), 16), n_ctx=3, depth=depth, seed=0)
    assert [tuple(p.shape) for p in learner.vision] == [(3, 64)] * depth
    with torch.no_grad():
        ours = learner.encode(_images())
        ref = ref_vision_ivlp(clip.model.visual, _images(), learner.vision[0],
                              {i: learner.vision[i] for i in range(1, depth)})
    torch.testing.assert_close(ours, _unit(ref), rtol=1e-5, atol=1e-5)
    plain = _unit(clip.model.encode_image(_images()))
    assert not torch.allclose(ours, plain, atol=1e-3)  # the prompts change the features


@pytest.mark.parametrize(("depth_text", "depth_vision"), [(3, 4), (1, 2), (2, 0)])
def test_ivlp_prompts_each_tower_independently(clip: object, depth_text: int, depth_vision: int) -> None:
    learner = Ivlp(clip, NAMES, 2, 3, depth_text, depth_vision, "a photo of a", seed=0)
    assert len(learner.text_deep) == depth_text - 1 and len(learner.vision) == depth_vision
    p = learner.prompt
    with torch.no_grad():
        text = learner.make_text()
        ref_text = ref_text_ivlp(clip.model, p(), p.tokens,
                                 {i: learner.text_deep[i - 1] for i in range(1, depth_text)})
        image = learner.encode(_images())
        ref_image = ref_vision_ivlp(clip.model.visual, _images(),
                                    learner.vision[0] if depth_vision else None,
                                    {i: learner.vision[i] for i in range(1, depth_vision)})
    torch.testing.assert_close(text, _unit(ref_text), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(image, _unit(ref_image), rtol=1e-5, atol=1e-5)


def test_maple_couples_the_towers_as_the_reference(clip: object) -> None:
    learner = Maple(clip, NAMES, n_ctx=2, depth=3, ctx_init="a photo of a", seed=0)
    p = learner.prompt
    # their init: the first n_ctx tokens of ctx_init learned, all its words in the prompt
    tokens = clip.tokenizer([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
    assert torch.equal(p.tokens, tokens)
    with torch.no_grad():
        embedded = clip.model.token_embedding(clip.tokenizer(["a photo of a"]))[0, 1:3]
    torch.testing.assert_close(p.ctx.detach(), embedded)
    assert tuple(learner.proj.weight.shape) == (64, 32)  # text width -> image width
    assert len(learner.compound) == 2 and len(learner.compound_proj) == 2
    first, second = learner.compound_proj  # _get_clones: one layer deep-copied
    assert torch.equal(first.weight, second.weight) and first.weight is not second.weight
    with torch.no_grad():
        ref_text, ref_image = ref_maple(clip.model, learner, _images())
        text, image = learner.make_text(), learner.encode(_images())
    torch.testing.assert_close(text, _unit(ref_text), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(image, _unit(ref_image), rtol=1e-5, atol=1e-5)
    # the vision prompts are functions of the text side: a change in a compound text prompt
    # moves the image features
    with torch.no_grad():
        learner.compound[0].add_(1.0)
        assert not torch.allclose(learner.encode(_images()), image, atol=1e-4)


def test_more_than_four_context_tokens_start_random_as_theirs(clip: object) -> None:
    learner = Maple(clip, NAMES, n_ctx=5, depth=1, ctx_init="a photo of a", seed=0)
    assert learner.prompt.tokens[0, 1:6].tolist() == clip.tokenizer(["X X X X X"])[0, 1:6].tolist()
    assert float(learner.prompt.ctx.detach().std()) == pytest.approx(0.02, rel=0.5)


@pytest.mark.parametrize(("make", "message"), [
    (lambda c: Vpt(c, torch.eye(4, 16), 2, 5, 0), "depth 5: the image tower has 4 layers"),
    (lambda c: Maple(c, NAMES, 2, 4, "a photo of a", 0), "depth 4: the shallower tower has 3"),
    (lambda c: Ivlp(c, NAMES, 2, 2, 4, 1, None, 0), "depth 4: the text tower has 3 layers"),
    (lambda c: Maple(c, NAMES, 3, 1, "a photo", 0), "'a photo' has 2 tokens"),
])
def test_impossible_prompts_are_one_line(clip: object, make: object, message: str) -> None:
    with pytest.raises(DescgenError, match=message):
        make(clip)  # type: ignore[operator]


# -- recipes against the reference's configs ------------------------------------------------

REFERENCE_CONFIGS = {  # configs/trainers/{VPT,IVLP,MaPLe}/*.yaml, the values that set a run
    "vpt": {"BATCH_SIZE": 4, "LR": 0.0025, "MAX_EPOCH": 5, "WARMUP_EPOCH": 1, "WARMUP_CONS_LR": 1e-5,
            "n_ctx": 8, "depth": 12},
    "ivlp": {"BATCH_SIZE": 4, "LR": 0.0035, "MAX_EPOCH": 5, "WARMUP_EPOCH": 1, "WARMUP_CONS_LR": 1e-5,
             "n_ctx_text": 2, "n_ctx_vision": 2, "depth_text": 12, "depth_vision": 12,
             "ctx_init": "a photo of a"},
    "maple": {"BATCH_SIZE": 4, "LR": 0.0035, "MAX_EPOCH": 5, "WARMUP_EPOCH": 1, "WARMUP_CONS_LR": 1e-5,
              "n_ctx": 2, "depth": 9, "ctx_init": "a photo of a"},
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_recipes_are_the_references_configs(name: str) -> None:
    from descriptor_gen.learn.train import WARMUP_EPOCHS, WARMUP_LR

    ref, entry = REFERENCE_CONFIGS[name], LEARNED[name]
    recipe, options = entry.recipe, entry.options()
    assert (recipe.optimiser, recipe.batch_size, recipe.lr, recipe.epochs(16, "x")) == (
        "sgd", ref["BATCH_SIZE"], ref["LR"], ref["MAX_EPOCH"])
    assert recipe.schedule == "coop" and (WARMUP_EPOCHS, WARMUP_LR) == (1, 1e-5)
    assert recipe.weight_decay == 5e-4 and recipe.drop_last and recipe.augment == "dassl"
    for key, value in ref.items():
        if key.islower():
            assert getattr(options, key) == value, key
    assert entry.pixels


# -- the harness: train, reload, score other classes ---------------------------------------


@pytest.fixture
def world(tmp_path: Path, deep_clip: tuple[Path, Path], clip: object) -> dict:
    train = make_image_folder(tmp_path / "train", {n: 3 for n in NAMES}, seed=1)
    test = make_image_folder(tmp_path / "test", {n: 2 for n in NAMES}, seed=0)
    return {"config": deep_clip[0], "checkpoint": deep_clip[1], "train": train, "test": test,
            "cache": tmp_path / "cache", "tmp": tmp_path, "clip": clip}


def _learn(world: dict, method: str, out: Path, subsample: str = "all", **options: object) -> object:
    cfg = LearnConfig(method=method, dataset=str(world["train"]), options={"shots": 2, **options},
                      classes=NAMES, model=str(world["config"]),
                      pretrained=str(world["checkpoint"]), device="cpu", workers=0,
                      subsample=subsample)
    kept: list = []
    info = learn(cfg, out, world["cache"], PROMPTS, progress=False, clip=world["clip"],
                 log=lambda m: None, on_done=kept.append)
    return info, kept[0]


def _eval(world: dict, run: Path, subsample: str = "all") -> object:
    cfg = EvalConfig(dataset=str(world["test"]), model=str(world["config"]),
                     pretrained=str(world["checkpoint"]), device="cpu", workers=0, batch_size=4,
                     learned=run, subsample=subsample)
    return evaluate(cfg, NAMES, world["cache"], PROMPTS, clip=world["clip"], log=lambda m: None,
                    scorer=LearnedScorer(run), predictions=world["tmp"] / f"{run.name}.jsonl")


@pytest.mark.parametrize(("method", "options"), [
    ("vpt", {"epochs": 3, "lr": 0.5, "depth": 3, "n_ctx": 2}),
    ("ivlp", {"epochs": 3, "lr": 0.5, "depth_text": 2, "depth_vision": 3}),
    ("maple", {"epochs": 3, "lr": 0.5, "depth": 3}),
])
def test_each_trains_on_augmented_pixels_and_reloads_to_the_same_scores(
        world: dict, method: str, options: dict) -> None:
    out = world["tmp"] / method
    info, trained = _learn(world, method, out, **options)
    assert info.finished and len((out / "log.jsonl").read_text().splitlines()) == 3
    saved = load_tensors(out / "learned.safetensors")
    assert any(k.startswith(("vision.", "prompt.", "compound", "proj", "text_deep")) for k in saved)
    result = _eval(world, out)
    lines = [json.loads(x) for x in (world["tmp"] / f"{method}.jsonl").read_text().splitlines()]
    from descriptor_gen.data.datasets import load_image_folder
    from descriptor_gen.score.features import ImageFiles, image_size

    data = load_image_folder(world["test"], NAMES)
    images = torch.stack([ImageFiles(data.paths, world["clip"].preprocess,
                                     image_size(world["clip"].preprocess))[i][0]
                          for i in range(len(data.paths))])
    with torch.no_grad():
        expected = trained.logits(trained.encode(images)).argmax(1).tolist()
    assert [x["pred"] for x in lines] == expected
    assert result.metrics["n_images"] == 8


def test_the_augmentation_is_a_function_of_seed_epoch_and_image(world: dict) -> None:
    """A resumed run draws the same crops: two runs of one seed end on equal tensors, another
    seed's differ."""
    a, _ = _learn(world, "vpt", world["tmp"] / "a", epochs=2, lr=0.5, depth=1, n_ctx=1)
    b, _ = _learn(world, "vpt", world["tmp"] / "b", epochs=2, lr=0.5, depth=1, n_ctx=1)
    c, _ = _learn(world, "vpt", world["tmp"] / "c", epochs=2, lr=0.5, depth=1, n_ctx=1, seed=2)
    ta, tb, tc = (load_tensors(world["tmp"] / x / "learned.safetensors")["vision.0"] for x in "abc")
    assert torch.equal(ta, tb) and not torch.equal(ta, tc)


@pytest.mark.parametrize("method", ["vpt", "ivlp", "maple"])
def test_base_runs_score_new_classes(world: dict, method: str) -> None:
    out = world["tmp"] / f"{method}-base"
    depth = {"vpt": {"depth": 2}, "ivlp": {"depth_text": 2, "depth_vision": 2},
             "maple": {"depth": 2}}[method]
    _learn(world, method, out, "base", epochs=1, **depth)
    new = _eval(world, out, "new")
    assert new.metrics["n_images"] == 4 and new.counts["classes"] == 2


def test_the_command_line_refuses_a_depth_beyond_the_model(world: dict,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = world["tmp"] / "too-deep"
    code = main(["learn", "maple", "--dataset", str(world["train"]), "--classes",
                 str(_classes(world)), "--out", str(out), "--shots", "1", "--option", "depth=9",
                 "--model", str(world["config"]), "--pretrained", str(world["checkpoint"]),
                 "--device", "cpu", "--workers", "0", "--cache-dir", str(world["cache"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "depth 9" in err[0], err
    assert not out.exists()


def _classes(world: dict) -> Path:
    path = world["tmp"] / "classes.txt"
    path.write_text("\n".join(NAMES) + "\n")
    return path


def test_scores_are_finite_for_every_method(world: dict) -> None:
    for method in ("vpt", "maple"):
        _learn(world, method, world["tmp"] / f"f-{method}", epochs=1, depth=2)
        scores = _eval(world, world["tmp"] / f"f-{method}")
        assert np.isfinite(scores.metrics["top1"])


def test_descriptor_guided_maple_keeps_its_text_near_the_descriptor_classifier(world: dict) -> None:
    """MaPLe + KgCoOp's term: with a large weight the learned class texts end nearer the
    descriptor classifier than MaPLe's own do, from the same start and shots."""
    from descriptor_gen.learn.builders import descriptor_classifier

    store = world["tmp"] / "d.jsonl"
    store.write_text("".join(json.dumps({"class_index": i, "class_name": n, "descriptors":
                                         [f"the fins of a {n}", "silver scales"], "backend": "t"}) + "\n"
                             for i, n in enumerate(NAMES)))
    guide = descriptor_classifier(world["clip"], NAMES, store, world["cache"], PROMPTS)
    near = {}
    for weight in (0.0, 50.0):
        cfg = LearnConfig(method="maple", dataset=str(world["train"]),
                          options={"shots": 2, "epochs": 3, "lr": 0.5, "depth": 2,
                                   "guide": "descriptors", "weight": weight},
                          classes=NAMES, descriptors=store, model=str(world["config"]),
                          pretrained=str(world["checkpoint"]), device="cpu", workers=0)
        kept: list = []
        learn(cfg, world["tmp"] / f"guided-{weight}", world["cache"], PROMPTS, progress=False,
              clip=world["clip"], log=lambda m: None, on_done=kept.append)
        with torch.no_grad():
            text = kept[0].make_text()
        near[weight] = float(torch.nn.functional.cosine_similarity(text, guide, dim=1).mean())
    assert near[50.0] > near[0.0]
    with pytest.raises(DescgenError, match="needs --descriptors"):
        learn(LearnConfig(method="maple", dataset=str(world["train"]),
                          options={"guide": "descriptors"}, classes=NAMES,
                          model=str(world["config"]), pretrained=str(world["checkpoint"]),
                          device="cpu", workers=0), world["tmp"] / "x", world["cache"], PROMPTS,
              clip=world["clip"])


def test_a_sweep_trains_and_reports_the_new_methods(world: dict,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The harness is shared: MaPLe and PLOT sit in a sweep beside a zero-shot method, one cell
    per K, resumable, reported."""
    import yaml

    spec = world["tmp"] / "spec.yaml"
    train = str(world["train"])
    spec.write_text(yaml.safe_dump({
        "name": "deep", "classes": str(_classes(world)), "dataset": str(world["test"]),
        "generation": {"backend": "openai", "model": "dev", "base_url": "http://127.0.0.1:9/v1"},
        "clip": {"model": str(world["config"]), "pretrained": str(world["checkpoint"]),
                 "device": "cpu", "workers": 0},
        "methods": ["classname",
                    {"method": "maple", "shots": [1, 2], "epochs": 1, "depth": 2, "train": train},
                    {"method": "plot", "shots": 1, "epochs": 1, "n_ctx": 2, "train": train},
                    {"method": "vpt", "shots": 1, "epochs": 1, "depth": 1, "train": train}]}))
    out = world["tmp"] / "results"
    args = ["sweep", str(spec), "--out", str(out), "--cache-dir", str(world["cache"])]
    assert main(args) == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in rows) == sorted([
        "classname", "maple (depth=2, epochs=1, shots=1)", "maple (depth=2, epochs=1, shots=2)",
        "plot (epochs=1, n_ctx=2, shots=1)", "vpt (depth=1, epochs=1, shots=1)"])
    assert main(args) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 5
    assert main(["report", str(out)]) == 0
    assert "maple (depth=2, epochs=1, shots=2)" in (out / "report.md").read_text()
