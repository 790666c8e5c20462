"""How each learned method's module is built from a run's settings: one function per method,
named in its `LEARNED` entry (learn/methods.py), so a new method is one entry and its builder.

Training: the fixed parts (classifiers, KgCoOp's guide, the Tip-Adapter cache from the shots'
features) are built here. Scoring a finished run (`saved`: its tensors): they come from the
run, so nothing else (a descriptor store) is needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from descriptor_gen.data.cards import coop_template
from descriptor_gen.data.subsample import subsample_records
from descriptor_gen.describe.store import check_against_classes, read_store
from descriptor_gen.errors import DescgenError
from descriptor_gen.learn.learners import CoCoOp, CoOp, Ivlp, Learner, Maple, Padding, Plot, TipAdapter, Vpt
from descriptor_gen.learn.methods import tip_settings
from descriptor_gen.paths import TEXT_FEATURES
from descriptor_gen.score.features import ClipModel, TextFeatureCache, image_size
from descriptor_gen.score.scoring import TextForms, make_recipe

PADDING_TEMPLATE = "This is a photo of a {}"  # visual_prompting main_clip.py


@dataclass
class BuildInputs:
    """What a builder may use: the run's method, options, classes and dataset; the CLIP; the
    shots' features and labels (training); the run's tensors (scoring)."""

    method: str
    options: Any
    classes: list[str]
    dataset: str
    store: Path | None
    clip: ClipModel
    cache_dir: Path
    prompts_dir: Path
    features: np.ndarray | None = None
    labels: list[int] | None = None
    saved: dict[str, torch.Tensor] | None = None
    store_half: tuple[str, int] | None = None  # (subsample, class count) of a store over all


def descriptor_classifier(clip: ClipModel, classes: list[str], store: Path, cache_dir: Path,
                          prompts_dir: Path, half: tuple[str, int] | None = None) -> torch.Tensor:
    """The zero-shot descriptor classifier as a direction per class: the renormalised mean of
    the class's descriptor texts (DCLIP's form; the class-name text for a class without).
    `half`: the store covers all `class_count` classes; `classes` are one half of them."""
    records = read_store(store)
    if half is not None:
        records = subsample_records(records, half[1], half[0])
    check_against_classes(records, classes, store)
    recipe = make_recipe(TextForms.load(prompts_dir))
    own = {r.class_index: r.descriptors for r in records}
    texts = [[recipe.descriptor(c, d) for d in own.get(i) or []] or [recipe.classname(c)]
             for i, c in enumerate(classes)]
    return mean_directions(clip, texts, cache_dir)


def mean_directions(clip: ClipModel, texts: list[list[str]], cache_dir: Path) -> torch.Tensor:
    """Per group of texts, the renormalised mean of their normalised features."""
    cache = TextFeatureCache(cache_dir / TEXT_FEATURES)
    flat = [t for group in texts for t in group]
    feats, _ = cache.features(clip, flat)
    out, start = [], 0
    for group in texts:
        mean = feats[start : start + len(group)].astype(np.float32).mean(axis=0)
        out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        start += len(group)
    return torch.from_numpy(np.stack(out)).to(clip.device)


def _descriptors(b: BuildInputs) -> torch.Tensor:
    assert b.store is not None  # the entry's needs_descriptors made sure
    return descriptor_classifier(b.clip, b.classes, b.store, b.cache_dir, b.prompts_dir,
                                 b.store_half)


def build_coop(b: BuildInputs) -> Learner:
    o = b.options
    return CoOp(b.clip, b.classes, o.n_ctx, o.ctx_init, o.csc, o.position, o.seed, None, 0.0)


def _guide(b: BuildInputs, kind: str) -> torch.Tensor:
    """A fixed classifier to keep learned text near: the descriptor classifier, or KgCoOp's
    own `temp.format(c.replace("_", " "))` with the dataset's CUSTOM_TEMPLATES entry."""
    if kind == "descriptors":
        return _descriptors(b)
    template = coop_template(b.dataset)
    return mean_directions(b.clip, [[template.format(c.replace("_", " "))] for c in b.classes],
                           b.cache_dir)


def build_kgcoop(b: BuildInputs) -> Learner:
    """CoOp kept near a fixed guide (`_guide`)."""
    o = b.options
    guide, weight = None, 0.0
    if b.saved is None:
        guide, weight = _guide(b, o.guide), o.weight
    return CoOp(b.clip, b.classes, o.n_ctx, o.ctx_init, o.csc, o.position, o.seed, guide, weight)


def build_cocoop(b: BuildInputs) -> Learner:
    model = b.clip.model
    width = (int(model.text_projection.shape[1]) if model.text_projection is not None
             else int(model.ln_final.weight.shape[0]))
    return CoCoOp(b.clip, b.classes, b.options.n_ctx, b.options.ctx_init, b.options.seed, width)


def build_padding(b: BuildInputs) -> Learner:
    o = b.options
    if b.saved is not None and "classifier" in b.saved:
        classifier = b.saved["classifier"].to(b.clip.device)
    elif o.classifier == "descriptors":
        classifier = _descriptors(b)
    else:
        classifier = mean_directions(b.clip, [[PADDING_TEMPLATE.format(c)] for c in b.classes],
                                     b.cache_dir)
    size = image_size(b.clip.preprocess)
    if 2 * o.pad >= size:
        raise DescgenError(f"padding: pad {o.pad} leaves nothing of a {size} px image")
    return Padding(b.clip, classifier, size, o.pad, o.seed)


VPT_TEMPLATE = "a photo of a {}."  # multimodal-prompt-learning trainers/vpt.py FixedEmbeddings


def build_vpt(b: BuildInputs) -> Learner:
    """VPT against their fixed classifier: "a photo of a {c}." with `_` as a space."""
    if b.saved is not None and "classifier" in b.saved:
        classifier = b.saved["classifier"].to(b.clip.device)
    else:
        classifier = mean_directions(b.clip, [[VPT_TEMPLATE.format(c.replace("_", " "))]
                                              for c in b.classes], b.cache_dir)
    return Vpt(b.clip, classifier, b.options.n_ctx, b.options.depth, b.options.seed)


def build_ivlp(b: BuildInputs) -> Learner:
    o = b.options
    return Ivlp(b.clip, b.classes, o.n_ctx_text, o.n_ctx_vision, o.depth_text, o.depth_vision,
                o.ctx_init, o.seed)


def build_maple(b: BuildInputs) -> Learner:
    o = b.options
    learner = Maple(b.clip, b.classes, o.n_ctx, o.depth, o.ctx_init, o.seed)
    if b.saved is None and o.guide != "none":
        learner.guide_with(_guide(b, o.guide), o.weight)
    return learner


def build_plot(b: BuildInputs) -> Learner:
    """PLOT; the global score added on ImageNet only unless `global_logits` says (theirs:
    `if self.dataset == "ImageNet"`)."""
    o = b.options
    on_imagenet = b.dataset.partition(":")[0] == "imagenet1k"
    return Plot(b.clip, b.classes, o.n_prompts, o.n_ctx, o.seed,
                on_imagenet if o.global_logits is None else o.global_logits)


def _tip(b: BuildInputs, fine_tune: bool) -> Learner:
    o = b.options
    settings = tip_settings(b.dataset, b.prompts_dir)
    alpha = o.alpha if o.alpha is not None else float(settings["alpha"])
    beta = o.beta if o.beta is not None else float(settings["beta"])
    if b.saved is not None:
        zero_shot, keys = b.saved["zero_shot"], b.saved["keys"]
        labels = b.saved["values"].argmax(dim=1)
    else:
        zero_shot = mean_directions(b.clip, [[t.format(c) for t in settings["templates"]]
                                             for c in b.classes], b.cache_dir)
        assert b.features is not None and b.labels is not None
        keys = torch.from_numpy(b.features.mean(axis=0))
        labels = torch.tensor(b.labels, dtype=torch.long)
    device = b.clip.device
    return TipAdapter(keys.to(device), labels.to(device), len(b.classes), zero_shot.to(device),
                      alpha, beta, fine_tune)


def build_tip_adapter(b: BuildInputs) -> Learner:
    return _tip(b, fine_tune=False)


def build_tip_adapter_f(b: BuildInputs) -> Learner:
    return _tip(b, fine_tune=True)
