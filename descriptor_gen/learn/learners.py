"""The learned methods: what each trains and how it scores an image.

- `coop`: CoOp (Zhou et al., IJCV 2022): context vectors before the class name.
- `kgcoop`: CoOp kept near a fixed classifier (KgCoOp, Yao et al. CVPR 2023: loss + w·(1 −
  mean cos(learned, fixed))); here the fixed classifier is this project's descriptor classifier
  (or the class-name text, KgCoOp's own).
- `cocoop`: CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted per image by a meta-network.
- `padding`: visual prompt padding (Bahng et al., 2022): a learned pixel border added to every
  input image, against a fixed text classifier.
- `tip-adapter`: Tip-Adapter (Zhang et al., ECCV 2022), the training-free cache model over the
  K-shot features; `tip-adapter-f` fine-tunes the cache keys.
- `plot`: PLOT (Chen et al., ICLR 2023), a group of CoOp contexts matched to an image's local
  features by optimal transport (the survey's group-specific soft prompt).
- `vpt`, `ivlp`, `maple`: prompts inside the image tower (VPT, Jia et al. ECCV 2022), inside
  both towers independently (IVLP) or coupled through projections (MaPLe, Khattak et al. CVPR
  2023), as the multimodal-prompt-learning repository builds them.

Every learner except `padding`, `vpt`, `ivlp` and `maple` scores from image features, so training runs on the cached
features of the shots (the frozen image encoder never runs twice on an image).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from descriptor_gen.learn.deep import (
    as_layers,
    check_depth,
    encode_image_local,
    encode_image_prompted,
    encode_text_prompted,
    prompt_list,
    text_layers,
    vision_layers,
)
from descriptor_gen.learn.prompts import MetaNet, PromptLearner, encode_embedded, text_tower
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.features import ClipModel


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def logit_scale(clip: ClipModel) -> float:
    return float(clip.model.logit_scale.exp().item())


class Learner(nn.Module):
    """`logits(features)` for normalised image features; `loss` adds a method's own term."""

    uses_images = False

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(features)
        return F.cross_entropy(logits, labels), logits


class CoOp(Learner):
    def __init__(self, clip: ClipModel, classes: list[str], n_ctx: int, ctx_init: str | None,
                 csc: bool, position: str, seed: int, guide: torch.Tensor | None = None,
                 weight: float = 0.0) -> None:
        super().__init__()
        self.model = [text_tower(clip)]  # a list: the frozen CLIP is not a submodule to save
        self.prompt = PromptLearner(clip, classes, n_ctx, ctx_init, csc, position, seed)
        self.scale = logit_scale(clip)
        self.register_buffer("guide", guide if guide is not None else torch.zeros(0), persistent=False)
        self.weight = weight

    def text_features(self) -> torch.Tensor:
        return _normalise(encode_embedded(self.model[0], self.prompt(), self.prompt.tokens).float())

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * features @ self.text_features().t()

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.text_features()
        logits = self.scale * features @ text.t()
        loss = F.cross_entropy(logits, labels)
        if self.weight and len(self.guide):
            loss = loss + self.weight * (1.0 - F.cosine_similarity(text, self.guide, dim=1).mean())
        return loss, logits


class CoCoOp(Learner):
    def __init__(self, clip: ClipModel, classes: list[str], n_ctx: int, ctx_init: str | None,
                 seed: int, vis_dim: int) -> None:
        super().__init__()
        self.model = [text_tower(clip)]
        self.prompt = PromptLearner(clip, classes, n_ctx, ctx_init, False, "end", seed)
        torch.manual_seed(seed)
        self.meta = MetaNet(vis_dim, self.prompt.ctx.shape[-1]).to(self.prompt.ctx.device)
        self.scale = logit_scale(clip)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        rows = []
        for feature, prompts in zip(features, self.prompt(self.meta(features))):
            text = _normalise(encode_embedded(self.model[0], prompts, self.prompt.tokens).float())
            rows.append(self.scale * feature @ text.t())
        return torch.stack(rows)


class TipAdapter(Learner):
    """logits = 100 · f·W + α · exp(−β (1 − f·keys)) · one-hot values (their formula, with CLIP's
    100 for the zero-shot part); `fine_tune` makes the keys a parameter (Tip-Adapter-F)."""

    def __init__(self, keys: torch.Tensor, labels: torch.Tensor, n_classes: int,
                 zero_shot: torch.Tensor, alpha: float, beta: float, fine_tune: bool) -> None:
        super().__init__()
        keys = _normalise(keys.float())
        self.keys = nn.Parameter(keys, requires_grad=fine_tune)
        self.register_buffer("values", F.one_hot(labels, n_classes).float())
        self.register_buffer("zero_shot", zero_shot.float())
        self.alpha, self.beta = alpha, beta

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        affinity = features @ self.keys.t()
        cache = torch.exp(-(self.beta - self.beta * affinity)) @ self.values
        return 100.0 * features @ self.zero_shot.t() + self.alpha * cache


class PadPrompter(nn.Module):
    """A learned border of `pad` pixels on each side, added to the normalised image (their
    `PadPrompter`, initialised N(0, 1))."""

    def __init__(self, size: int, pad: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        inner = size - 2 * pad
        self.pad_up = nn.Parameter(torch.randn(1, 3, pad, size, generator=generator))
        self.pad_down = nn.Parameter(torch.randn(1, 3, pad, size, generator=generator))
        self.pad_left = nn.Parameter(torch.randn(1, 3, inner, pad, generator=generator))
        self.pad_right = nn.Parameter(torch.randn(1, 3, inner, pad, generator=generator))
        self.inner = inner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        base = torch.zeros(1, 3, self.inner, self.inner, device=images.device)
        prompt = torch.cat([self.pad_left, base, self.pad_right], dim=3)
        prompt = torch.cat([self.pad_up, prompt, self.pad_down], dim=2)
        return images + prompt


class ImageLearner(Learner):
    """A learner that runs the image tower itself (a border on its pixels, prompts inside
    it): trained and scored on pixels, never on cached features."""

    uses_images = True

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(self.encode(images))
        return F.cross_entropy(logits, labels), logits


class Padding(ImageLearner):
    def __init__(self, clip: ClipModel, classifier: torch.Tensor, size: int, pad: int,
                 seed: int) -> None:
        super().__init__()
        self.model = [clip.model]
        self.prompter = PadPrompter(size, pad, seed).to(classifier.device)
        self.register_buffer("classifier", classifier.float())
        self.scale = logit_scale(clip)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return _normalise(self.model[0].encode_image(self.prompter(images)).float())

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * features @ self.classifier.t()


class Vpt(ImageLearner):
    """VPT as the multimodal-prompt-learning repository trains it (trainers/vpt.py): prompt
    tokens in the image tower (`depth` 1: shallow, at the input only; more: deep, one set per
    layer up to `depth`), against the fixed "a photo of a {c}." classifier."""

    def __init__(self, clip: ClipModel, classifier: torch.Tensor, n_ctx: int, depth: int,
                 seed: int) -> None:
        super().__init__()
        self.model = [clip.model]
        layers, width = vision_layers(clip.model)
        check_depth(depth, layers, "image")
        generator = torch.Generator().manual_seed(seed)
        self.vision = prompt_list(depth, n_ctx, width, generator).to(classifier.device)
        self.register_buffer("classifier", classifier.float())
        self.scale = logit_scale(clip)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        deep = as_layers(self.vision[0], list(self.vision[1:]))
        return _normalise(encode_image_prompted(self.model[0], images, self.vision[0], deep).float())

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * features @ self.classifier.t()


class _TextPrompted(ImageLearner):
    """Learned text prompts whose features are made once per scoring pass (not per batch)."""

    _memo: torch.Tensor | None = None

    def make_text(self) -> torch.Tensor:
        raise NotImplementedError

    def text_features(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            self._memo = None
            return self.make_text()
        if self._memo is None:
            self._memo = self.make_text()
        return self._memo

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * features @ self.text_features().t()

    def guide_with(self, guide: torch.Tensor | None, weight: float) -> None:
        """KgCoOp's term on the text features: loss + w·(1 − mean cos(text, guide))."""
        self.register_buffer("guide", guide if guide is not None else torch.zeros(0), persistent=False)
        self.weight = weight

    def image_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.text_features()
        logits = self.scale * self.encode(images) @ text.t()
        loss = F.cross_entropy(logits, labels)
        guide = getattr(self, "guide", None)
        if guide is not None and len(guide) and self.weight:
            loss = loss + self.weight * (1.0 - F.cosine_similarity(text, guide, dim=1).mean())
        return loss, logits


class Ivlp(_TextPrompted):
    """Independent vision-language prompting (trainers/independentVL.py): CoOp's context with
    MaPLe's initialisation and a learned prompt per text layer up to `depth_text`, and VPT's
    prompts in the image tower up to `depth_vision`; neither branch sees the other's."""

    def __init__(self, clip: ClipModel, classes: list[str], n_ctx_text: int, n_ctx_vision: int,
                 depth_text: int, depth_vision: int, ctx_init: str | None, seed: int) -> None:
        super().__init__()
        self.model = [text_tower(clip)]
        t_layers, t_width = text_layers(clip.model)
        v_layers, v_width = vision_layers(clip.model)
        check_depth(depth_text, t_layers, "text")
        check_depth(depth_vision, v_layers, "image")
        self.prompt = PromptLearner(clip, classes, n_ctx_text, ctx_init, False, "end", seed,
                                    first_tokens=True)
        device = self.prompt.ctx.device
        generator = torch.Generator().manual_seed(seed + 1)
        self.text_deep = prompt_list(depth_text - 1, self.prompt.n_ctx, t_width, generator).to(device)
        self.vision = prompt_list(depth_vision, n_ctx_vision, v_width, generator).to(device)
        self.scale = logit_scale(clip)

    def make_text(self) -> torch.Tensor:
        deep = as_layers(self.prompt.ctx, list(self.text_deep))
        return _normalise(encode_text_prompted(self.model[0], self.prompt(), self.prompt.tokens,
                                               deep).float())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        first = self.vision[0] if len(self.vision) else None
        deep = as_layers(first, list(self.vision[1:]))
        return _normalise(encode_image_prompted(self.model[0], images, first, deep).float())


class Maple(_TextPrompted):
    """MaPLe (trainers/maple.py): the text context and one learned text prompt per layer up to
    `depth` (its compound prompts); the image tower's prompts are linear projections of them
    (`proj` for the first layer's, one projection per later layer, all cloned from one initial
    layer as their `_get_clones`), so both branches learn from shared parameters."""

    def __init__(self, clip: ClipModel, classes: list[str], n_ctx: int, depth: int,
                 ctx_init: str | None, seed: int) -> None:
        super().__init__()
        self.model = [text_tower(clip)]
        t_layers, t_width = text_layers(clip.model)
        v_layers, v_width = vision_layers(clip.model)
        check_depth(depth, min(t_layers, v_layers), "shallower")
        self.prompt = PromptLearner(clip, classes, n_ctx, ctx_init, False, "end", seed,
                                    first_tokens=True)
        device = self.prompt.ctx.device
        torch.manual_seed(seed)  # nn.Linear's own initialisation draws from the global generator
        self.proj = nn.Linear(t_width, v_width).to(device)
        generator = torch.Generator().manual_seed(seed + 1)
        self.compound = prompt_list(depth - 1, self.prompt.n_ctx, t_width, generator).to(device)
        single = nn.Linear(t_width, v_width)
        self.compound_proj = nn.ModuleList([copy.deepcopy(single) for _ in range(depth - 1)]).to(device)
        self.scale = logit_scale(clip)

    def make_text(self) -> torch.Tensor:
        deep = as_layers(self.prompt.ctx, list(self.compound))
        return _normalise(encode_text_prompted(self.model[0], self.prompt(), self.prompt.tokens,
                                               deep).float())

    def vision_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        first = self.proj(self.prompt.ctx)
        later = [layer(p) for layer, p in zip(self.compound_proj, self.compound)]
        return first, as_layers(first, later)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        first, deep = self.vision_prompts()
        return _normalise(encode_image_prompted(self.model[0], images, first, deep).float())


class Plot(Learner):
    """PLOT (Chen et al., ICLR 2023; CHENGY12/PLOT plot-coop/trainers/plot.py): a group of
    `n_prompts` CoOp contexts learned together; a class's score is the optimal-transport
    similarity between the image's local features and the class's prompt features (Sinkhorn,
    eps 0.1, uniform marginals), the plan computed without gradient; on ImageNet the global
    score (pooled image feature against the mean prompt feature) is added, as theirs."""

    def __init__(self, clip: ClipModel, classes: list[str], n_prompts: int, n_ctx: int,
                 seed: int, global_logits: bool) -> None:
        super().__init__()
        self.model = [text_tower(clip)]
        self.prompt = PromptLearner(clip, classes, n_ctx, None, False, "end", seed)
        width = self.prompt.ctx.shape[-1]
        generator = torch.Generator().manual_seed(seed)
        self.prompt.ctx = nn.Parameter(torch.empty(n_prompts, n_ctx, width).normal_(
            0, 0.02, generator=generator).to(self.prompt.ctx.device))
        self.n_prompts, self.global_logits = n_prompts, global_logits
        self.scale = logit_scale(clip)

    def text_features(self) -> torch.Tensor:
        """(N, C, D) unnormalised: every prompt of the group for every class, encoded at once
        (the global score pools them before normalising, as theirs)."""
        classes = self.prompt.tokens.shape[0]
        prompts = torch.cat([self.prompt.assemble(ctx.unsqueeze(0).expand(classes, -1, -1))
                             for ctx in self.prompt.ctx])
        tokens = self.prompt.tokens.repeat(self.n_prompts, 1)
        text = encode_embedded(self.model[0], prompts, tokens).float()
        return text.view(self.n_prompts, classes, -1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image_local(self.model[0], images).float()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """`features`: (B, 1 + M, D), the pooled feature first, then the local ones."""
        pool = _normalise(features[:, 0])
        local = _normalise(features[:, 1:]).permute(1, 0, 2)  # (M, B, D)
        raw = self.text_features()
        text = _normalise(raw)
        m, b, c = local.shape[0], local.shape[1], text.shape[1]
        sim = torch.einsum("mbd,ncd->mnbc", local, text).contiguous()
        sim = sim.view(m, self.n_prompts, b * c).permute(2, 0, 1)
        with torch.no_grad():
            plan = sinkhorn(torch.exp(-(1.0 - sim) / PLOT_EPS),
                            torch.full((b * c, m), 1.0 / m, device=sim.device, dtype=sim.dtype),
                            torch.full((b * c, self.n_prompts), 1.0 / self.n_prompts,
                                       device=sim.device, dtype=sim.dtype))
        if torch.isnan(plan).any():
            raise DescgenError("PLOT: the transport plan has NaN values (their trainer skips"
                               " such a batch); lower the learning rate")
        logits = self.scale * torch.sum(plan * sim, dim=(1, 2)).view(b, c)
        if self.global_logits:
            logits = logits + self.scale * pool @ _normalise(raw.mean(dim=0)).t()
        return logits


PLOT_EPS, PLOT_ITERATIONS, PLOT_THRESHOLD = 0.1, 100, 1e-2


def sinkhorn(kernel: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PLOT's `Sinkhorn`: at most 100 rounds, stopping when the mean change of the row scaling
    over the whole batch is below 1e-2 (so a plan depends slightly on its batch, as theirs)."""
    r, c = torch.ones_like(u), torch.ones_like(v)
    for _ in range(PLOT_ITERATIONS):
        r0 = r
        r = u / torch.matmul(kernel, c.unsqueeze(-1)).squeeze(-1)
        c = v / torch.matmul(kernel.permute(0, 2, 1).contiguous(), r.unsqueeze(-1)).squeeze(-1)
        if (r - r0).abs().mean().item() < PLOT_THRESHOLD:
            break
    return torch.matmul(r.unsqueeze(-1), c.unsqueeze(-2)) * kernel
