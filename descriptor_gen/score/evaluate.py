"""`descgen eval`: a dataset, a class list and descriptors -> metrics, predictions, explanations."""

from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import dataclass
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from descriptor_gen.models import Model
from descriptor_gen.data.cards import coop_template, find_card
from descriptor_gen.data.datasets import LabelledImages, load_dataset
from descriptor_gen.paths import IMAGE_FEATURES, TEXT_FEATURES
from descriptor_gen.data.subsample import (Subsample, select_records, subsample_images, subsample_names,
                                          subsample_records)
from descriptor_gen.errors import DescgenError
from descriptor_gen.atomic import replace_atomically
from descriptor_gen.hashing import sha256_file
from descriptor_gen.score.blocks import ImageRows, PooledScores, RowScores, blocks
from descriptor_gen.score.caches import (
    CLIP_VIEW,
    VIEWS,
    ImageFeatureCache,
    ImageFeatures,
    ImageView,
    PartialFeatures,
    TextFeatureCache,
)
from descriptor_gen.score.clip_ref import ClipRef, remember
from descriptor_gen.score.decode import DecodeName, warm_decoder_soon
from descriptor_gen.score.engine_options import EngineOptions, check_engine

if TYPE_CHECKING:
    from descriptor_gen.score.features import ClipModel
from descriptor_gen.score.methods import (
    METHODS,
    Inputs,
    MethodDef,
    base_name,
    form_defaults,
    method,
    method_scores,
    store_keys,
)
from descriptor_gen.score.scoring import (
    AUTO,
    ClassTexts,
    Metrics,
    OnEmpty,
    TextForms,
    TextRecipe,
    check_template,
    explain,
    is_form_name,
    make_recipe,
    metrics,
    per_class_recall,
    summarise,
)
from descriptor_gen.describe.store import (
    DescriptorRecord,
    check_against_classes,
    read_store,
    store_style,
)


UNREADABLE_WARNING = 0.01  # above this share of unreadable images, a summary warning


class TextOptions(Model):
    """How texts are made: the descriptor and class-name forms (names in
    `prompts/text_forms.yaml` or templates), the pooling of descriptor embeddings, what a
    class without descriptors is scored by, and a high-level concept (WaffleCLIP's
    "A photo of a {concept}: a {c}"; `card`: the dataset card's). `auto` follows the store and
    the method: CuPL sentences as written with a renormalised mean; WaffleCLIP's and
    Comparative-CLIP's methods their "A photo of a ..." forms; otherwise DCLIP's form with a
    plain mean and CLIP's "a photo of a {c}."."""

    model_config = ConfigDict(extra="forbid")

    descriptor_template: str = AUTO
    classname_template: str = AUTO
    pooling: Literal["auto", "mean", "renormalised"] = AUTO
    on_empty: OnEmpty = "classname"
    concept: str | None = None

    @field_validator("descriptor_template", "classname_template")
    @classmethod
    def _template_or_name(cls, value: str, info: ValidationInfo) -> str:
        """A custom template is checked now, before any work; names are checked on use."""
        if not is_form_name(value):
            check_template(value, str(info.field_name).split("_")[0])
        return value

    def recipe(self, forms: TextForms, records: list[DescriptorRecord],
               mdef: MethodDef | None = None, concept: str | None = None) -> TextRecipe:
        cupl = bool(records) and all(store_style(r) == "cupl" for r in records)
        defaults = mdef or method("descriptors")
        template = self.descriptor_template
        if template == AUTO:
            template = "sentence" if cupl else defaults.descriptor_form
        classname = self.classname_template
        if classname == AUTO:
            classname = defaults.classname_form
        pooling = self.pooling if self.pooling != AUTO else (
            defaults.pooling or ("renormalised" if cupl else "mean"))
        return make_recipe(forms, template, classname, pooling, self.on_empty,
                           concept if concept is not None else self.concept)


@dataclass
class ScorerOutput:
    """What an image scorer gives: (N, C) scores and how the result names the method."""

    scores: np.ndarray
    method: str
    options: dict[str, Any]


class ImageScorer(Protocol):
    """Scores the evaluated images without descriptor texts (a learned run's prompts or
    cache). `learn/` implements it; the caller chooses it, so `score/` imports nothing above."""

    def __call__(self, clip: ClipModel, clip_spec: dict[str, str], classes: list[str],
                 data: LabelledImages, image_features: np.ndarray, cache_dir: Path,
                 prompts_dir: Path, batch_size: int, workers: int | None) -> ScorerOutput: ...


CHECKPOINT_ROWS = 16384
"""A longer file list is encoded in checkpointed chunks of this many images (resumable)."""


class EvalConfig(TextOptions, EngineOptions):
    """What `descgen eval` was asked; it is also the provenance part of the result."""

    dataset: str
    data_root: Path | None = None
    descriptors: Path | None = None
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    method: str = "descriptors"
    options: dict[str, Any] = {}
    learned: Path | None = None
    batch_size: int = Field(default=64, ge=1)
    device: str = "auto"
    precision: str = "fp32"
    workers: int | None = Field(default=None, ge=0)  # None: machine.loader_workers
    explain: int = Field(default=0, ge=0)
    decode: DecodeName = "pil"
    subsample: Subsample = "all"

    def engine_options(self) -> EngineOptions:
        return EngineOptions(**self.model_dump(include=set(EngineOptions.model_fields)))

    def clip_spec(self) -> tuple[str, str, str, str]:
        """The CLIP as `load_clip` takes it, for engines whose workers load it themselves."""
        return (self.model, self.pretrained, self.precision, self.device)


class EvalResult(Model):
    """`metrics` are the mean over a seeded method's repeats (`metrics_std` their standard
    deviation, `repeats` each seed's); predictions are the first seed's."""

    metrics: dict[str, int | float | None]  # int first: pydantic before 2.9 made 7 images 7.0
    metrics_std: dict[str, float | None] | None = None
    repeats: list[dict[str, Any]] = []
    method: str
    options: dict[str, Any] = {}
    concept: str | None = None
    model: str
    pretrained: str
    precision: str
    device: str
    dataset: str
    descriptor_file: str | None
    descriptor_file_sha256: str | None
    text: TextRecipe | None
    templates: str | None
    counts: dict[str, Any]
    unreadable_images: list[str]
    fallback_classes: list[str]
    images_encoded: int
    texts_encoded: int
    seconds: float
    timings: dict[str, float]
    images_per_second: float | None
    zero_shot: dict[str, Any] | None = None
    model_loaded: bool = True  # False: every feature came from the caches
    decode: str = "pil"
    subsample: str = "all"  # the half of the classes scored (base-to-novel)
    per_class_recall: list[tuple[str, float | None]] = []  # (class, top-1 recall), first seed's


def _methods_without_a_store() -> list[str]:
    """The methods that run on their defaults without a descriptor store."""
    names = []
    for name, mdef in METHODS.items():
        try:
            if not mdef.needs_descriptors(mdef.parse({})):
                names.append(name)
        except DescgenError:  # it needs options before it runs at all
            continue
    return names


def _store(cfg: EvalConfig, mdef: MethodDef, options: Any) -> tuple[list[DescriptorRecord], str | None]:
    """The store's records and the file's hash (checked against the classes once known)."""
    if cfg.descriptors is None:
        if mdef.needs_descriptors(options):
            without = _methods_without_a_store()
            raise DescgenError(f"--method {cfg.method} needs --descriptors FILE.jsonl (descgen"
                               " generate makes one with a language model, descgen import reads a"
                               " published file); without a store: --method"
                               f" {' | '.join(without)} (classname is CLIP's baseline)")
        return [], None
    records = read_store(cfg.descriptors)
    if mdef.store_style is not None:
        other = [r for r in records if store_style(r) != mdef.store_style]
        if other:
            raise DescgenError(
                f"--method {cfg.method}: {cfg.descriptors} holds {store_style(other[0])} descriptors"
                f" (class {other[0].class_index} {other[0].class_name!r}); it scores {mdef.store_style}"
                f" ones (descgen generate --style {mdef.store_style}"
                + (", or descgen import --format cupl)" if mdef.store_style == "cupl" else ")"))
    return records, sha256_file(cfg.descriptors)


def card_concept(dataset: str) -> str:
    """A dataset card's published high-level concept (WaffleCLIP's), for `--concept card`."""
    card = find_card(dataset.partition(":")[0])
    if card is None or card.concept is None:
        raise DescgenError(f"--concept card: {dataset} has no published concept"
                           " (give one, e.g. --concept bird)")
    return card.concept.name


def imagenet_templates(prompts_dir: Path) -> list[str]:
    """CLIP's 80 ImageNet templates, one a line, `{}` for the class name."""
    path = prompts_dir / "templates" / "imagenet80.txt"
    return [t for t in path.read_text(encoding="utf-8").split("\n") if t]


def source_templates(spec: str, prompts_dir: Path) -> tuple[list[str], str]:
    """The zero-shot templates of a data source: a card's, a webdataset folder's, else CLIP's
    80 ImageNet templates; and where they came from."""
    name = spec.partition(":")[0]
    card = None if spec.startswith(("wds:", "hf:")) else find_card(name)
    if card is not None:
        return card.template_list(), f"card {name}"
    if spec.startswith("wds:"):
        from descriptor_gen.data.wds import wds_templates  # imports torch: only for wds: specs

        found = wds_templates(spec)
        if found:
            return found, f"{spec} zeroshot_classification_templates.txt"
    return imagenet_templates(prompts_dir), "CLIP's 80 ImageNet templates"


def _count_stats(descriptors: dict[int, list[str]], n_classes: int) -> dict[str, Any]:
    counts = [len(descriptors.get(i) or []) for i in range(n_classes)]
    return {"classes": n_classes, "descriptors_per_class": {
        "mean": float(np.mean(counts)), "min": int(min(counts)), "max": int(max(counts))}}


def image_features(clip: Any, data: LabelledImages, cache_dir: Path, batch_size: int,
                   workers: int | None, engine: EngineOptions | None = None,
                   spec: tuple[str, str, str, str] | None = None,
                   timings: dict[str, float] | None = None,
                   progress: bool = False, view: ImageView = CLIP_VIEW,
                   decode: str = "pil") -> tuple[ImageFeatures, int]:
    """The source's image features from the cache, or encoded now (by the local or the Ray
    engine: same features, same cache key, same progress bar) and cached; returns them and how
    many images were encoded. `timings` gets, when something is encoded, the engine's own
    (Ray's start-up) and seconds spent on the cache key, loading the model, encoding and
    saving (`images_key`, `images_model`, `images_encode`, `images_save`). `clip` may be
    a `ClipRef`: it loads only if something is encoded. `decode` applies to files seen as
    CLIP sees them (a stream, images read from a dataset object or another view decode with
    PIL, and are keyed so)."""
    if data.parent is not None and data.rows is not None:
        full, encoded = image_features(clip, data.parent, cache_dir, batch_size, workers, engine,
                                       spec, timings, progress, view, decode)
        return full.select(data.rows), encoded
    stream = data.shards is not None
    if stream or view != CLIP_VIEW or data.reader is not None:
        decode = "pil"  # and keyed so: these images never reach a tensor decoder
    check_engine(engine or EngineOptions(), clip.precision, decode)
    clock = [time.perf_counter()]
    warming = _warm_decoder_first(clip, decode, loading=isinstance(clip, ClipRef) and
                                  not clip.known)  # a CLIP not remembered loads for its key
    image_cache = ImageFeatureCache(cache_dir / IMAGE_FEATURES)
    key = image_cache.key(clip, data.identity(), view, decode,
                          _device_kind(clip) if decode == "torch" else "cpu")
    feats = image_cache.load(key, rows=None if stream else len(data.paths))
    if feats is not None:
        return feats, 0
    clock.append(time.perf_counter())
    options = engine or EngineOptions()
    parts = None if stream or len(data.paths) <= CHECKPOINT_ROWS else PartialFeatures(
        image_cache.folder, key, CHECKPOINT_ROWS)
    done = parts.load() if parts is not None else None  # the chunks an interrupted run left
    if done is not None and len(done.ok) == len(data.paths):  # killed before the entry's save
        feats, spent, encoded = done, {}, 0
        clock.append(time.perf_counter())
    else:
        todo = data if done is None else data.tail(len(done.ok))
        reading = _read_early(clip, todo, options, batch_size, workers, view, decode)
        try:
            if isinstance(clip, ClipRef):
                if not warming:
                    _warm_decoder_first(clip, decode, loading=not clip.loaded)
                clip = clip.load()
            clock.append(time.perf_counter())
            from descriptor_gen.score.engines import encode  # torch: only when encoding

            rest, spent = encode(options, clip, spec or ("", "", clip.precision, clip.device),
                                 todo, batch_size, workers, progress,
                                 on_batch=None if parts is None else parts.add, view=view,
                                 decode=decode, reading=reading)
        finally:
            if reading is not None:
                reading.close()  # the load failed, or the encoder never took it
        feats, encoded = _joined(done, rest), len(rest.ok)
    clock.append(time.perf_counter())
    image_cache.save(key, feats)
    if parts is not None:
        parts.clear()
    clock.append(time.perf_counter())
    if timings is not None:
        timings.update(spent)
        timings.update(zip(("images_key", "images_model", "images_encode", "images_save"),
                           (b - a for a, b in itertools.pairwise(clock))))
    return feats, encoded


def _device_kind(clip: Any) -> str:
    """`cuda` or `cpu`: where a model would run (torch is asked only for `auto`)."""
    device = getattr(clip, "requested_device", None) or clip.device
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _warm_decoder_first(clip: Any, decode: str, loading: bool) -> bool:
    """Start nvJPEG in a thread (`decode.warm_decoder_soon`) when the CLIP is about to be built
    and the run decodes on a GPU, so that the two overlap; whether it was started."""
    if not (loading and decode == "torch" and _device_kind(clip) == "cuda"):
        return False
    warm_decoder_soon(_cuda_device(clip))
    return True


def _cuda_device(clip: ClipRef) -> str:
    """The CUDA device the CLIP will load on, spelled as `load_clip` will (nvJPEG's decoder is
    made per device name)."""
    device = clip.requested_device
    return "cuda" if device == "auto" else device


def _read_early(clip: Any, data: LabelledImages, options: EngineOptions, batch_size: int,
                workers: int | None, view: ImageView, decode: str) -> Any:
    """The images' reading (`features.start_reading`) started before the CLIP is built, so that
    the DataLoader's workers are forked before the model and CUDA fill the process (a fork
    copies its page tables) and read (with PIL, decode) the first batches while it is built.
    Only for a CLIP still to be built whose preprocessing the memo can make
    (`ClipRef.remembered_preprocess`), a file list or a reader seen as CLIP sees it, and the
    local engine; else None. A device that cannot run is refused here as the load would."""
    if (not isinstance(clip, ClipRef) or clip.loaded or options.engine != "local"
            or data.shards is not None or view != CLIP_VIEW or not data.paths):
        return None
    preprocess = clip.remembered_preprocess()
    if preprocess is None:
        return None
    from descriptor_gen.score.features import ReadFor, check_device, start_reading

    device = check_device(clip.requested_device, clip.precision)
    return start_reading(ReadFor(preprocess, device), data.paths, batch_size, workers,
                         data.reader, view, decode)


def _joined(done: ImageFeatures | None, rest: ImageFeatures) -> ImageFeatures:
    """The chunks an interrupted run left, then the features encoded after them."""
    if done is None:
        return rest
    start = len(done.ok)
    return ImageFeatures(np.concatenate([done.features, rest.features]),
                         np.concatenate([done.ok, rest.ok]),
                         {**done.errors, **{start + k: v for k, v in rest.errors.items()}})


def _repeat_summary(runs: list[Metrics]) -> tuple[dict[str, Any], dict[str, float | None] | None]:
    first = runs[0].__dict__
    if len(runs) == 1:
        return dict(first), None
    mean: dict[str, Any] = {}
    std: dict[str, float | None] = {}
    for key, value in first.items():
        values = [getattr(r, key) for r in runs]
        if value is None or key == "n_images":
            mean[key], std[key] = value, None
            continue
        mean[key] = float(np.mean(values))
        std[key] = float(np.std(values))
    return mean, std


@dataclass
class _Seen:
    """The evaluated images as encoded: features, which could be read, their labels."""

    feats: ImageFeatures
    encoded: int
    names: list[str]
    ok: np.ndarray
    labels: np.ndarray
    unreadable: list[str]
    engine_timings: dict[str, float]


def _seen_images(cfg: EvalConfig, data: LabelledImages, classes: list[str], clip: ClipModel,
                 cache_dir: Path, log: Callable[[str], None], progress: bool = False) -> _Seen:
    """Encode (or read from the cache) the evaluated images; unreadable ones are named and
    left out, and none readable at all is an error."""
    spent: dict[str, float] = {}
    feats, encoded_images = image_features(clip, data, cache_dir, cfg.batch_size, cfg.workers,
                                           cfg.engine_options(), cfg.clip_spec(), spent, progress,
                                           decode=cfg.decode)
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
    return _Seen(feats, encoded_images, list(names), ok, labels, unreadable, spent)


def _evaluate_scored(cfg: EvalConfig, scorer: ImageScorer, classes: list[str] | None,
                     cache_dir: Path, prompts_dir: Path, predictions: Path | None,
                     clip: ClipModel | None, log: Callable[[str], None],
                     progress: bool) -> EvalResult:
    """`--learned RUN`: a trained run scores the images (CoOp's prompts, Tip-Adapter's cache,
    ...); the metrics and predictions are the same as every method's."""
    started = time.perf_counter()
    data = load_dataset(cfg.dataset, classes, cache_dir, cfg.data_root)
    data = subsample_images(data, data.classes or classes or [], cfg.subsample)
    classes = data.classes or classes or []
    ref = clip or ClipRef(cfg.model, cfg.pretrained, cfg.device, cfg.precision, cache_dir)
    loaded = time.perf_counter()
    seen = _seen_images(cfg, data, classes, ref, cache_dir, log, progress)
    images_done = time.perf_counter()
    clip = ref.load() if isinstance(ref, ClipRef) else ref  # a learned run scores on the model
    scored = scorer(clip, _clip_identity(cfg), classes, data,
                    ImageRows.of(seen.feats.features).whole(), cache_dir, prompts_dir,
                    cfg.batch_size, cfg.workers)
    score = scored.scores[seen.ok]
    result_metrics, best5 = summarise(score, seen.labels)
    zero_shot = _zero_shot_beside(clip, cfg.dataset, classes,
                                  ImageRows.of(seen.feats.features, seen.ok), seen.labels, cache_dir)
    if predictions is not None:
        _write_predictions(predictions, [p for p, good in zip(seen.names, seen.ok) if good],
                           seen.labels, best5, classes)
    finished = time.perf_counter()
    timings = {"data_and_model": loaded - started, "images": images_done - loaded,
               "texts": 0.0, "scoring": finished - images_done, **seen.engine_timings}
    return EvalResult(
        metrics=result_metrics.__dict__, method=scored.method, options=scored.options,
        model=cfg.model, pretrained=cfg.pretrained, precision=cfg.precision, device=clip.device,
        dataset=cfg.dataset, descriptor_file=None, descriptor_file_sha256=None, text=None,
        templates=None, counts={"classes": len(classes)}, unreadable_images=seen.unreadable,
        fallback_classes=[], images_encoded=seen.encoded, texts_encoded=0,
        seconds=finished - started, timings={k: round(v, 4) for k, v in timings.items()},
        images_per_second=(seen.encoded / timings["images"]) if seen.encoded else None,
        zero_shot=zero_shot, subsample=cfg.subsample,
        per_class_recall=list(zip(classes, per_class_recall(seen.labels, len(classes),
                                                            best5[:, 0]))),
    )


def _clip_identity(cfg: EvalConfig) -> dict[str, str]:
    from descriptor_gen.score.features import clip_identity

    return clip_identity(cfg.model, cfg.pretrained, cfg.precision)


def _zero_shot_beside(clip: ClipModel, dataset: str, classes: list[str], images: ImageRows,
                      labels: np.ndarray, cache_dir: Path) -> dict[str, Any]:
    """Zero-shot CLIP on the same images, classes and model, as CoOp's tables put beside a
    learned prompt: the class name in CoOp's zero-shot template of the dataset's card."""
    template = coop_template(dataset, zero_shot=True)
    texts = [template.format(c.replace("_", " ")) for c in classes]
    text_feats, _ = TextFeatureCache(cache_dir / TEXT_FEATURES).features(clip, texts)
    found = metrics(PooledScores(images, np.asarray(text_feats, np.float32)), labels)
    return {"text": template, "top1": found.top1, "top5": found.top5}


@dataclass
class _Prepared:
    """What a zero-shot evaluation reads before any image: the method, the store, the texts'
    recipe, the data source and its templates, the CLIP."""

    mdef: MethodDef
    options: Any
    records: list[DescriptorRecord]
    digest: str | None
    recipe: TextRecipe
    data: LabelledImages
    classes: list[str]
    templates: list[str]
    templates_from: str
    clip: ClipModel
    all_classes: list[str]

    @property
    def descriptors(self) -> dict[int, list[str]]:
        return {r.class_index: r.descriptors for r in self.records}


def _prepare(cfg: EvalConfig, classes: list[str] | None, cache_dir: Path, prompts_dir: Path,
             clip: ClipModel | None) -> _Prepared:
    mdef = method(cfg.method)
    options = mdef.parse(cfg.options)
    records, digest = _store(cfg, mdef, options)
    concept = card_concept(cfg.dataset) if cfg.concept == "card" else cfg.concept
    recipe = cfg.recipe(TextForms.load(prompts_dir), records, form_defaults(cfg.method, options),
                        concept)
    data = load_dataset(cfg.dataset, classes, cache_dir, cfg.data_root)
    full = data.classes or classes or []
    if cfg.descriptors is not None:
        records = _store_for(records, data, full, cfg.descriptors)
    data = subsample_images(data, full, cfg.subsample)
    records = subsample_records(records, len(full), cfg.subsample)
    templates, templates_from = source_templates(cfg.dataset, prompts_dir)
    if clip is not None:
        remember(clip, cache_dir)
    clip = clip or ClipRef(cfg.model, cfg.pretrained, cfg.device, cfg.precision, cache_dir)
    return _Prepared(mdef, options, records, digest, recipe, data,
                     subsample_names(full, cfg.subsample), templates, templates_from, clip, full)


def _store_for(records: list[DescriptorRecord], data: LabelledImages, classes: list[str],
               path: Path) -> list[DescriptorRecord]:
    """The store checked against the evaluated classes; a store of a subset dataset's parent
    (ImageNet's 1000 classes for ImageNet-A's 200) is checked against the parent's list and
    scores the subset's classes."""
    parent = data.parent_classes
    if data.class_subset is not None and parent is not None and any(
            r.class_index >= len(classes) for r in records):
        check_against_classes(records, parent, path)
        return select_records(records, {old: new for new, old in enumerate(data.class_subset)})
    check_against_classes(records, classes, path)
    return records


class _Encoders:
    """The text and shot encoders a method calls, counting what they encode anew."""

    def __init__(self, cfg: EvalConfig, prep: _Prepared, cache_dir: Path) -> None:
        self.cfg, self.prep, self.cache_dir = cfg, prep, cache_dir
        self.text_cache = TextFeatureCache(cache_dir / TEXT_FEATURES)
        self.texts_encoded = self.images_encoded = 0

    def texts(self, texts: list[str]) -> np.ndarray:
        found, count = self.text_cache.features(self.prep.clip, texts)
        self.texts_encoded += count
        return found

    def shots(self, source: str, view: str = "clip") -> tuple[np.ndarray, np.ndarray]:
        cfg, prep = self.cfg, self.prep
        shots = load_dataset(source, prep.all_classes, self.cache_dir, cfg.data_root)
        shots = subsample_images(shots, shots.classes or prep.all_classes, cfg.subsample)
        if shots.identity() == prep.data.identity():
            raise DescgenError(f"filtered: source {source} is the evaluated dataset; the shots"
                               " must come from other images (a train split)")
        found, count = image_features(prep.clip, shots, self.cache_dir, cfg.batch_size,
                                      cfg.workers, view=VIEWS[view])
        self.images_encoded += count
        good = np.asarray(found.ok, bool)
        source_labels = found.labels if shots.shards is not None else shots.labels
        return np.asarray(found.features, np.float32)[good], np.asarray(source_labels)[good]


@dataclass
class _Scoring:
    """Every seed's metrics; the first seed's scores (made a block at a time when read), texts
    and text features (predictions, explanations) and the classes it scored without
    descriptors."""

    runs: list[Metrics]
    score: RowScores
    texts: ClassTexts
    text_feats: np.ndarray
    fallback: list[int]
    best5: np.ndarray  # each image's five best classes, best first


def _score_seeds(cfg: EvalConfig, prep: _Prepared, inputs: Inputs, encoders: _Encoders,
                 images: ImageRows, labels: np.ndarray,
                 on_first: Callable[[], None]) -> _Scoring:
    runs: list[Metrics] = []
    first: _Scoring | None = None
    for seed in prep.options.seeds():
        ct, fallback = prep.mdef.build(inputs, prep.options, seed)
        text_feats = encoders.texts(ct.flat())
        score = method_scores(cfg.method, prep.options, images, text_feats, ct)
        found, best5 = summarise(score, labels)
        runs.append(found)
        if first is None:
            first = _Scoring(runs, score, ct, text_feats, fallback, best5)
            on_first()
    assert first is not None
    return first


def _warn_fallback(fallback: list[int], classes: list[str], recipe: TextRecipe,
                   log: Callable[[str], None]) -> None:
    if not fallback:
        return
    listed = ", ".join(f"{i} {classes[i]}" for i in fallback)
    by = {"classname": f"their class name ({recipe.classname('{c}')})",
          "blank": f"a blank descriptor ({recipe.descriptor('{c}', '')}, as DCLIP does)",
          "error": ""}
    log(f"warning: {len(fallback)} classes have no descriptors and are scored by"
        f" {by[recipe.on_empty]}: {listed}")


def evaluate(cfg: EvalConfig, classes: list[str] | None, cache_dir: Path, prompts_dir: Path,
             predictions: Path | None = None, clip: ClipModel | None = None,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
             progress: bool = False, scorer: ImageScorer | None = None) -> EvalResult:
    """Score every image against every class and compute the metrics.

    Args:
        classes: the class list; None to take the data source's own (a card, wds:, hf:).
        progress: a bar (on stderr) over the images being encoded.
        scorer: scores the images in place of texts; given with `cfg.learned` (its provenance).

    Image features come from the cache when the same model saw the same images before; only
    texts not yet encoded by this model are encoded. A seeded method is scored once per seed.
    """
    if (scorer is None) != (cfg.learned is None):
        raise ValueError("a learned run (cfg.learned) and its scorer come together")
    if scorer is not None:
        return _evaluate_scored(cfg, scorer, classes, cache_dir, prompts_dir, predictions, clip,
                                log, progress)
    clock = {"started": time.perf_counter()}
    prep = _prepare(cfg, classes, cache_dir, prompts_dir, clip)
    clock["loaded"] = time.perf_counter()
    seen = _seen_images(cfg, prep.data, prep.classes, prep.clip, cache_dir, log, progress)
    clock["images"] = clock["texts"] = time.perf_counter()
    images = ImageRows.of(seen.feats.features, seen.ok)
    encoders = _Encoders(cfg, prep, cache_dir)
    inputs = Inputs(prep.classes, prep.descriptors, prep.templates, prep.recipe, prompts_dir,
                    encoders.texts, encoders.shots, store_keys(prep.records))
    scoring = _score_seeds(cfg, prep, inputs, encoders, images, seen.labels,
                           lambda: clock.update(texts=time.perf_counter()))
    _warn_fallback(scoring.fallback, prep.classes, prep.recipe, log)
    if predictions is not None:
        kept = [p for p, good in zip(seen.names, seen.ok) if good]
        _write_predictions(predictions, kept, seen.labels, scoring.best5, prep.classes,
                           _Explained(scoring.score, images, scoring.texts, scoring.text_feats,
                                      cfg.explain) if cfg.explain else None)
    clock["finished"] = time.perf_counter()
    return _result(cfg, prep, seen, scoring, encoders, clock)


def _result(cfg: EvalConfig, prep: _Prepared, seen: _Seen, scoring: _Scoring,
            encoders: _Encoders, clock: dict[str, float]) -> EvalResult:
    mean, std = _repeat_summary(scoring.runs)
    seeds = prep.options.seeds()
    timings = {"data_and_model": clock["loaded"] - clock["started"],
               "images": clock["images"] - clock["loaded"],
               "texts": clock["texts"] - clock["images"],
               "scoring": clock["finished"] - clock["texts"], **seen.engine_timings}
    encoded_images = seen.encoded + encoders.images_encoded
    uses_templates = "templates" in cfg.method or _uses_templates(cfg, prep.options)
    return EvalResult(
        metrics=mean, metrics_std=std,
        repeats=([{"seed": s, **r.__dict__} for s, r in zip(seeds, scoring.runs)]
                 if len(scoring.runs) > 1 else []),
        method=cfg.method, options=prep.options.model_dump(), concept=prep.recipe.concept,
        model=cfg.model, pretrained=cfg.pretrained, precision=cfg.precision,
        device=getattr(prep.clip, "requested_device", None) or prep.clip.device,
        model_loaded=getattr(prep.clip, "loaded", True), dataset=cfg.dataset,
        descriptor_file=str(cfg.descriptors) if cfg.descriptors else None,
        descriptor_file_sha256=prep.digest, text=prep.recipe,
        templates=prep.templates_from if uses_templates else None,
        counts=_count_stats(prep.descriptors, len(prep.classes)),
        unreadable_images=seen.unreadable,
        fallback_classes=[prep.classes[i] for i in scoring.fallback],
        images_encoded=encoded_images, texts_encoded=encoders.texts_encoded,
        seconds=clock["finished"] - clock["started"],
        timings={k: round(v, 4) for k, v in timings.items()},
        images_per_second=(encoded_images / timings["images"]) if encoded_images else None,
        subsample=cfg.subsample,
        per_class_recall=list(zip(prep.classes, per_class_recall(seen.labels, len(prep.classes),
                                                                  scoring.best5[:, 0]))),
    )


def _uses_templates(cfg: EvalConfig, options: Any) -> bool:
    return "templates" in base_name(cfg.method, options)


@dataclass(frozen=True)
class _Explained:
    """What the predictions file's explanations read: the scores, the images' features, the
    texts and their features, and how many texts a class shows (k)."""

    score: RowScores
    images: ImageRows
    texts: ClassTexts
    text_feats: np.ndarray
    k: int


def _write_predictions(path: Path, paths: list[str], labels: np.ndarray, best5: np.ndarray,
                       classes: list[str], explained: _Explained | None = None) -> None:
    """A JSON line per image (class indices and names); `explained`: for the predicted class
    and for the true class when it differs (else the runner-up), its score and the k texts
    most similar to the image: what DCLIP's explanation figure shows. Written whole or not at
    all (an interrupted run leaves the file it found)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write_to(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            for line in _prediction_lines(paths, labels, best5, classes, explained):
                handle.write(json.dumps(line) + "\n")

    replace_atomically(path, write_to)


def _prediction_lines(paths: list[str], labels: np.ndarray, best5: np.ndarray,
                      classes: list[str], explained: _Explained | None) -> Iterator[dict[str, Any]]:
    """The predictions file's lines in image order; explanations read the scores a block of
    images at a time, as the metrics made them."""
    if explained is None:
        for row in range(len(paths)):
            yield _prediction(row, paths, labels, best5, classes)
        return
    offsets = explained.texts.offsets()
    for start, block in blocks(explained.score):
        images = explained.images.block(start, start + len(block))
        for row in range(start, start + len(block)):
            line = _prediction(row, paths, labels, best5, classes)
            _explain_line(line, block[row - start], images[row - start], best5[row],
                          explained, offsets, classes)
            yield line


def _prediction(row: int, paths: list[str], labels: np.ndarray, best5: np.ndarray,
                classes: list[str]) -> dict[str, Any]:
    pred, label = int(best5[row, 0]), int(labels[row])
    return {"path": paths[row], "label": label, "pred": pred,
            "top5": [int(c) for c in best5[row]], "label_name": classes[label],
            "pred_name": classes[pred]}


def _explain_line(line: dict[str, Any], score: np.ndarray, image: np.ndarray, best: np.ndarray,
                  explained: _Explained, offsets: np.ndarray, classes: list[str]) -> None:
    pred, label = line["pred"], line["label"]
    other = ("label", label) if pred != label else ("runner_up", int(best[1])
                                                      if len(best) > 1 else -1)
    for role, c in (("pred", pred), other):
        if c < 0:
            continue
        if role == "runner_up":
            line.update(runner_up=c, runner_up_name=classes[c])
        line[f"score_{role}"] = round(float(score[c]), 6)
        line[f"explain_{role}"] = explain(image, c, explained.texts, explained.text_feats,
                                          offsets, explained.k)
