"""Evaluation datasets: an image folder, a CSV manifest, or a Hugging Face dataset.

Every loader returns image paths and class indices into the class list; a label that is not in
the class list is an error naming it. Specs dispatch through a small mapping of loaders.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from descriptor_gen.describe.classes import name_key
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_text

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass
class LabelledImages:
    spec: str
    paths: list[str]
    labels: list[int]


def _label_index(label: str, classes: list[str], where: str) -> int:
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


def load_image_folder(root: Path, classes: list[str]) -> LabelledImages:
    """ImageFolder layout: one sub-folder per class, named by class name or index."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DescgenError(f"{root}: no class sub-folders")
    paths, labels = [], []
    for folder in folders:
        label = _label_index(folder.name, classes, f"{root}: folder {folder.name!r}")
        for image in sorted(folder.rglob("*")):
            if image.suffix.lower() in IMAGE_SUFFIXES and image.is_file():
                paths.append(str(image))
                labels.append(label)
    if not paths:
        raise DescgenError(f"{root}: no image files")
    return LabelledImages(str(root), paths, labels)


def load_csv_manifest(path: Path, classes: list[str]) -> LabelledImages:
    """`path,label` rows (a header row is allowed); paths are relative to the CSV's folder."""
    paths, labels = [], []
    text = read_text(path, "CSV manifest")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise DescgenError(f"{path}: not a CSV file ({exc})") from exc
    for number, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue
        if len(row) < 2:
            raise DescgenError(f"{path}:{number}: expected 'path,label'")
        image = Path(row[0].strip())
        paths.append(str(image if image.is_absolute() else path.parent / image))
        labels.append(_label_index(row[1], classes, f"{path}:{number}"))
    if not paths:
        raise DescgenError(f"{path}: no rows")
    return LabelledImages(str(path), paths, labels)


def load_hf(spec: str, classes: list[str], cache_dir: Path) -> LabelledImages:
    """`hf:NAME[:SPLIT]` (split `test` by default); images are written once under the cache."""
    try:
        import datasets
    except ImportError as exc:
        raise DescgenError(f"{spec}: Hugging Face datasets need `pip install datasets`") from exc
    _, name, *rest = spec.split(":")
    split = rest[0] if rest else "test"
    data = datasets.load_dataset(name, split=split)
    image_col = next((c for c in ("image", "img") if c in data.column_names), None)
    label_col = next((c for c in ("label", "labels", "fine_label") if c in data.column_names), None)
    if image_col is None or label_col is None:
        raise DescgenError(f"{spec}: no image/label columns in {data.column_names}")
    names = getattr(data.features[label_col], "names", None)
    folder = cache_dir / "hf_images" / name.replace("/", "__") / split
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for i, row in enumerate(data):
        target = folder / f"{i:07d}.png"
        if not target.exists():
            row[image_col].save(target)
        label = names[row[label_col]] if names else str(row[label_col])
        paths.append(str(target))
        labels.append(_label_index(label, classes, f"{spec} row {i}"))
    return LabelledImages(spec, paths, labels)


LOADERS: dict[str, Callable[[Path, list[str]], LabelledImages]] = {
    "folder": load_image_folder,
    "csv": load_csv_manifest,
}


def load_dataset(spec: str, classes: list[str], cache_dir: Path) -> LabelledImages:
    """Dispatch a dataset spec: `hf:NAME[:SPLIT]`, a `.csv` manifest, or an image folder."""
    if spec.startswith("hf:"):
        return load_hf(spec, classes, cache_dir)
    path = Path(spec)
    if path.is_dir():
        return LOADERS["folder"](path, classes)
    if path.suffix.lower() == ".csv" and path.is_file():
        return LOADERS["csv"](path, classes)
    raise DescgenError(f"{spec}: not an image folder, a .csv manifest or hf:NAME[:SPLIT]")
