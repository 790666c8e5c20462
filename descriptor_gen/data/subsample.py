"""Base-to-novel class halves, CoCoOp's protocol (dassl `DatasetBase.subsample_classes`, as in
KaiyangZhou/CoOp's CoCoOp datasets and the multimodal-prompt-learning repository):
`base` is the first ceil(n/2) classes by label, `new` the rest, relabelled from 0; `all`
keeps every class. The few shots are drawn over all classes first and then filtered (their
datasets draw, then subsample), so the base shots are the all-class draw's first half.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, Literal

from descriptor_gen.data.images import LabelledImages
from descriptor_gen.errors import DescgenError

Subsample = Literal["all", "base", "new"]
SUBSAMPLES: tuple[str, ...] = ("all", "base", "new")


def class_range(n_classes: int, which: str) -> range:
    """The original labels a half keeps, in order (their new labels are 0, 1, ...)."""
    if which not in SUBSAMPLES:
        raise DescgenError(f"--subsample {which!r}: choose {', '.join(SUBSAMPLES)}")
    if which != "all" and n_classes < 2:
        raise DescgenError(f"--subsample {which}: the data has {n_classes} class; base and new"
                           " need at least 2 classes to split")
    half = math.ceil(n_classes / 2)
    return {"all": range(n_classes), "base": range(half), "new": range(half, n_classes)}[which]


def subsample_names(classes: list[str], which: str) -> list[str]:
    return [classes[i] for i in class_range(len(classes), which)]


def subsample_images(data: LabelledImages, classes: list[str], which: str) -> LabelledImages:
    """The images of one half, relabelled from 0, with that half's class names; `all` is the
    data itself. A stream (webdataset) has no labels up front and is refused."""
    kept = class_range(len(classes), which)
    if which == "all":
        return data
    if data.labels is None or data.shards is not None:
        raise DescgenError(f"{data.spec}: --subsample {which} needs labels known before reading"
                           " (a card, folder, CSV or hf: source; not a wds: stream)")
    relabel = {old: new for new, old in enumerate(kept)}
    chosen = [i for i, label in enumerate(data.labels) if label in relabel]
    reader = functools.partial(_picked, data.reader, chosen) if data.reader is not None else None
    fingerprint = f"{data.fingerprint}|subsample:{which}" if data.fingerprint else None
    return dataclasses.replace(
        data, spec=data.spec, paths=[data.paths[i] for i in chosen],
        labels=[relabel[data.labels[i]] for i in chosen], classes=subsample_names(classes, which),
        reader=reader, fingerprint=fingerprint, by_folders=False,
        parent=data.parent or data, rows=[data.rows[i] for i in chosen] if data.rows else chosen)


def _picked(reader: Callable[[int], Any], chosen: list[int], index: int) -> Any:
    return reader(chosen[index])


def subsample_store_indices(n_classes: int, which: str) -> dict[int, int]:
    """Original class index -> index within the half (for a descriptor store over all classes)."""
    return {old: new for new, old in enumerate(class_range(n_classes, which))}


def subsample_records(records: list[Any], n_classes: int, which: str) -> list[Any]:
    """A descriptor store over all classes, restricted to one half and re-indexed (records are
    `DescriptorRecord`s; those of the other half are left out)."""
    return select_records(records, subsample_store_indices(n_classes, which))


def select_records(records: list[Any], keep: dict[int, int]) -> list[Any]:
    """The records of the classes in `keep` (old index -> new index), re-indexed."""
    return [r.model_copy(update={"class_index": keep[r.class_index]})
            for r in records if r.class_index in keep]
