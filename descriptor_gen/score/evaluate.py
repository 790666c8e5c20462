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

from descriptor_gen.data.datasets import LabelledImages, load_dataset
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import sha256_file
from descriptor_gen.score.features import (
    ClipModel,
    ImageFeatureCache,
    ImageFeatures,
    TextFeatureCache,
    encode_images,
    encode_stream,
    load_clip,
)
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
    data_root: Path | None = None
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
    templates: str | None
    counts: dict[str, Any]
    unreadable_images: list[str]
    fallback_classes: list[str]
    images_encoded: int
    texts_encoded: int
    seconds: float
    timings: dict[str, float]
    images_per_second: float | None


def _store(cfg: EvalConfig) -> tuple[list[DescriptorRecord], str | None]:
    """The store's records and the file's hash (checked against the classes once known)."""
    if cfg.descriptors is None:
        if cfg.method in NEEDS_DESCRIPTORS:
            raise DescgenError(f"--method {cfg.method} needs --descriptors FILE.jsonl")
        return [], None
    return read_store(cfg.descriptors), sha256_file(cfg.descriptors)


def imagenet_templates(prompts_dir: Path) -> list[str]:
    """CLIP's 80 ImageNet templates, one a line, `{}` for the class name."""
    path = prompts_dir / "templates" / "imagenet80.txt"
    return [t for t in path.read_text(encoding="utf-8").split("\n") if t]


def source_templates(spec: str, prompts_dir: Path) -> tuple[list[str], str]:
    """The zero-shot templates of a data source: a card's, a webdataset folder's, else CLIP's
    80 ImageNet templates; and where they came from."""
    from descriptor_gen.data.cards import load_cards
    from descriptor_gen.data.wds import wds_templates

    cards = load_cards()
    if spec in cards:
        card = cards[spec]
        return card.template_list(), f"card {spec}"
    if spec.startswith("wds:"):
        found = wds_templates(spec)
        if found:
            return found, f"{spec} zeroshot_classification_templates.txt"
    return imagenet_templates(prompts_dir), "CLIP's 80 ImageNet templates"


def _count_stats(descriptors: dict[int, list[str]], n_classes: int) -> dict[str, Any]:
    counts = [len(descriptors.get(i) or []) for i in range(n_classes)]
    return {"classes": n_classes, "descriptors_per_class": {
        "mean": float(np.mean(counts)), "min": int(min(counts)), "max": int(max(counts))}}


def image_features(clip: ClipModel, data: LabelledImages, cache_dir: Path, batch_size: int,
                   workers: int) -> tuple[ImageFeatures, int]:
    """The source's image features from the cache, or encoded now and cached; returns them and
    how many images were encoded."""
    image_cache = ImageFeatureCache(cache_dir / "image_features")
    key = image_cache.key(clip, data.identity())
    stream = data.shards is not None
    feats = image_cache.load(key, rows=None if stream else len(data.paths))
    if feats is not None:
        return feats, 0
    if stream:
        feats = encode_stream(clip, data.shards or [], batch_size, workers)
    else:
        feats = encode_images(clip, data.paths, batch_size, workers, reader=data.reader)
    image_cache.save(key, feats)
    return feats, len(feats.ok)


def evaluate(cfg: EvalConfig, classes: list[str] | None, cache_dir: Path, prompts_dir: Path,
             predictions: Path | None = None, clip: ClipModel | None = None,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> EvalResult:
    """Score every image against every class and compute the metrics.

    Args:
        classes: the class list; None to take the data source's own (a card, wds:, hf:).

    Image features come from the cache when the same model saw the same images before; only
    texts not yet encoded by this model are encoded.
    """
    if cfg.method not in METHODS:
        raise DescgenError(f"--method {cfg.method}: choose {', '.join(METHODS)}")
    started = time.perf_counter()
    records, digest = _store(cfg)
    recipe = cfg.recipe(TextForms.load(prompts_dir), records)
    descriptors = {r.class_index: r.descriptors for r in records}
    data = load_dataset(cfg.dataset, classes, cache_dir, cfg.data_root)
    classes = data.classes or classes or []
    if cfg.descriptors is not None:
        check_against_classes(records, classes, cfg.descriptors)
    templates, templates_from = source_templates(cfg.dataset, prompts_dir)
    clip = clip or load_clip(cfg.model, cfg.pretrained, cfg.device, cfg.precision)
    loaded = time.perf_counter()
    feats, encoded_images = image_features(clip, data, cache_dir, cfg.batch_size, cfg.workers)
    images_done = time.perf_counter()
    names = feats.keys if data.shards is not None else data.paths
    labels_all = feats.labels if data.shards is not None else data.labels
    unreadable = [names[i] for i in sorted(feats.errors)]
    for i in sorted(feats.errors):
        log(f"warning: unreadable image {names[i]}: {feats.errors[i]}")
    if len(unreadable) == len(names):
        first = f" (first: {unreadable[0]}: {feats.errors[min(feats.errors)]})" if unreadable else ""
        raise DescgenError(f"{cfg.dataset}: none of its {len(names)} images could be read{first}")
    if len(unreadable) > UNREADABLE_WARNING * len(names):
        log(f"warning: {len(unreadable)} of {len(names)} images"
            f" ({100 * len(unreadable) / len(names):.1f}%) could not be read and are left"
            " out of the metrics")
    ok = np.asarray(feats.ok, bool)
    labels = np.asarray(labels_all)[ok]
    beyond = labels[(labels < 0) | (labels >= len(classes))]
    if len(beyond):
        raise DescgenError(f"{cfg.dataset}: label {int(beyond[0])} is beyond the {len(classes)}"
                           " classes")

    ct, fallback = class_texts(cfg.method, classes, descriptors, templates, recipe)
    if fallback:
        listed = ", ".join(f"{i} {classes[i]}" for i in fallback)
        by = {"classname": f"their class name ({recipe.classname('{c}')})",
              "blank": f"a blank descriptor ({recipe.descriptor('{c}', '')}, as DCLIP does)"}
        log(f"warning: {len(fallback)} classes have no descriptors and are scored by"
            f" {by[recipe.on_empty]}: {listed}")
    text_feats, texts_encoded = TextFeatureCache(cache_dir / "text_features.sqlite").features(
        clip, ct.flat())
    texts_done = time.perf_counter()
    vectors = class_vectors(text_feats, ct)
    image_feats = np.asarray(feats.features, np.float32)[ok]
    score = scores(image_feats, vectors)
    result_metrics = metrics(score, labels)
    if predictions is not None:
        kept = [p for p, good in zip(names, ok) if good]
        _write_predictions(predictions, kept, labels, score, image_feats, ct, text_feats,
                           cfg.explain)
    finished = time.perf_counter()
    timings = {"data_and_model": loaded - started, "images": images_done - loaded,
               "texts": texts_done - images_done, "scoring": finished - texts_done}
    return EvalResult(
        metrics=result_metrics.__dict__, method=cfg.method, model=cfg.model,
        pretrained=cfg.pretrained, precision=cfg.precision, device=clip.device,
        dataset=cfg.dataset, descriptor_file=str(cfg.descriptors) if cfg.descriptors else None,
        descriptor_file_sha256=digest, text=recipe,
        templates=templates_from if "templates" in cfg.method else None,
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
