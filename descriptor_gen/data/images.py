"""The shared types of the data stage: a labelled image source and how a label names a class.
Every loader builds a `LabelledImages`; nothing here imports another data module."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from descriptor_gen.describe.classes import name_key
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import files_fingerprint

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass
class LabelledImages:
    """Images with class indices.

    Attributes:
        paths: one name an image: its file, or `SOURCE#INDEX` for images that are not files.
        labels: class indices; None for a stream (a webdataset), whose labels come with it.
        classes: the class names the source itself defines, in label order.
        reader: reads image i when images are not files (an array, a Hugging Face dataset);
            picklable, so that decoding stays in the DataLoader's workers.
        fingerprint: the identity of a source that is not a list of files.
        shards: a webdataset's tar files, streamed in order.
        by_folders: class i is the i-th class folder in sorted order, so a missing folder
            would shift every class after it (checked against the card's class count).
        parent, rows: a subset of `parent`'s images (`rows` of it, in order): its features
            are the parent's rows, so the parent is encoded and cached once for every subset.
        class_subset, parent_classes: classes that are some of another dataset's (ImageNet-A's
            200 of ImageNet's): class j is `parent_classes[class_subset[j]]`, so a descriptor
            store of the parent's classes scores it.
    """

    spec: str
    paths: list[str]
    labels: list[int] | None
    classes: list[str] | None = None
    reader: Callable[[int], Any] | None = None
    fingerprint: str | None = None
    shards: list[str] | None = None
    by_folders: bool = False
    parent: LabelledImages | None = None
    rows: list[int] | None = None
    class_subset: list[int] | None = None
    parent_classes: list[str] | None = None

    def identity(self) -> str:
        """What the image features depend on: the files with their sizes and dates, or the
        source's own fingerprint."""
        return self.fingerprint or files_fingerprint(self.paths)

    def tail(self, start: int) -> LabelledImages:
        """The images from `start` on (a file list's, not a stream's), read as before."""
        if self.shards is not None:
            raise ValueError("a stream has no tail")
        reader = functools.partial(_shifted, self.reader, start) if self.reader else None
        return dataclasses.replace(self, paths=self.paths[start:], reader=reader,
                                   labels=None if self.labels is None else self.labels[start:],
                                   parent=None, rows=None)  # a tail is encoded as it is


def _shifted(reader: Callable[[int], Any], start: int, index: int) -> Any:
    return reader(start + index)


def label_index(label: str, classes: list[str], where: str) -> int:
    """A label is a class index or a class name; a name given twice in the list is ambiguous."""
    label = label.strip()
    if label.isdigit():
        index = int(label)
        if index < len(classes):
            return index
        raise DescgenError(f"{where}: label {label} is beyond the {len(classes)} classes")
    matches = [i for i, c in enumerate(classes) if c == label] or [
        i for i, c in enumerate(classes) if name_key(c) == name_key(label)
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DescgenError(f"{where}: label {label!r} names classes {matches}; use the index")
    raise DescgenError(f"{where}: label {label!r} is not in the class list")


def image_files(folder: Path) -> list[str]:
    """The image files directly in `folder`, sorted by name (one directory read, no stat per
    file: 50,000 ImageNet images are listed in a blink)."""
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries
                       if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file())
    base = str(folder)
    return [os.path.join(base, name) for name in names]


def image_files_under(folder: Path) -> list[str]:
    """The image files anywhere under `folder`, in `sorted(folder.rglob("*"))` order (by path
    parts; symlinked folders are not entered, symlinked files count)."""
    found: list[tuple[str, ...]] = []
    pending: list[tuple[str, ...]] = [()]
    base = str(folder)
    while pending:
        parts = pending.pop()
        with os.scandir(os.path.join(base, *parts)) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((*parts, entry.name))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file():
                    found.append((*parts, entry.name))
    return [os.path.join(base, *parts) for parts in sorted(found)]
