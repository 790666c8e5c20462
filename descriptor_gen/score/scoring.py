"""Text recipes, class vectors, scores, metrics and explanations.

s(c, x) = 1/|D(c)| Σ_d cos(text(d), image(x)). With L2-normalised features this equals
image(x) · mean_d text(d), so the class vector is the mean of the normalised descriptor
embeddings, *not* renormalised (renormalising is the template ensemble's and CuPL's
convention, and it would change the scores).

A class vector is a weighted sum of groups of texts, each group pooled as a mean (DCLIP) or a
renormalised mean (templates, CuPL); which texts a method makes is in
:mod:`descriptor_gen.score.methods`.
"""

from __future__ import annotations

import re
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ConfigDict, ValidationError

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_yaml, validation_message
from descriptor_gen.describe.prompts import wordify
from descriptor_gen.score.blocks import RowScores, as_rows, blocks, metric_threads

Pooling = Literal["mean", "renormalised"]
OnEmpty = Literal["classname", "blank", "error"]
POOLINGS: tuple[str, ...] = ("auto", "mean", "renormalised")
ON_EMPTY: tuple[str, ...] = ("classname", "blank", "error")
AUTO = "auto"
_WHICH_IS = ("a", "an", "used")
_WHICH = ("has", "often", "typically", "may", "can")
_FIELDS = {"descriptor": {"c", "d", "which"}, "classname": {"c"}}
_FORM_NAME = re.compile(r"[a-z][a-z0-9-]*")
_REQUIRED = {"descriptor": "d", "classname": "c"}


def menon_which(descriptor: str) -> str:
    """Menon & Vondrick's connective, kept as published (it tests string prefixes, so
    "aerodynamic" counts as "a"): `which is` before a/an/used, `which` before
    has/often/typically/may/can, `which has` otherwise."""
    if descriptor.startswith(_WHICH_IS):
        return "which is"
    if descriptor.startswith(_WHICH):
        return "which"
    return "which has"


class TextForms(Model):
    """Named text forms (`prompts/text_forms.yaml`): descriptor forms and class-name forms."""

    model_config = ConfigDict(extra="forbid")

    descriptor: dict[str, str]
    classname: dict[str, str]

    @classmethod
    def load(cls, prompts_dir: Path) -> TextForms:
        path = prompts_dir / "text_forms.yaml"
        try:
            return cls.model_validate(read_yaml(path, "text forms file"))
        except ValidationError as exc:
            raise DescgenError(f"{path}: {validation_message(exc)}") from exc

    def resolve(self, kind: Literal["descriptor", "classname"], value: str,
                where: str | None = None) -> str:
        """A form's template: a name in the file, or a template of our own, checked here
        (errors name `where`, the flag by default)."""
        named = getattr(self, kind)
        if value in named:
            return named[value]
        try:
            check_template(value, kind, list(named))
        except ValueError as exc:
            raise DescgenError(f"{where or f'--{kind}-template'} {value!r}: {exc}") from exc
        return value


def is_form_name(value: str) -> bool:
    return bool(_FORM_NAME.fullmatch(value))


def check_template(template: str, kind: str, names: list[str] | None = None) -> None:
    """Refuse a template with an unknown, positional or formatted field, or a stray brace
    (ValueError saying what is wrong and what was expected)."""
    allowed = _FIELDS[kind]
    hint = f"a name ({', '.join(names)}) or " if names else "a form name or "
    expected = f"expected {hint}a template with fields {', '.join('{' + f + '}' for f in sorted(allowed))}"
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise ValueError(f"{exc} ({expected})") from exc
    for name, spec, conv in fields:
        if name not in allowed or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"field {shown} is not allowed ({expected})")
    if _REQUIRED[kind] not in {name for name, _, _ in fields}:
        if not fields and is_form_name(template):
            raise ValueError(f"no text form named {template!r} ({expected})")
        raise ValueError(f"needs a {{{_REQUIRED[kind]}}} field ({expected})")


class TextRecipe(Model):
    """How one evaluation turns classes and descriptors into texts, named as the user chose."""

    model_config = ConfigDict(extra="forbid")

    descriptor_template: str
    descriptor_text: str
    classname_template: str
    classname_text: str
    pooling: Pooling
    on_empty: OnEmpty
    concept: str | None = None

    def name(self, class_name: str) -> str:
        """The class as texts name it; with a concept, WaffleCLIP's `{concept}: a {c}`."""
        name = wordify(class_name)
        return f"{self.concept}: a {name}" if self.concept else name

    def descriptor(self, class_name: str, descriptor: str) -> str:
        return self.descriptor_text.format(c=self.name(class_name), d=descriptor,
                                           which=menon_which(descriptor))

    def classname(self, class_name: str) -> str:
        return self.classname_text.format(c=self.name(class_name))

    def empty_class_texts(self, class_name: str) -> list[str]:
        """The texts a class without descriptors is scored by (`on_empty`; `methods.py` builds
        the same as its groups): DCLIP's blank descriptor, or the class-name text."""
        if self.on_empty == "error":
            raise DescgenError(f"class {class_name!r} has no descriptors (--on-empty error)")
        return [self.descriptor(class_name, "")] if self.on_empty == "blank" else [self.classname(class_name)]

    def template(self, template: str, class_name: str) -> str:
        return template.format(self.name(class_name))


def make_recipe(forms: TextForms, descriptor_template: str = "dclip",
                classname_template: str = "clip", pooling: Pooling = "mean",
                on_empty: OnEmpty = "classname", concept: str | None = None) -> TextRecipe:
    return TextRecipe(descriptor_template=descriptor_template,
                      descriptor_text=forms.resolve("descriptor", descriptor_template),
                      classname_template=classname_template,
                      classname_text=forms.resolve("classname", classname_template),
                      pooling=pooling, on_empty=on_empty, concept=concept)


@dataclass
class Group:
    """Texts pooled together into one part of a class vector."""

    texts: list[str]
    labels: list[str]  # what each text stands for (the descriptor, or the template's text)
    renormalise: bool
    weight: float = 1.0
    aligned: bool = False  # text i means the same for every class (a template, a shared word)


@dataclass
class ClassTexts:
    """Per class, the groups of texts whose embeddings make its vector."""

    groups: list[list[Group]] = field(default_factory=list)

    def texts(self, index: int) -> list[str]:
        return [t for g in self.groups[index] for t in g.texts]

    def labels(self, index: int) -> list[str]:
        return [label for g in self.groups[index] for label in g.labels]

    def flat(self) -> list[str]:
        return [t for groups in self.groups for g in groups for t in g.texts]

    def offsets(self) -> np.ndarray:
        return np.cumsum([0] + [sum(len(g.texts) for g in groups) for groups in self.groups])


def class_vectors(text_features: np.ndarray, ct: ClassTexts) -> np.ndarray:
    """(C, D) class vectors from the flat, row-normalised features of all classes' texts:
    Σ_groups weight · (mean of the group's features, renormalised if the group says so)."""
    out = np.zeros((len(ct.groups), text_features.shape[1]), np.float32)
    start = 0
    for index, groups in enumerate(ct.groups):
        for group in groups:
            vector = text_features[start : start + len(group.texts)].mean(axis=0)
            if group.renormalise:
                vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
            out[index] += group.weight * vector
            start += len(group.texts)
    return out


def scores(image_features: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(N, C) scores in one matmul: s(c, x) = image(x) · mean_d text(d)."""
    return image_features.astype(np.float32) @ vectors.T


@dataclass
class Metrics:
    """Fractions; `top5` is None (undefined) with fewer than five classes."""

    top1: float
    top5: float | None
    mean_per_class_recall: float
    n_images: int
    mean_entropy: float


def _topk_rows(block: np.ndarray, k: int, work: np.ndarray) -> np.ndarray:
    """Indices of the k best classes of each row of a block, best first; ties go to the lower
    index (the stable full sort's answer). For a small k, k passes of argmax (which takes the
    first of equal maxima) instead of sorting every row; `work` (the block's shape) is
    overwritten."""
    if k > 8 or not np.isfinite(block).all():
        return np.argsort(-block, axis=1, kind="stable")[:, :k]
    np.copyto(work, block)
    rows = np.arange(len(work))
    best = np.empty((len(work), k), np.int64)
    for j in range(k):
        best[:, j] = column = work.argmax(axis=1)
        work[rows, column] = -np.inf
    return best


BLOCK_ROWS = 256
"""Rows of scores worked on at a time: 256 x 1,000 classes is 1 MB, which stays in the CPU's
cache through every pass the metrics make over it."""


def rescaled_entropy(score: np.ndarray, low: float = -10.0, high: float = 10.0) -> np.ndarray:
    """Entropy of softmax over each row's scores, min-max rescaled to [low, high] (Fig. 2).
    With y = scaled - max(scaled) and S = sum(e^y): H = log S - sum(e^y y) / S, a block of
    rows at a time in two reused buffers (a block stays in the CPU's cache)."""
    out = np.empty(len(score), score.dtype)
    y = np.empty((min(BLOCK_ROWS, len(score)), score.shape[1]), score.dtype)
    e = np.empty_like(y)
    for start in range(0, len(score), BLOCK_ROWS):
        block = score[start : start + BLOCK_ROWS]
        out[start : start + len(block)] = _entropy_rows(block, y[: len(block)], e[: len(block)],
                                                        low, high)
    return out


def _entropy_rows(block: np.ndarray, yb: np.ndarray, eb: np.ndarray, low: float,
                  high: float) -> np.ndarray:
    """`rescaled_entropy` of a block of rows; `yb` and `eb` (its shape) are overwritten."""
    lo = block.min(axis=1, keepdims=True)
    span = block.max(axis=1, keepdims=True) - lo
    spread = span > 0
    factor = np.where(spread, (high - low) / np.where(spread, span, 1), 0).astype(block.dtype)
    np.subtract(block, lo, out=yb)
    yb *= factor
    yb -= (high - low) * spread.astype(block.dtype)  # the rescaled row's maximum is `high`
    np.exp(yb, out=eb)
    total = eb.sum(axis=1)
    return np.log(total) - np.einsum("ij,ij->i", eb, yb) / total


def ranked(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's five best classes (`_topk_rows`) and its rescaled entropy, in one pass over the
    scores a block of rows at a time (each block read from memory once), the rows shared out
    among the CPU's cores (NumPy lets go of the GIL inside each operation)."""
    k = min(5, score.shape[1])
    best = np.empty((len(score), k), np.int64)
    entropy = np.empty(len(score), score.dtype)

    def rank_rows(span: tuple[int, int]) -> None:
        y, e, work = (np.empty((min(BLOCK_ROWS, span[1] - span[0]), score.shape[1]), score.dtype)
                      for _ in range(3))
        for start in range(span[0], span[1], BLOCK_ROWS):
            block = score[start : min(start + BLOCK_ROWS, span[1])]
            n = len(block)
            entropy[start : start + n] = _entropy_rows(block, y[:n], e[:n], -10.0, 10.0)
            best[start : start + n] = _topk_rows(block, k, work[:n])

    spans = _row_spans(len(score), score.shape[1])
    if len(spans) == 1:
        rank_rows(spans[0])
    else:
        with ThreadPoolExecutor(len(spans), thread_name_prefix="descgen-metrics") as pool:
            list(pool.map(rank_rows, spans))
    return best, entropy


def _row_spans(rows: int, columns: int) -> list[tuple[int, int]]:
    """Row ranges for the threads of `ranked` (`blocks.metric_threads`), whole blocks each."""
    parts = metric_threads(rows * columns)
    step = -(-rows // parts // BLOCK_ROWS) * BLOCK_ROWS  # whole blocks each
    if parts == 1 or not step:
        return [(0, rows)]
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def metrics(score: RowScores | np.ndarray, labels: np.ndarray) -> Metrics:
    return summarise(score, labels)[0]


def ranked_rows(score: RowScores | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`ranked` of scores made a block of rows at a time (`blocks.blocks`): only one block of
    scores is held."""
    n, classes = as_rows(score).shape
    best = np.empty((n, min(5, classes)), np.int64)
    entropy = np.empty(n, score.dtype if isinstance(score, np.ndarray) else np.float32)
    for start, block in blocks(score):
        best[start : start + len(block)], entropy[start : start + len(block)] = ranked(block)
    return best, entropy


def summarise(score: RowScores | np.ndarray, labels: np.ndarray) -> tuple[Metrics, np.ndarray]:
    """The metrics, and each row's five best classes (for `per_class_recall` and the
    predictions)."""
    best5, entropy = ranked_rows(score)
    hit1 = best5[:, 0] == labels
    hit5 = (best5 == labels[:, None]).any(axis=1)
    counts = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    hits = np.bincount(labels, weights=hit1, minlength=len(counts)) if len(labels) else counts
    present = counts > 0
    recalls = list(hits[present] / counts[present])
    top5_defined = as_rows(score).shape[1] >= 5
    found = Metrics(
        top1=float(hit1.mean()) if len(labels) else 0.0,
        top5=(float(hit5.mean()) if len(labels) else 0.0) if top5_defined else None,
        mean_per_class_recall=float(np.mean(recalls)) if recalls else 0.0,
        n_images=int(len(labels)),
        mean_entropy=float(entropy.mean()) if len(labels) else 0.0,
    )
    return found, best5


def per_class_recall(labels: np.ndarray, n_classes: int, top1: np.ndarray) -> list[float | None]:
    """Each class's top-1 recall (None for a class without images), in class order, from each
    row's best class (`summarise`'s first column)."""
    if not len(labels):
        return [None] * n_classes
    hit = top1 == labels
    counts = np.bincount(labels, minlength=n_classes)
    hits = np.bincount(labels, weights=hit, minlength=n_classes)
    return [float(h / c) if c else None for h, c in zip(hits, counts)]


def explain(image_feature: np.ndarray, class_index: int, ct: ClassTexts,
            text_features: np.ndarray, offsets: np.ndarray, k: int) -> list[dict[str, object]]:
    """The k texts of a class most similar to the image, with their cosine similarities."""
    start, stop = offsets[class_index], offsets[class_index + 1]
    sims = text_features[start:stop] @ image_feature.astype(np.float32)
    order = np.argsort(-sims, kind="stable")[:k]
    texts, labels = ct.texts(class_index), ct.labels(class_index)
    return [{"descriptor": labels[i], "text": texts[i], "similarity": round(float(sims[i]), 6)}
            for i in order]
