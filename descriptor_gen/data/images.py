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


class ClassLabels:
    """The class index of a label (a class index or a class name; a name given twice in the
    list is ambiguous), for many labels of one class list: names looked up, not scanned."""

    def __init__(self, classes: list[str]) -> None:
        self.count = len(classes)
        self.exact: dict[str, list[int]] = {}
        self.keyed: dict[str, list[int]] = {}
        for i, c in enumerate(classes):
            self.exact.setdefault(c, []).append(i)
            self.keyed.setdefault(name_key(c), []).append(i)

    def __call__(self, label: str, where: str) -> int:
        label = label.strip()
        if label.isdigit():
            index = int(label)
            if index < self.count:
                return index
            raise DescgenError(f"{where}: label {label} is beyond the {self.count} classes")
        return _one_match(self.exact.get(label) or self.keyed.get(name_key(label), []), label,
                          where)


def _one_match(matches: list[int], label: str, where: str) -> int:
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DescgenError(f"{where}: label {label!r} names classes {matches}; use the index")
    raise DescgenError(f"{where}: label {label!r} is not in the class list")


def image_files(folder: Path) -> list[str]:
    """The image files directly in `folder`, sorted by name (one directory read, no stat per
    file: 50,000 ImageNet images are listed in a blink)."""
    return _sorted_in(str(folder), _images_and_folders(str(folder))[0])


def image_files_under(folder: Path) -> list[str]:
    """The image files anywhere under `folder`, in `sorted(folder.rglob("*"))` order (by path
    parts; symlinked folders are not entered, symlinked files count). A folder without
    sub-folders (an ImageNet class) is one directory read and one sort of its names."""
    base = str(folder)
    names, subfolders = _images_and_folders(base)
    if not subfolders:
        return _sorted_in(base, names)
    found: list[tuple[str, ...]] = [(name,) for name in names]
    pending: list[tuple[str, ...]] = [(name,) for name in subfolders]
    while pending:
        parts = pending.pop()
        names, subfolders = _images_and_folders(os.path.join(base, *parts))
        found += [(*parts, name) for name in names]
        pending += [(*parts, name) for name in subfolders]
    return [os.path.join(base, *parts) for parts in sorted(found)]


def _sorted_in(base: str, names: list[str]) -> list[str]:
    """`os.path.join(base, name)` for the names in sorted order, without join's cost each."""
    prefix = os.path.join(base, "")
    return [prefix + name for name in sorted(names)]


def _images_and_folders(path: str) -> tuple[list[str], list[str]]:
    """The image files' and the (not symlinked) folders' names in one folder, unsorted."""
    images, folders = [], []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.name)
            elif _suffix(entry.name) in IMAGE_SUFFIXES and entry.is_file():
                images.append(entry.name)
    return images, folders


def _suffix(name: str) -> str:
    """`os.path.splitext(name)[1].lower()` without its overhead (leading dots are no suffix)."""
    dot = name.rfind(".")
    if dot <= 0 or not name[:dot].strip("."):
        return ""
    return name[dot:].lower()
