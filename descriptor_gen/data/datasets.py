"""Evaluation data sources: an image folder, a CSV manifest, a dataset card by name, a
CLIP_benchmark webdataset folder (`wds:DIR[:SPLIT]`) or a Hugging Face dataset
(`hf:PATH_OR_NAME[:SPLIT]`).

Every source yields images with class indices; a source that names its classes (a card, a
webdataset folder, a Hugging Face ClassLabel) gives their names too, in label order, and a
class list given beside it must agree in size. A label that is not in the class list is an
error naming it. Specs dispatch through a small mapping of sources.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from descriptor_gen.data.cards import card_names, data_root, find_card, need_root
from descriptor_gen.data.images import IMAGE_SUFFIXES, ClassLabels, LabelledImages, image_files_under
from descriptor_gen.data.loaders import card_images
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_text

__all__ = ["IMAGE_SUFFIXES", "LabelledImages", "load_dataset", "load_image_folder",
           "load_csv_manifest", "load_hf"]

def load_image_folder(root: Path, classes: list[str]) -> LabelledImages:
    """ImageFolder layout: one sub-folder per class, named by class name or index."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DescgenError(f"{root}: no class sub-folders")
    paths, labels = [], []
    label_of = ClassLabels(classes)
    for folder in folders:
        label = label_of(folder.name, f"{root}: folder {folder.name!r}")
        images = image_files_under(folder)
        paths += images
        labels += [label] * len(images)
    if not paths:
        raise DescgenError(f"{root}: no image files")
    return LabelledImages(str(root), paths, labels)


def load_csv_manifest(path: Path, classes: list[str]) -> LabelledImages:
    """`path,label` rows (a header row is allowed); paths are relative to the CSV's folder."""
    paths, labels = [], []
    label_of = ClassLabels(classes)
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
        labels.append(label_of(row[1], f"{path}:{number}"))
    if not paths:
        raise DescgenError(f"{path}: no rows")
    return LabelledImages(str(path), paths, labels)


class HFImages:
    """Images of a Hugging Face dataset column, read by index in the DataLoader's workers."""

    def __init__(self, data: Any, column: str) -> None:
        self.data, self.column = data, column

    def __call__(self, index: int) -> Any:
        return self.data[index][self.column]


def _hf_open(datasets: Any, spec: str, target: str, split: str | None) -> Any:
    """A dataset saved with `save_to_disk`, an image folder, or a hub name (network)."""
    path = Path(target)
    if path.is_dir() and any((path / f).is_file() for f in
                             ("dataset_info.json", "state.json", "dataset_dict.json")):
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            chosen = split or ("test" if "test" in data else next(iter(data)))
            if chosen not in data:
                raise DescgenError(f"{spec}: no split {chosen!r} (it has {', '.join(data)})")
            return data[chosen]
        return data
    if path.is_dir():
        return datasets.load_dataset("imagefolder", data_dir=str(path), split=split or "train")
    return datasets.load_dataset(target, split=split or "test")


def load_hf(spec: str, classes: list[str] | None, cache_dir: Path) -> LabelledImages:
    """`hf:PATH_OR_NAME[:SPLIT]` through the `datasets` library: a folder saved with
    `save_to_disk`, a folder of class sub-folders (the `imagefolder` builder), or a hub name.
    Images are decoded from the dataset itself in the workers; nothing is copied."""
    try:
        import datasets
    except ImportError as exc:
        raise DescgenError(f"{spec}: Hugging Face datasets need `pip install datasets`") from exc
    target, _, split = spec[3:].partition(":") if not Path(spec[3:]).exists() else (spec[3:], "", "")
    if not target:
        raise DescgenError(f"{spec}: expected hf:PATH_OR_NAME[:SPLIT]")
    try:
        data = _hf_open(datasets, spec, target, split or None)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DescgenError(f"{spec}: cannot load ({' '.join(str(exc).split())[:160]})") from exc
    image_col = next((c for c in ("image", "img") if c in data.column_names), None)
    label_col = next((c for c in ("label", "labels", "fine_label") if c in data.column_names), None)
    if image_col is None or label_col is None:
        raise DescgenError(f"{spec}: no image/label columns in {data.column_names}")
    names = getattr(data.features[label_col], "names", None)
    raw = list(data[label_col])
    if classes is None and names:
        labels, classes = [int(v) for v in raw], list(names)
    else:
        if classes is None:
            raise DescgenError(f"{spec}: its labels have no names; give --classes")
        shown = [names[v] if names else str(v) for v in raw]
        label_of = ClassLabels(classes)
        labels = [label_of(str(v), f"{spec} row {i}") for i, v in enumerate(shown)]
    return LabelledImages(spec, [f"{spec}#{i}" for i in range(len(labels))], labels,
                          classes=list(names) if names else None,
                          reader=HFImages(data, image_col),
                          fingerprint=f"hf:{getattr(data, '_fingerprint', None) or target}")


FILE_SOURCES: dict[str, Callable[[Path, list[str]], LabelledImages]] = {
    "folder": load_image_folder,
    "csv": load_csv_manifest,
}


def load_dataset(spec: str, classes: list[str] | None, cache_dir: Path,
                 root: Path | str | None = None) -> LabelledImages:
    """Dispatch a dataset spec: a card name (under `root`; `NAME:train` for its train split),
    `wds:DIR[:SPLIT]`,
    `hf:PATH_OR_NAME[:SPLIT]`, a `.csv` manifest, or an image folder.

    Args:
        classes: the class list; None to take the source's own names (cards, webdatasets,
            Hugging Face ClassLabels). When both exist they must agree in size: the list given
            replaces the names, for texts (e.g. DCLIP's names for ImageNet).
        root: the data root for cards (`--data-root`, else `$DESCRIPTOR_GEN_DATA`).
    """
    name, _, split = spec.partition(":")
    found = None if spec.startswith(("wds:", "wds/", "hf:")) else find_card(name)
    if found is not None:
        base = data_root(root)
        card = found.split(split or "test", base)
        data = card_images(card, need_root(card, base), split or "test")
        data.spec = spec
    elif spec.startswith(("wds:", "wds/")):
        from descriptor_gen.data.wds import load_wds  # imports torch: only for wds: specs

        data = load_wds(spec if spec.startswith("wds:") else benchmark_wds(spec, root))
        data.spec = spec
    elif spec.startswith("hf:"):
        data = load_hf(spec, classes, cache_dir)
    else:
        path = Path(spec)
        if classes is None:
            raise DescgenError(f"{spec}: an image folder or CSV needs --classes (a card, wds: or"
                               " hf: source names its classes itself)")
        if path.is_dir():
            return FILE_SOURCES["folder"](path, classes)
        if path.suffix.lower() == ".csv" and path.is_file():
            return FILE_SOURCES["csv"](path, classes)
        known = ", ".join(card_names())
        raise DescgenError(f"{spec}: not a dataset card ({known}), an image folder, a .csv"
                           " manifest, wds:DIR[:SPLIT] or hf:PATH_OR_NAME[:SPLIT]")
    return _with_classes(data, classes)


def benchmark_wds(spec: str, root: Path | str | None) -> str:
    """CLIP_benchmark's `wds/NAME[:SPLIT]` as `wds:FOLDER[:SPLIT]`. The data root is its
    `--dataset_root`: a template with `{dataset}` or `{dataset_cleaned}` (NAME with `/` as
    `-`), or a folder holding the webdataset as `wds_CLEANED` (its Hugging Face repository's
    name, clip-benchmark/wds_CLEANED), `wds/NAME` or `NAME`."""
    name, _, split = spec[len("wds/"):].partition(":")
    cleaned = name.replace("/", "-")
    given = data_root(root)
    if not name or not given:
        raise DescgenError(f"{spec}: CLIP_benchmark's wds/NAME needs --data-root (its"
                           " --dataset_root: the folder holding wds_NAME, or a template with"
                           " {dataset_cleaned})" if name else f"{spec}: no dataset name after wds/")
    text = str(given)
    if "{dataset" in text:
        try:
            candidates = [Path(text.format(dataset=name, dataset_cleaned=cleaned))]
        except (KeyError, IndexError, ValueError) as exc:
            raise DescgenError(f"--data-root {text}: a template takes {{dataset}} and"
                               f" {{dataset_cleaned}} only ({exc})") from exc
    else:
        base = Path(text)
        candidates = [base / f"wds_{cleaned}", base / "wds" / name, base / name, base / cleaned]
    for folder in dict.fromkeys(candidates):
        if (folder / "classnames.txt").is_file():
            return f"wds:{folder}" + (f":{split}" if split else "")
    raise DescgenError(f"{spec}: no webdataset (classnames.txt) at {' or '.join(map(str, dict.fromkeys(candidates)))}")


def _with_classes(data: LabelledImages, classes: list[str] | None) -> LabelledImages:
    if classes is None:
        return data
    if data.class_subset is not None and data.parent_classes is not None \
            and len(classes) == len(data.parent_classes):  # the parent's names (DCLIP's ImageNet)
        data.parent_classes = list(classes)
        data.classes = [classes[i] for i in data.class_subset]
        return data
    if data.classes is not None and len(classes) != len(data.classes):
        raise DescgenError(f"{data.spec}: the class list has {len(classes)} classes but the"
                           f" dataset has {len(data.classes)}")
    data.classes = list(classes)
    return data
