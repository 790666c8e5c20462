"""Few-shot training images: K labelled images per class drawn from a train split,
reproducibly by seed, written beside the run (`split.json`).

The draw is dassl's (CoOp's) and Tip-Adapter's: for each class in label order,
`random.sample` of its images, one Python generator seeded once.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from descriptor_gen.models import Model
from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.data.datasets import LabelledImages, load_dataset
from descriptor_gen.data.subsample import Subsample, subsample_names, subsample_store_indices
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import sha256_text
from descriptor_gen.inputs import read_text, validated


class Shot(Model):
    model_config = ConfigDict(extra="forbid")

    name: str
    label: int = Field(ge=0)


class Split(Model):
    """The images a run was trained on: where from, how drawn, which."""

    model_config = ConfigDict(extra="forbid")

    source: str
    source_identity: str
    shots: int = Field(ge=1)
    seed: int
    classes: list[str]
    items: list[Shot]
    subsample: Subsample = "all"
    all_classes: list[str] | None = None  # a half's: the classes it was drawn from

    def _dump(self, indent: int | None = None) -> str:
        # `all` is left out: a split written before halves existed keeps its identity
        return self.model_dump_json(indent=indent, exclude={"subsample", "all_classes"}
                                    if self.subsample == "all" else None)

    def identity(self) -> str:
        return sha256_text(self._dump())

    def save(self, path: Path) -> None:
        write_text_atomically(path, self._dump(indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Split:
        from descriptor_gen.inputs import parse_json

        return validated(cls, parse_json(read_text(path, "split file"), path), path)


class SubsetReader:
    """Image i of a subset of a source read through the source's own reader (picklable)."""

    def __init__(self, reader: Any, indices: list[int]) -> None:
        self.reader, self.indices = reader, indices

    def __call__(self, index: int) -> Any:
        return self.reader(self.indices[index])


class BytesReader:
    """Images held as encoded bytes (samples taken out of webdataset shards)."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs

    def __call__(self, index: int) -> Any:
        from PIL import Image

        return Image.open(io.BytesIO(self.blobs[index]))


def _by_class(labels: list[int], n_classes: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n_classes)]
    for index, label in enumerate(labels):
        if 0 <= label < n_classes:
            out[label].append(index)
    return out


def draw(source: str, names: list[str], labels: list[int], classes: list[str], shots: int,
         seed: int, identity: str) -> tuple[Split, list[int]]:
    """K of each class's images; an error names a class with none or too few."""
    if shots < 1:
        raise DescgenError(f"--shots {shots}: must be at least 1")
    picker = random.Random(seed)
    chosen: list[int] = []
    for label, indices in enumerate(_by_class(labels, len(classes))):
        if not indices:
            raise DescgenError(f"{source}: class {label} ({classes[label]!r}) has no training images")
        if len(indices) < shots:
            raise DescgenError(f"{source}: class {label} ({classes[label]!r}) has {len(indices)}"
                               f" training images, fewer than --shots {shots}")
        chosen += picker.sample(indices, shots)
    split = Split(source=source, source_identity=identity, shots=shots, seed=seed,
                  classes=list(classes), items=[Shot(name=names[i], label=labels[i]) for i in chosen])
    return split, chosen


def _wds_samples(shards: list[str]) -> list[tuple[str, int]]:
    """(name, label) of every sample of a webdataset, reading only the class files."""
    import webdataset as wds

    from descriptor_gen.data.wds import _label

    out = []
    for shard in shards:
        for sample in wds.WebDataset(shard, shardshuffle=False, nodesplitter=None,
                                     workersplitter=None, empty_check=False):
            out.append((f"{shard}#{sample['__key__']}", _label(sample)))
    return out


def _wds_images(shards: list[str], wanted: list[str]) -> list[bytes]:
    import webdataset as wds

    from descriptor_gen.data.wds import IMAGE_KEYS

    found: dict[str, bytes] = {}
    targets = set(wanted)
    for shard in shards:
        for sample in wds.WebDataset(shard, shardshuffle=False, nodesplitter=None,
                                     workersplitter=None, empty_check=False):
            name = f"{shard}#{sample['__key__']}"
            if name in targets:
                found[name] = next((sample[k] for k in IMAGE_KEYS if k in sample), b"")
    return [found[n] for n in wanted]


def halve(split: Split, chosen: list[int], which: str) -> tuple[Split, list[int]]:
    """The shots of one half of the classes, relabelled from 0 (drawn over all classes first,
    as CoCoOp's datasets do, so that a seed's base shots are its all-class shots' first half)."""
    if which == "all":
        return split, chosen
    keep = subsample_store_indices(len(split.classes), which)
    pairs = [(i, item) for i, item in zip(chosen, split.items) if item.label in keep]
    items = [Shot(name=item.name, label=keep[item.label]) for _, item in pairs]
    return (split.model_copy(update={"classes": subsample_names(split.classes, which),
                                     "items": items, "subsample": which,
                                     "all_classes": list(split.classes)}),
            [i for i, _ in pairs])


def few_shot(source: str, classes: list[str] | None, shots: int, seed: int, cache_dir: Path,
             data_root: Path | None, subsample: str = "all") -> tuple[Split, LabelledImages]:
    """Draw the shots from a source (a card's `NAME:train`, a folder, a CSV, `wds:DIR:train`,
    `hf:`), keep those of one half of the classes (`subsample`), and return the split and the
    shots as a dataset of their own."""
    data = load_dataset(source, classes, cache_dir, data_root)
    names = data.classes or classes or []
    if data.shards is not None:
        samples = _wds_samples(data.shards)
        split, chosen = draw(source, [n for n, _ in samples], [y for _, y in samples], names,
                             shots, seed, data.identity())
        split, chosen = halve(split, chosen, subsample)
        wanted = [samples[i][0] for i in chosen]
        reader: Any = BytesReader(_wds_images(data.shards, wanted))
        paths = wanted
    else:
        split, chosen = draw(source, data.paths, list(data.labels or []), names, shots, seed,
                             data.identity())
        split, chosen = halve(split, chosen, subsample)
        paths = [data.paths[i] for i in chosen]
        reader = SubsetReader(data.reader, chosen) if data.reader is not None else None
    shot_data = LabelledImages(f"{source}#shots", paths, [s.label for s in split.items],
                               classes=list(split.classes), reader=reader,
                               fingerprint=f"shots:{split.identity()}")
    return split, shot_data


def check_apart(split: Split, evaluated: LabelledImages) -> None:
    """Refuse to evaluate a run on the images it was trained on."""
    if split.source_identity == evaluated.identity():
        raise DescgenError(f"the run was trained on {split.source}, the evaluated data itself;"
                           " evaluate on another split")
    trained = {s.name for s in split.items}
    shared = [p for p in evaluated.paths if p in trained]
    if shared:
        raise DescgenError(f"{len(shared)} of the evaluated images are training images of the run"
                           f" (first: {shared[0]}); evaluate on another split")
