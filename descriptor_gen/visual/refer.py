"""Referring expressions scored by visual prompts: each candidate box becomes a marked copy of
the image, scored by CLIP against "This is {expression}"; optional marker ensemble and the
paper's *subtract* correction. Also the RefCOCO-family converter with a restricted unpickler.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from PIL import Image
from pydantic import AfterValidator, ConfigDict, Field, ValidationError

from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.models import Model
from descriptor_gen.paths import IMAGE_FEATURES, TEXT_FEATURES
from descriptor_gen.errors import DescgenError
from descriptor_gen.experiments.specs import ClipModelSpec, ListGrid, SpecName
from descriptor_gen.hashing import files_fingerprint, sha256_file
from descriptor_gen.locks import exclusive
from descriptor_gen.experiments.results import append_row, cell_id, done_cells
from descriptor_gen.score.features import (
    ClipModel,
    ImageFeatureCache,
    ImageFeatures,
    TextFeatureCache,
    autocast_for,
    feature_dtype,
)
from descriptor_gen.inputs import parse_json, read_text, validated, validation_message
from descriptor_gen.visual.markers import MARKERS, mark, rgb


def _box(value: list[float]) -> list[float]:
    if len(value) != 4:
        raise ValueError(f"a box is [x, y, w, h], got {len(value)} numbers")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"a box needs finite numbers, got {value}")
    if value[2] <= 0 or value[3] <= 0:
        raise ValueError(f"a box needs a width and height above 0, got {value}")
    return value


Box = Annotated[list[float], AfterValidator(_box)]


class Annotation(Model):
    """One line of a referring-expression file; boxes are `[x, y, w, h]` in pixels."""

    model_config = ConfigDict(extra="ignore")

    image: str = Field(min_length=1)
    expression: str = Field(min_length=1)
    proposals: list[Box] = Field(min_length=1)
    target: Box


def _positive_finite(value: float, what: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number above 0, got {value}")
    return value


def _known_marker(value: str) -> str:
    if value not in MARKERS:
        raise ValueError(f"unknown marker {value!r} (choose {', '.join(MARKERS)})")
    return value


def _known_colour(value: str) -> str:
    try:
        rgb(value)
    except DescgenError as exc:
        raise ValueError(str(exc)) from exc
    return value


@dataclass(frozen=True)
class Variant:
    """One way to mark a candidate: a marker with its colour, thickness and blur, checked when
    made (a bad value is a user error naming it)."""

    marker: str = "circle"
    color: str = "red"
    thickness: float = 0.01
    blur: float = 0.05

    def __post_init__(self) -> None:
        try:
            _known_marker(self.marker)
            _known_colour(self.color)
            _positive_finite(self.thickness, "thickness")
            _positive_finite(self.blur, "blur")
        except ValueError as exc:
            raise DescgenError(str(exc)) from exc

    def apply(self, image: Image.Image, box: list[float]) -> Image.Image:
        return mark(image, box, self.marker, self.color, self.thickness, self.blur)


def check_text_template(template: str) -> str:
    """A template with one field, `{expression}` (ValueError otherwise)."""
    try:
        fields = [(n, s, c) for _, n, s, c in string.Formatter().parse(template) if n is not None]
    except ValueError as exc:
        raise ValueError(f"{template!r}: {exc} (expected text with an {{expression}} field)") from exc
    if any(n != "expression" or s or c for n, s, c in fields) or not fields:
        raise ValueError(f"{template!r}: expected text with an {{expression}} field and no other")
    return template


def read_annotations(path: Path, images: Path | None = None) -> list[Annotation]:
    """Validated annotations; with `images`, each line's image must be there (named by line)."""
    if images is not None and not images.is_dir():
        raise DescgenError(f"{images}: no such image folder")
    out = []
    sizes: dict[str, tuple[int, int]] = {}
    for number, line in enumerate(read_text(path, "annotation file").split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        ann = validated(Annotation, parse_json(line, path, number), where)
        if images is not None:
            _check_boxes(ann, images, where, sizes)
        out.append(ann)
    if not out:
        raise DescgenError(f"{path}: no annotations")
    return out


def _check_boxes(ann: Annotation, images: Path, where: str, sizes: dict[str, tuple[int, int]]) -> None:
    """The image is there and every box overlaps it (image sizes read once per image)."""
    if ann.image not in sizes:
        path = images / ann.image
        if not path.is_file():
            raise DescgenError(f"{where}: image {ann.image!r} is not in {images}")
        try:
            with Image.open(path) as image:
                sizes[ann.image] = image.size
        except OSError as exc:
            raise DescgenError(f"{where}: cannot read image {path} ({exc})") from exc
    width, height = sizes[ann.image]
    for box in [*ann.proposals, ann.target]:
        x, y, w, h = box
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise DescgenError(f"{where}: box {box} lies outside the {width}x{height} image {ann.image}")


def iou(a: list[float], b: list[float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    h = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def encode_marked(clip: ClipModel, image: Image.Image, boxes: list[list[float]],
                  variants: list[Variant]) -> np.ndarray:
    """(V, P, D) normalised features; all marked copies of one image go through in one batch."""
    batch = torch.stack([clip.preprocess(v.apply(image, box)) for v in variants for box in boxes])
    with torch.inference_mode(), autocast_for(clip):
        feats = clip.model.encode_image(batch.to(clip.device)).float()
    feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return feats.cpu().numpy().reshape(len(variants), len(boxes), -1)


def _marked_key(clip: ClipModel, path: Path, boxes: list[list[float]], variants: list[Variant]) -> str:
    stat = path.stat()
    payload = json.dumps([clip.identity, str(path), stat.st_size, stat.st_mtime_ns, boxes,
                          [asdict(v) for v in variants]])
    return hashlib.sha256(payload.encode()).hexdigest()


def marked_features(clip: ClipModel, path: Path, boxes: list[list[float]], variants: list[Variant],
                    cache: ImageFeatureCache) -> np.ndarray:
    """Features of the marked copies, from the image-feature cache when seen before."""
    key = _marked_key(clip, path, boxes, variants)
    hit = cache.load(key)
    if hit is not None:
        return np.asarray(hit.features, np.float32).reshape(len(variants), len(boxes), -1)
    try:
        with Image.open(path) as image:
            feats = encode_marked(clip, image.convert("RGB"), boxes, variants)
    except OSError as exc:
        raise DescgenError(f"{path}: cannot read image ({exc})") from exc
    flat = feats.reshape(-1, feats.shape[-1])
    cache.save(key, ImageFeatures(flat.astype(feature_dtype(clip.precision)), np.ones(len(flat), bool), {}))
    return feats


def candidate_scores(feats: np.ndarray, text: np.ndarray, others: np.ndarray | None) -> np.ndarray:
    """(P,) ensemble scores: mean over variants of cos(marked, text), minus, with `others`, the
    same mean against Q other expressions (by linearity, against their mean feature)."""
    score = (feats @ text).mean(axis=0)
    if others is not None and len(others):
        score = score - (feats @ others.mean(axis=0)).mean(axis=0)
    return score


class ReferResult(Model):
    accuracy: float
    crop_accuracy: float
    n_expressions: int
    marker: list[dict[str, Any]]
    subtract: int
    text_template: str
    model: str
    pretrained: str


def evaluate_refer(annotations: list[Annotation], images: Path, clip: ClipModel,
                   variants: list[Variant], cache_dir: Path, subtract: int = 0,
                   text_template: str = "This is {expression}", seed: int = 0,
                   predictions: Path | None = None, save_marked: Path | None = None,
                   model: str = "", pretrained: str = "") -> ReferResult:
    """Accuracy: the share of expressions whose best-scoring proposal has IoU > 0.5 with the
    target; the crop baseline is scored in the same run."""
    texts = [text_template.format(expression=a.expression) for a in annotations]
    text_feats, _ = TextFeatureCache(cache_dir / TEXT_FEATURES).features(clip, texts)
    image_cache = ImageFeatureCache(cache_dir / IMAGE_FEATURES)
    rng = random.Random(seed)
    distinct = list(dict.fromkeys(texts))
    first_row = {t: i for i, t in reversed(list(enumerate(texts)))}
    hits = crop_hits = 0
    rows = []
    crop_variant = [Variant("crop")]
    for index, ann in enumerate(annotations):
        path = images / ann.image
        feats = marked_features(clip, path, ann.proposals, variants, image_cache)
        crops = marked_features(clip, path, ann.proposals, crop_variant, image_cache)
        others = None
        if subtract:
            pool = [t for t in distinct if t != texts[index]]
            sample = rng.sample(pool, min(subtract, len(pool)))
            others = text_feats[[first_row[t] for t in sample]] if sample else None
        score = candidate_scores(feats, text_feats[index], others)
        crop_score = candidate_scores(crops, text_feats[index], others)
        choice, crop_choice = int(np.argmax(score)), int(np.argmax(crop_score))
        hit = iou(ann.proposals[choice], ann.target) > 0.5
        crop_hit = iou(ann.proposals[crop_choice], ann.target) > 0.5
        hits += hit
        crop_hits += crop_hit
        rows.append({"image": ann.image, "expression": ann.expression, "choice": choice,
                     "correct": hit, "crop_choice": crop_choice, "crop_correct": crop_hit,
                     "scores": [round(float(s), 6) for s in score]})
        if save_marked is not None:
            _save_marked(path, ann, variants, save_marked / f"{index:05d}")
    if predictions is not None:
        predictions.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(predictions, "".join(json.dumps(r) + "\n" for r in rows))
    n = len(annotations)
    return ReferResult(accuracy=hits / n, crop_accuracy=crop_hits / n, n_expressions=n,
                       marker=[asdict(v) for v in variants], subtract=subtract,
                       text_template=text_template, model=model, pretrained=pretrained)


def _save_marked(path: Path, ann: Annotation, variants: list[Variant], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as image:
        for v in variants:
            for p, box in enumerate(ann.proposals):
                v.apply(image, box).save(folder / f"{v.marker}-{v.color}-{p}.png")


class _PlainUnpickler(pickle.Unpickler):
    """Only containers and scalars: a pickle that names any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is allowed")


def load_plain_pickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DescgenError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any bytes can be handed to us; nothing runs
        raise DescgenError(f"{path}: not a pickle of plain data ({type(exc).__name__}: {exc})") from exc


def _finite_box(value: list[float]) -> list[float]:
    if len(value) != 4 or not all(math.isfinite(v) for v in value):
        raise ValueError(f"a box is four finite numbers [x, y, w, h], got {value}")
    return value


class _Sentence(Model):
    sent: str


class _Ref(Model):
    """The fields of a RefCOCO-family ref that the converter reads."""

    ref_id: int | str | None = None
    image_id: int
    ann_id: int
    split: str | None = None
    sentences: list[_Sentence] = []


class _CocoImage(Model):
    id: int
    file_name: str


class _CocoAnnotation(Model):
    id: int
    image_id: int
    bbox: Annotated[list[float], AfterValidator(_finite_box)]


class _Instances(Model):
    images: list[_CocoImage] = []
    annotations: list[_CocoAnnotation] = []


def _refs(path: Path) -> list[_Ref]:
    data = load_plain_pickle(path)
    if not isinstance(data, list):
        raise DescgenError(f"{path}: expected a list of refs, got {type(data).__name__}")
    refs = []
    for number, item in enumerate(data):
        if not isinstance(item, dict):
            raise DescgenError(f"{path}: ref {number}: expected a mapping, got {type(item).__name__}")
        try:
            refs.append(_Ref.model_validate(item))
        except ValidationError as exc:
            raise DescgenError(f"{path}: ref {number}: {validation_message(exc)}") from exc
    return refs


def _instances(path: Path) -> _Instances:
    return validated(_Instances, parse_json(read_text(path, "instances file"), path), path)


def convert_refcoco(refs_path: Path, instances_path: Path, split: str | None) -> list[Annotation]:
    """RefCOCO/RefCOCO+/RefCOCOg `refs(unc|umd).p` + `instances.json` -> annotations; the
    proposals are the ground-truth boxes of the image's instances (boxes without an area are
    left out of the proposals)."""
    refs = _refs(refs_path)
    instances = _instances(instances_path)
    files = {img.id: img.file_name for img in instances.images}
    boxes: dict[int, dict[int, list[float]]] = {}
    for ann in instances.annotations:
        boxes.setdefault(ann.image_id, {})[ann.id] = ann.bbox
    out = []
    for ref in refs:
        if split and ref.split != split:
            continue
        image_boxes = boxes.get(ref.image_id, {})
        if ref.ann_id not in image_boxes or ref.image_id not in files:
            raise DescgenError(f"{refs_path}: ref {ref.ref_id} names an image or annotation"
                               f" missing from {instances_path.name}")
        proposals = [b for b in image_boxes.values() if b[2] > 0 and b[3] > 0]
        for sentence in ref.sentences:
            try:
                out.append(Annotation(image=files[ref.image_id], expression=sentence.sent,
                                      proposals=proposals, target=image_boxes[ref.ann_id]))
            except ValidationError as exc:
                raise DescgenError(f"{refs_path}: ref {ref.ref_id}:"
                                   f" {validation_message(exc)}") from exc
    return out


Thickness = Annotated[float, AfterValidator(lambda v: _positive_finite(v, "thickness"))]


class MarkerGrid(ListGrid):
    marker: list[Annotated[str, AfterValidator(_known_marker)]] = ["circle"]
    color: list[Annotated[str, AfterValidator(_known_colour)]] = ["red"]
    thickness: list[Thickness] = [0.01]


class ReferClipSpec(ClipModelSpec):
    model: str = "ViT-L-14"


class ReferSweepSpec(Model):
    """The marker ablation: shapes x colours x thickness on one referring-expression file."""

    model_config = ConfigDict(extra="forbid")

    name: SpecName
    annotations: Path
    images: Path
    clip: ReferClipSpec = ReferClipSpec()
    grid: MarkerGrid = MarkerGrid()
    subtract: int = Field(default=0, ge=0)
    text_template: Annotated[str, AfterValidator(check_text_template)] = "This is {expression}"


def run_refer_sweep(spec: ReferSweepSpec, out_dir: Path, cache_dir: Path,
                    clip: ClipModel, wait: bool = False) -> list[dict[str, Any]]:
    """One results line per (marker, colour, thickness), skipping those already written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir / "results.jsonl", wait=wait):
        return _run_markers(spec, out_dir, cache_dir, clip)


def _run_markers(spec: ReferSweepSpec, out_dir: Path, cache_dir: Path,
                 clip: ClipModel) -> list[dict[str, Any]]:
    import itertools

    results = out_dir / "results.jsonl"
    done = done_cells(results, repair=True)
    anns = read_annotations(spec.annotations, spec.images)
    base = {"experiment": spec.name, "clip": spec.clip.identity(),
            "annotations": sha256_file(spec.annotations),
            "images": files_fingerprint(sorted({str(spec.images / a.image) for a in anns})),
            "subtract": spec.subtract, "text_template": spec.text_template}
    rows = []
    for marker, color, thickness in itertools.product(spec.grid.marker, spec.grid.color,
                                                      spec.grid.thickness):
        setting = {"marker": marker, "color": color, "thickness": thickness}
        identity = {**base, "setting": setting}
        if cell_id(identity) in done:
            continue
        result = evaluate_refer(anns, spec.images, clip, [Variant(marker, color, thickness)],
                                cache_dir, subtract=spec.subtract, text_template=spec.text_template,
                                model=spec.clip.model, pretrained=spec.clip.pretrained)
        row = {"experiment": spec.name, "cell": cell_id(identity), "setting": setting,
               "method": "refer", "identity": identity,
               "metrics": {"accuracy": result.accuracy, "crop_accuracy": result.crop_accuracy,
                           "n_expressions": result.n_expressions}}
        append_row(results, row)
        rows.append(row)
    return rows
