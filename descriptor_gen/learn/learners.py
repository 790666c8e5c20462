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

Every learner except `padding` scores from image features, so training runs on the cached
features of the shots (the frozen image encoder never runs twice on an image).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from descriptor_gen.learn.prompts import MetaNet, PromptLearner, encode_embedded, text_tower
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


class Padding(Learner):
    uses_images = True

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

    def image_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(self.encode(images))
        return F.cross_entropy(logits, labels), logits
