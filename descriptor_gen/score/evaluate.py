"""`descgen eval`: a dataset, a class list and descriptors -> metrics, predictions, explanations."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from descriptor_gen.data.datasets import load_dataset
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import sha256_file
from descriptor_gen.score.features import ClipModel, ImageFeatureCache, TextFeatureCache, encode_images, load_clip
from descriptor_gen.score.scoring import (
    AUTO,
    METHODS,
    NEEDS_DESCRIPTORS,
    ClassTexts,
    OnEmpty,
    TextForms,
    TextRecipe,
    check_template,
    class_texts,
    class_vectors,
    explain,
    is_form_name,
    make_recipe,
    metrics,
    scores,
    topk,
)
from descriptor_gen.describe.store import DescriptorRecord, check_against_classes, read_store


UNREADABLE_WARNING = 0.01  # above this share of unreadable images, a summary warning


class TextOptions(BaseModel):
    """How texts are made: the descriptor and class-name forms (names in
    `prompts/text_forms.yaml` or templates), the pooling of descriptor embeddings, and what a
    class without descriptors is scored by. `auto` follows the store: CuPL imports are
    sentences with a renormalised mean, everything else DCLIP's form with a plain mean."""

    model_config = ConfigDict(extra="forbid")

    descriptor_template: str = AUTO
    classname_template: str = "clip"
    pooling: Literal["auto", "mean", "renormalised"] = AUTO
    on_empty: OnEmpty = "classname"

    @field_validator("descriptor_template", "classname_template")
    @classmethod
    def _template_or_name(cls, value: str, info: ValidationInfo) -> str:
        """A custom template is checked now, before any work; names are checked on use."""
        if not is_form_name(value):
            check_template(value, str(info.field_name).split("_")[0])
        return value

    def recipe(self, forms: TextForms, records: list[DescriptorRecord]) -> TextRecipe:
        cupl = bool(records) and all(r.params.get("format") == "cupl" for r in records)
        template = self.descriptor_template
        if template == AUTO:
            template = "sentence" if cupl else "dclip"
        pooling = self.pooling if self.pooling != AUTO else ("renormalised" if cupl else "mean")
        return make_recipe(forms, template, self.classname_template, pooling, self.on_empty)


class EvalConfig(TextOptions):
    """What `descgen eval` was asked; it is also the provenance part of the result."""

    dataset: str
    descriptors: Path | None = None
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    method: str = "descriptors"
    batch_size: int = Field(default=64, ge=1)
    device: str = "auto"
    precision: str = "fp32"
    workers: int = Field(default=2, ge=0)
    explain: int = Field(default=0, ge=0)


class EvalResult(BaseModel):
    metrics: dict[str, float | int | None]
    method: str
    model: str
    pretrained: str
    precision: str
    device: str
    dataset: str
    descriptor_file: str | None
    descriptor_file_sha256: str | None
    text: TextRecipe
    counts: dict[str, Any]
    unreadable_images: list[str]
    fallback_classes: list[str]
    images_encoded: int
    texts_encoded: int
    seconds: float
    timings: dict[str, float]
    images_per_second: float | None


def _store(cfg: EvalConfig, classes: list[str]) -> tuple[list[DescriptorRecord], str | None]:
    """The store's records, checked against the class list, and the file's hash."""
    if cfg.descriptors is None:
        if cfg.method in NEEDS_DESCRIPTORS:
            raise DescgenError(f"--method {cfg.method} needs --descriptors FILE.jsonl")
        return [], None
    records = read_store(cfg.descriptors)
    check_against_classes(records, classes, cfg.descriptors)
    return records, sha256_file(cfg.descriptors)


def imagenet_templates(prompts_dir: Path) -> list[str]:
    """CLIP's 80 ImageNet templates, one a line, `{}` for the class name."""
    path = prompts_dir / "templates" / "imagenet80.txt"
    return [t for t in path.read_text(encoding="utf-8").split("\n") if t]


def _count_stats(descriptors: dict[int, list[str]], n_classes: int) -> dict[str, Any]:
    counts = [len(descriptors.get(i) or []) for i in range(n_classes)]
    return {"classes": n_classes, "descriptors_per_class": {
        "mean": float(np.mean(counts)), "min": int(min(counts)), "max": int(max(counts))}}


def evaluate(cfg: EvalConfig, classes: list[str], cache_dir: Path, prompts_dir: Path,
             predictions: Path | None = None, clip: ClipModel | None = None,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> EvalResult:
    """Score every image against every class and compute the metrics.

    Image features come from the cache when the same model saw the same files before; only
    texts not yet encoded by this model are encoded.
    """
    if cfg.method not in METHODS:
        raise DescgenError(f"--method {cfg.method}: choose {', '.join(METHODS)}")
    started = time.perf_counter()
    records, digest = _store(cfg, classes)
    recipe = cfg.recipe(TextForms.load(prompts_dir), records)
    descriptors = {r.class_index: r.descriptors for r in records}
    data = load_dataset(cfg.dataset, classes, cache_dir)
    clip = clip or load_clip(cfg.model, cfg.pretrained, cfg.device, cfg.precision)
    loaded = time.perf_counter()
    image_cache = ImageFeatureCache(cache_dir / "image_features")
    key = image_cache.key(clip, data.paths)
    feats = image_cache.load(key, rows=len(data.paths))
    encoded_images = 0
    if feats is None:
        feats = encode_images(clip, data.paths, cfg.batch_size, cfg.workers)
        image_cache.save(key, feats)
        encoded_images = len(data.paths)
    images_done = time.perf_counter()
    unreadable = [data.paths[i] for i in sorted(feats.errors)]
    for i in sorted(feats.errors):
        log(f"warning: unreadable image {data.paths[i]}: {feats.errors[i]}")
    if len(unreadable) == len(data.paths):
        raise DescgenError(f"{cfg.dataset}: none of its {len(data.paths)} images could be read"
                           f" (first: {unreadable[0]}: {feats.errors[min(feats.errors)]})")
    if len(unreadable) > UNREADABLE_WARNING * len(data.paths):
        log(f"warning: {len(unreadable)} of {len(data.paths)} images"
            f" ({100 * len(unreadable) / len(data.paths):.1f}%) could not be read and are left"
            " out of the metrics")

    ct, fallback = class_texts(cfg.method, classes, descriptors, imagenet_templates(prompts_dir),
                               recipe)
    if fallback:
        names = ", ".join(f"{i} {classes[i]}" for i in fallback)
        by = {"classname": f"their class name ({recipe.classname('{c}')})",
              "blank": f"a blank descriptor ({recipe.descriptor('{c}', '')}, as DCLIP does)"}
        log(f"warning: {len(fallback)} classes have no descriptors and are scored by"
            f" {by[recipe.on_empty]}: {names}")
    text_feats, texts_encoded = TextFeatureCache(cache_dir / "text_features.sqlite").features(
        clip, ct.flat())
    texts_done = time.perf_counter()
    vectors = class_vectors(text_feats, ct)
    ok = np.asarray(feats.ok, bool)
    image_feats = np.asarray(feats.features, np.float32)[ok]
    labels = np.asarray(data.labels)[ok]
    score = scores(image_feats, vectors)
    result_metrics = metrics(score, labels)
    if predictions is not None:
        paths = [p for p, good in zip(data.paths, ok) if good]
        _write_predictions(predictions, paths, labels, score, image_feats, ct, text_feats,
                           cfg.explain)
    finished = time.perf_counter()
    timings = {"data_and_model": loaded - started, "images": images_done - loaded,
               "texts": texts_done - images_done, "scoring": finished - texts_done}
    return EvalResult(
        metrics=result_metrics.__dict__, method=cfg.method, model=cfg.model,
        pretrained=cfg.pretrained, precision=cfg.precision, device=clip.device,
        dataset=cfg.dataset, descriptor_file=str(cfg.descriptors) if cfg.descriptors else None,
        descriptor_file_sha256=digest, text=recipe,
        counts=_count_stats(descriptors, len(classes)), unreadable_images=unreadable,
        fallback_classes=[classes[i] for i in fallback], images_encoded=encoded_images,
        texts_encoded=texts_encoded, seconds=finished - started,
        timings={k: round(v, 4) for k, v in timings.items()},
        images_per_second=(encoded_images / timings["images"]) if encoded_images else None,
    )


def _write_predictions(path: Path, paths: list[str], labels: np.ndarray, score: np.ndarray,
                       image_feats: np.ndarray, ct: ClassTexts, text_feats: np.ndarray,
                       k: int) -> None:
    best = topk(score, 5)
    offsets = ct.offsets()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row, (image, label) in enumerate(zip(paths, labels)):
            pred = int(best[row, 0])
            line: dict[str, Any] = {"path": image, "label": int(label), "pred": pred,
                                    "top5": [int(c) for c in best[row]]}
            if k:
                line["explain_pred"] = explain(image_feats[row], pred, ct, text_feats, offsets, k)
                if pred != label:
                    line["explain_label"] = explain(image_feats[row], int(label), ct, text_feats,
                                                    offsets, k)
            handle.write(json.dumps(line) + "\n")
