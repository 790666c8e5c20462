"""The learned methods as data: each method's options and the reference recipe it defaults to
(a registry, like the scoring methods')."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_yaml, validation_message
from descriptor_gen.limits import MAX_BATCH, MAX_EPOCHS, MAX_SEED, MAX_SHOTS, MAX_VIEWS
from descriptor_gen.paths import PROJECT_ROOT


class FewShotOptions(Model):
    """What every learned method takes. `epochs`, `batch_size`, `lr` left out take the
    method's reference recipe; `views`: augmented views of each shot encoded once and cached
    (1: the plain image, no augmentation)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    shots: int = Field(default=16, ge=1, le=MAX_SHOTS)
    seed: int = Field(default=1, ge=0, le=MAX_SEED)
    epochs: int | None = Field(default=None, ge=0, le=MAX_EPOCHS)
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    lr: float | None = Field(default=None, gt=0)
    views: int = Field(default=1, ge=1, le=MAX_VIEWS)

    def seeds(self) -> list[int | None]:
        return [None]


MAX_CTX = 74  # CLIP's 77 text tokens less start, end and one token of a class name


class CoOpOptions(FewShotOptions):
    n_ctx: int = Field(default=16, ge=1, le=MAX_CTX)
    ctx_init: str | None = None
    csc: bool = False
    position: Literal["end", "middle", "front"] = "end"


class KgCoOpOptions(CoOpOptions):
    """`guide`: the fixed classifier the learned one is kept near: `descriptors` (this
    project's descriptor classifier: needs a store) or `classname` (KgCoOp's own: the class
    name in KgCoOp's CUSTOM_TEMPLATES entry of the dataset's card, "a photo of a {}." for other
    sources); `weight`: KgCoOp's w (8.0)."""

    ctx_init: str | None = "a photo of a"
    guide: Literal["descriptors", "classname"] = "descriptors"
    weight: float = Field(default=8.0, ge=0)


class CoCoOpOptions(FewShotOptions):
    n_ctx: int = Field(default=4, ge=1, le=MAX_CTX)
    ctx_init: str | None = "a photo of a"


class PaddingOptions(FewShotOptions):
    """`pad`: border width in pixels (their 30 at 224 px); `classifier`: the fixed text side,
    `classname` ("This is a photo of a {c}", theirs) or `descriptors` (needs a store)."""

    pad: int = Field(default=30, ge=1)
    classifier: Literal["classname", "descriptors"] = "classname"
    warmup: int = Field(default=1000, ge=0, le=MAX_EPOCHS * 1000)


class PlotOptions(FewShotOptions):
    """PLOT's defaults (its train.py and scripts/main.sh): `n_prompts` N = 4 prompts of
    `n_ctx` 16 random context tokens; `global_logits`: add the pooled image-to-mean-prompt
    score (None: theirs, on ImageNet only)."""

    n_prompts: int = Field(default=4, ge=1, le=64)
    n_ctx: int = Field(default=16, ge=1, le=MAX_CTX)
    global_logits: bool | None = None


MAX_DEPTH = 48  # prompt depths beyond the model's layers are refused when it is built
MAX_VISION_CTX = 256


class VptOptions(FewShotOptions):
    """`n_ctx`: prompt tokens per layer; `depth`: layers that get their own (1: VPT-shallow,
    the input only; 12: VPT-deep on ViT-B). Defaults: their vit_b16_c2_ep5_batch4_4 config."""

    n_ctx: int = Field(default=8, ge=1, le=MAX_VISION_CTX)
    depth: int = Field(default=12, ge=1, le=MAX_DEPTH)


class IvlpOptions(FewShotOptions):
    """Their vit_b16_c2_ep5_batch4_2+2ctx config: 2 text and 2 vision tokens, depth 12 in both
    (`depth_vision` 0: language prompts only, their 4ctx_language_only config)."""

    n_ctx_text: int = Field(default=2, ge=1, le=MAX_CTX)
    n_ctx_vision: int = Field(default=2, ge=1, le=MAX_VISION_CTX)
    depth_text: int = Field(default=12, ge=1, le=MAX_DEPTH)
    depth_vision: int = Field(default=12, ge=0, le=MAX_DEPTH)
    ctx_init: str | None = "a photo of a"


class MapleOptions(FewShotOptions):
    """Their vit_b16_c2_ep5_batch4_2ctx config: 2 context tokens, prompts in the first 9
    layers of both towers."""

    n_ctx: int = Field(default=2, ge=1, le=MAX_CTX)
    depth: int = Field(default=9, ge=1, le=MAX_DEPTH)
    ctx_init: str | None = "a photo of a"
    guide: Literal["none", "descriptors", "classname"] = "none"
    weight: float = Field(default=8.0, ge=0)


class TipOptions(FewShotOptions):
    """α and β of the cache model (None: Tip-Adapter's configs for the dataset)."""

    alpha: float | None = None
    beta: float | None = None


@dataclass(frozen=True)
class Recipe:
    """A reference's training recipe: optimiser, its settings and the schedule (names in
    learn/train.py's OPTIMISERS and SCHEDULES); `drop_last`: a last partial batch is dropped
    (dassl's train loader)."""

    optimiser: Literal["sgd", "adamw", "none"]
    lr: float
    batch_size: int
    epochs: Callable[[int, str], int]
    schedule: Literal["coop", "cosine-steps", "warmup-cosine-steps", "none"]
    source: str
    weight_decay: float = 5e-4
    drop_last: bool = False
    augment: Literal["none", "dassl"] = "none"


def coop_epochs(shots: int, dataset: str) -> int:
    """CoOp's COOP.md: 50 epochs for 1 shot, 100 for 2 and 4, 200 for 8 and 16 (ImageNet: 50)."""
    if dataset.partition(":")[0] == "imagenet1k" or shots <= 1:
        return 50
    return 100 if shots <= 4 else 200


def tip_settings(dataset: str, prompts_dir: Path) -> dict[str, Any]:
    """Tip-Adapter's configs for a dataset spec (`prompts/learn/tip_adapter.yaml`, by card)."""
    path = prompts_dir / "learn" / "tip_adapter.yaml"
    data = read_yaml(path, "Tip-Adapter settings")
    if not isinstance(data, dict) or "default" not in data:
        raise DescgenError(f"{path}: expected per-dataset settings")
    return dict(data.get(dataset.partition(":")[0], data["default"]))


def tip_epochs(shots: int, dataset: str) -> int:
    """Tip-Adapter-F's epochs: its config's train_epoch for the dataset."""
    return int(tip_settings(dataset, PROJECT_ROOT / "prompts")["epochs"])


@dataclass(frozen=True)
class LearnedDef:
    """One learned method.

    Attributes:
        builder: its function in `learn/builders.py` (imported when a run is built: the
            registry itself imports no torch).
        tensors: the tensors a finished run must hold beside the learned parameters.
        pixels: it learns on the images' pixels (a border), so its shots and the evaluated
            images are encoded through it, not read from the feature caches.
        transfers: what it learned holds for any class list (CoCoOp's base-to-new protocol):
            a run scores other classes with its module rebuilt for them.
        class_tensors: tensors made from the class names, rebuilt for other classes.
        local: it scores the images' local features (every token, not only the pooled one):
            its shots' local features are cached, the evaluated images encoded through it.
    """

    options: type[FewShotOptions]
    recipe: Recipe
    summary: str
    builder: str
    needs_descriptors: Callable[[Any], bool] = lambda _: False
    tensors: tuple[str, ...] = ()
    pixels: bool = False
    transfers: Callable[[Any], bool] = lambda _: True
    class_tensors: tuple[str, ...] = ()
    local: bool = False

    def build(self, inputs: Any) -> Any:
        """The method's module (a `Learner`) from `builders.BuildInputs`."""
        builders = importlib.import_module("descriptor_gen.learn.builders")
        return getattr(builders, self.builder)(inputs)

    def parse(self, raw: dict[str, Any]) -> Any:
        try:
            return self.options.model_validate(raw)
        except ValidationError as exc:
            raise DescgenError(f"method option {validation_message(exc)}") from exc


def _shared_context(options: Any) -> bool:
    return not options.csc  # class-specific contexts exist only for the trained classes


_SGD_COOP = "CoOp configs: SGD lr 0.002 (momentum 0.9, weight decay 5e-4), batch 32, cosine, 1 warm-up epoch at 1e-5"
_MPL = ("multimodal-prompt-learning {}: SGD lr {} (momentum 0.9, weight decay 5e-4), batch 4,"
        " 5 epochs, cosine, 1 warm-up epoch at 1e-5; random resized crop and flip")
_MPL_VPT = _MPL.format("VPT/vit_b16_c2_ep5_batch4_4", 0.0025)
_MPL_IVLP = _MPL.format("IVLP/vit_b16_c2_ep5_batch4_2+2ctx", 0.0035)
_MPL_MAPLE = _MPL.format("MaPLe/vit_b16_c2_ep5_batch4_2ctx", 0.0035)
_TIP_TENSORS = ("keys", "values", "zero_shot")
LEARNED: dict[str, LearnedDef] = {
    "coop": LearnedDef(CoOpOptions, Recipe("sgd", 0.002, 32, coop_epochs, "coop", _SGD_COOP,
                                           drop_last=True),
                       "CoOp: learned context vectors (Zhou et al., IJCV 2022)", "build_coop",
                       transfers=_shared_context),
    "kgcoop": LearnedDef(KgCoOpOptions, Recipe("sgd", 0.002, 128, lambda k, d: 100, "coop",
                                               "KgCoOp configs: as CoOp, batch 128, 100 epochs",
                                               drop_last=True),
                         "CoOp kept near the descriptor classifier (KgCoOp-style)",
                         "build_kgcoop", lambda o: o.guide == "descriptors",
                         transfers=_shared_context),
    "cocoop": LearnedDef(CoCoOpOptions, Recipe("sgd", 0.002, 1, lambda k, d: 10, "coop",
                                               "CoCoOp configs: as CoOp, batch 1, 10 epochs",
                                               drop_last=True),
                         "CoCoOp: context shifted per image (Zhou et al., CVPR 2022)",
                         "build_cocoop"),
    "padding": LearnedDef(PaddingOptions, Recipe("sgd", 40.0, 256, lambda k, d: 1000,
                                                 "warmup-cosine-steps",
                                                 "visual_prompting main_clip.py: SGD lr 40, momentum 0.9, batch 256,"
                                                 " 1000 epochs, 1000 warm-up steps, cosine",
                                                 weight_decay=0.0),
                          "a learned pixel border (Bahng et al., 2022)", "build_padding",
                          lambda o: o.classifier == "descriptors", ("classifier",), pixels=True,
                          transfers=lambda o: o.classifier == "classname",
                          class_tensors=("classifier",)),
    "plot": LearnedDef(PlotOptions, Recipe("sgd", 0.002, 128, lambda k, d: 50, "coop",
                                           "PLOT configs/trainers/PLOT/rn50.yaml: SGD lr 0.002,"
                                           " batch 128, 50 epochs, cosine, 1 warm-up epoch at 1e-5",
                                           drop_last=True),
                       "PLOT: a group of prompts matched to local features by optimal transport"
                       " (Chen et al., ICLR 2023)", "build_plot", local=True),
    "vpt": LearnedDef(VptOptions, Recipe("sgd", 0.0025, 4, lambda k, d: 5, "coop", _MPL_VPT,
                                         drop_last=True, augment="dassl"),
                      "VPT: prompt tokens in the image tower (Jia et al., ECCV 2022)",
                      "build_vpt", tensors=("classifier",), pixels=True,
                      class_tensors=("classifier",)),
    "ivlp": LearnedDef(IvlpOptions, Recipe("sgd", 0.0035, 4, lambda k, d: 5, "coop", _MPL_IVLP,
                                           drop_last=True, augment="dassl"),
                       "IVLP: independent prompts in both towers (decoupled)", "build_ivlp",
                       pixels=True),
    "maple": LearnedDef(MapleOptions, Recipe("sgd", 0.0035, 4, lambda k, d: 5, "coop", _MPL_MAPLE,
                                             drop_last=True, augment="dassl"),
                        "MaPLe: vision prompts projected from language prompts (Khattak et al.,"
                        " CVPR 2023)", "build_maple", lambda o: o.guide == "descriptors",
                        pixels=True),
    "tip-adapter": LearnedDef(TipOptions, Recipe("none", 0.0, 256, lambda k, d: 0, "none",
                                                 "Tip-Adapter: training-free"),
                              "Tip-Adapter: a cache model over the shots (Zhang et al., ECCV 2022)",
                              "build_tip_adapter", tensors=_TIP_TENSORS,
                              transfers=lambda _: False),
    "tip-adapter-f": LearnedDef(TipOptions, Recipe("adamw", 0.001, 256, tip_epochs,
                                                   "cosine-steps",
                                                   "Tip-Adapter configs: AdamW lr 0.001 (eps 1e-4),"
                                                   " batch 256, train_epoch (20; EuroSAT 100),"
                                                   " cosine by step"),
                                "Tip-Adapter-F: the cache keys fine-tuned", "build_tip_adapter_f",
                                tensors=_TIP_TENSORS, transfers=lambda _: False),
}


def learned(name: str) -> LearnedDef:
    if name not in LEARNED:
        raise DescgenError(f"unknown learned method {name!r} (choose {', '.join(LEARNED)})")
    return LEARNED[name]
