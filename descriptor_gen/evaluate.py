"""`descgen eval`: a dataset, a class list and descriptors -> metrics, predictions, explanations."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from descriptor_gen.datasets import load_dataset
from descriptor_gen.errors import DescgenError
from descriptor_gen.features import ClipModel, ImageFeatureCache, TextFeatureCache, encode_images, load_clip
from descriptor_gen.scoring import (
    MENON_TEMPLATE,
    METHODS,
    class_texts,
    class_vectors,
    explain,
    metrics,
    scores,
    topk,
)
from descriptor_gen.store import check_against_classes, read_store


class EvalConfig(BaseModel):
    """What `descgen eval` was asked; it is also the provenance part of the result."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    descriptors: Path | None = None
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    method: str = "descriptors"
    descriptor_template: str = MENON_TEMPLATE
    batch_size: int = Field(default=64, ge=1)
    device: str = "auto"
    precision: str = "fp32"
    workers: int = Field(default=2, ge=0)
    explain: int = Field(default=0, ge=0)
    strict: bool = False


class EvalResult(BaseModel):
    metrics: dict[str, float | int]
    method: str
    model: str
    pretrained: str
    precision: str
    device: str
    dataset: str
    descriptor_file: str | None
    descriptor_file_sha256: str | None
    descriptor_template: str
    counts: dict[str, Any]
    unreadable_images: list[str]
    fallback_classes: list[str]
    images_encoded: int
    texts_encoded: int
    seconds: float
    timings: dict[str, float]
    images_per_second: float | None


def _descriptors(cfg: EvalConfig, classes: list[str]) -> tuple[dict[int, list[str]], str, str | None]:
    """Descriptors by class index, the text template to use, and the file's hash."""
    if cfg.descriptors is None:
        if cfg.method in ("descriptors", "descriptors+templates"):
            raise DescgenError(f"--method {cfg.method} needs --descriptors FILE.jsonl")
        return {}, cfg.descriptor_template, None
    records = read_store(cfg.descriptors)
    check_against_classes(records, classes, cfg.descriptors)
    template = cfg.descriptor_template
    if template == MENON_TEMPLATE and records and all(r.params.get("format") == "cupl" for r in records):
        template = "{d}"  # CuPL texts are whole sentences already
    digest = hashlib.sha256(cfg.descriptors.read_bytes()).hexdigest()
    return {r.class_index: r.descriptors for r in records}, template, digest


def _templates(prompts_dir: Path) -> list[str]:
    return [t for t in (prompts_dir / "templates" / "imagenet80.txt").read_text().splitlines() if t]


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
    if cfg.descriptor_template != MENON_TEMPLATE and "{d}" not in cfg.descriptor_template:
        raise DescgenError("--descriptor-template needs a {d} field (and may use {c})")
    started = time.perf_counter()
    data = load_dataset(cfg.dataset, classes, cache_dir)
    descriptors, template, digest = _descriptors(cfg, classes)
    clip = clip or load_clip(cfg.model, cfg.pretrained, cfg.device, cfg.precision)
    loaded = time.perf_counter()
    image_cache = ImageFeatureCache(cache_dir / "image_features")
    key = image_cache.key(clip, data.paths)
    feats = image_cache.load(key)
    encoded_images = 0
    if feats is None:
        feats = encode_images(clip, data.paths, cfg.batch_size, cfg.workers)
        image_cache.save(key, feats)
        encoded_images = len(data.paths)
    images_done = time.perf_counter()
    unreadable = [data.paths[i] for i in sorted(feats.errors)]
    for i in sorted(feats.errors):
        log(f"warning: unreadable image {data.paths[i]}: {feats.errors[i]}")

    ct, fallback = class_texts(cfg.method, classes, descriptors, _templates(prompts_dir), template)
    if fallback:
        names = ", ".join(f"{i} {classes[i]}" for i in fallback)
        if cfg.strict:
            raise DescgenError(f"classes without descriptors (--strict): {names}")
        log(f"warning: {len(fallback)} classes have no descriptors and are scored by their"
            f" class name{' and templates' if cfg.method == 'descriptors+templates' else ''}: {names}")
    flat = [t for texts in ct.texts for t in texts]
    text_feats, texts_encoded = TextFeatureCache(cache_dir / "text_features.sqlite").features(clip, flat)
    texts_done = time.perf_counter()
    vectors = class_vectors(text_feats, ct)
    ok = np.asarray(feats.ok, bool)
    image_feats = np.asarray(feats.features, np.float32)[ok]
    labels = np.asarray(data.labels)[ok]
    score = scores(image_feats, vectors)
    result_metrics = metrics(score, labels)
    if predictions is not None:
        offsets = np.cumsum([0] + [len(t) for t in ct.texts])
        paths = [p for p, good in zip(data.paths, ok) if good]
        _write_predictions(predictions, paths, labels, score, image_feats, ct, text_feats, offsets,
                           cfg.explain)
    finished = time.perf_counter()
    timings = {"data_and_model": loaded - started, "images": images_done - loaded,
               "texts": texts_done - images_done, "scoring": finished - texts_done}
    return EvalResult(
        metrics=result_metrics.__dict__, method=cfg.method, model=cfg.model,
        pretrained=cfg.pretrained, precision=cfg.precision, device=clip.device,
        dataset=cfg.dataset, descriptor_file=str(cfg.descriptors) if cfg.descriptors else None,
        descriptor_file_sha256=digest, descriptor_template=template,
        counts=_count_stats(descriptors, len(classes)), unreadable_images=unreadable,
        fallback_classes=[classes[i] for i in fallback], images_encoded=encoded_images,
        texts_encoded=texts_encoded, seconds=finished - started,
        timings={k: round(v, 4) for k, v in timings.items()},
        images_per_second=(encoded_images / timings["images"]) if encoded_images else None,
    )


def _write_predictions(path: Path, paths: list[str], labels: np.ndarray, score: np.ndarray,
                       image_feats: np.ndarray, ct: Any, text_feats: np.ndarray,
                       offsets: np.ndarray, k: int) -> None:
    best = topk(score, 5)
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
