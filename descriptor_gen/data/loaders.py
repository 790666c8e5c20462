"""Loaders of the dataset cards: each reads a dataset exactly as its own download unpacks under
the data root, and returns its images with class indices in the card's label order.

torchvision's dataset classes are used where torchvision has the dataset (always
`download=False`); ImageNet's WordNet-id folders, ImageNetV2, CUB-200-2011 and Caltech-101 with
its background class (as CLIP_benchmark counts it), ImageNet-A and -R (200 of ImageNet's classes)
and ObjectNet have loaders of their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the listing imports neither: only reading an array's images needs them
    import numpy as np
    from PIL import Image

from descriptor_gen.data.cards import Card, missing
from descriptor_gen.data.images import LabelledImages, image_files
from descriptor_gen.data.wordnet import imagenet_wnids
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import files_fingerprint
from descriptor_gen.inputs import parse_json, read_text


def _images_in(folder: Path) -> list[Path]:
    return [Path(p) for p in image_files(folder)]


def _folders(card: Card, root: Path, base: Path) -> list[Path]:
    if not base.is_dir():
        raise missing(card, root, f"no folder {base}")
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    if not folders:
        raise missing(card, root, f"{base} has no class folders")
    return folders


def load_imagenet_val(card: Card, root: Path) -> LabelledImages:
    """ROOT/val/<WordNet id>/ (ROOT/train/ for the train split): every id maps to its index in
    the canonical order, whichever of the 1000 folders are present (never by sorted order
    among those present)."""
    split = str(card.options.get("folder", "val"))
    return _wordnet_folders(card, root, split, {w: i for i, w in enumerate(imagenet_wnids())},
                            f"not an ImageNet-1k WordNet id (expected ROOT/{split}/<WordNet id>/,"
                            f" e.g. {split}/n01440764/)")


def load_imagenet_subset(card: Card, root: Path) -> LabelledImages:
    """ImageNet-A's and ImageNet-R's WordNet-id folders (`ROOT/imagenet-a/<id>/`): label j is
    the subset's j-th class in ImageNet's order, as CLIP_benchmark's mask leaves them."""
    assert card.subset is not None
    wnids = imagenet_wnids()
    order = {wnids[i]: j for j, i in enumerate(card.subset_indices())}
    return _wordnet_folders(card, root, str(card.options["folder"]), order,
                            f"not one of {card.name}'s {len(order)} WordNet ids ({card.subset.wnids})")


def _wordnet_folders(card: Card, root: Path, under: str, index: dict[str, int],
                     refused: str) -> LabelledImages:
    """Images in WordNet-id folders under `root/under`, each labelled by `index`; any other
    folder is refused with `refused`."""
    paths, labels = [], []
    for folder in _folders(card, root, root / under):
        if folder.name not in index:
            raise DescgenError(f"{folder}: {refused}")
        images = _images_in(folder)
        paths += [str(p) for p in images]
        labels += [index[folder.name]] * len(images)
    return LabelledImages(card.name, paths, labels)


OBJECTNET_MAPPINGS = ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json")


def load_objectnet(card: Card, root: Path) -> LabelledImages:
    """ObjectNet 1.0 as its zip unpacks (`objectnet-1.0/images/<folder>/`, `.../mappings/`):
    as CLIP_benchmark (after wise-ft), the 113 classes that ImageNet-1k covers, their folders
    in sorted order, each named by its ObjectNet label in lower case; other folders are left
    out."""
    base = root / "objectnet-1.0"
    maps = [base / "mappings" / name for name in OBJECTNET_MAPPINGS]
    for path in maps:
        if not path.is_file():
            raise missing(card, root, f"no {path}")
    folder_to_label = parse_json(read_text(maps[0], "ObjectNet mapping"), maps[0])
    covered = parse_json(read_text(maps[1], "ObjectNet mapping"), maps[1])
    if not isinstance(folder_to_label, dict) or not isinstance(covered, dict):
        raise DescgenError(f"{base / 'mappings'}: expected JSON objects in {', '.join(OBJECTNET_MAPPINGS)}")
    by_label = {label: folder for folder, label in folder_to_label.items()}
    absent = [label for label in covered if label not in by_label]
    if absent:
        raise DescgenError(f"{maps[1]}: {absent[0]!r} is not in {OBJECTNET_MAPPINGS[0]}")
    folders = sorted(by_label[label] for label in covered)
    paths, labels = [], []
    for index, name in enumerate(folders):
        images = _images_in(base / "images" / name) if (base / "images" / name).is_dir() else []
        paths += [str(p) for p in images]
        labels += [index] * len(images)
    return LabelledImages(card.name, paths, labels,
                          classes=[str(folder_to_label[f]).lower() for f in folders])


def load_imagenetv2(card: Card, root: Path) -> LabelledImages:
    """ImageNetV2's folders are the class indices themselves, `0` .. `999`."""
    base = root / "imagenetv2-matched-frequency-format-val"
    paths, labels = [], []
    for folder in _folders(card, root, base):
        if not folder.name.isdigit() or int(folder.name) >= 1000:
            raise DescgenError(f"{folder}: an ImageNetV2 folder is a class index 0..999")
        images = _images_in(folder)
        paths += [str(p) for p in images]
        labels += [int(folder.name)] * len(images)
    return LabelledImages(card.name, paths, labels)


def _table(path: Path, columns: int) -> list[list[str]]:
    """A whitespace-separated text table of CUB-200-2011 (`id value ...`), checked."""
    rows = []
    for number, line in enumerate(read_text(path, "CUB table").split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=columns - 1)
        if len(parts) != columns or not parts[0].isdigit():
            raise DescgenError(f"{path}:{number}: expected {columns} columns starting with an id")
        rows.append(parts)
    return rows


def cub_name(folder_name: str) -> str:
    """DCLIP's CUB class names (its datasets.py): `001.Black_footed_Albatross` becomes
    `Black-footed Albatross` (words but the last joined by hyphens)."""
    words = folder_name.split(".")[-1].replace("_", " ").split(" ")
    return "-".join(words[:-1]) + " " + words[-1] if len(words) > 2 else " ".join(words)


def load_cub(card: Card, root: Path) -> LabelledImages:
    """CUB-200-2011's test split from its own tables (`is_training_image` 0; the train split:
    1); class id c is index c - 1."""
    base = root / "CUB_200_2011"
    tables = {name: base / f"{name}.txt" for name in
              ("images", "image_class_labels", "train_test_split", "classes")}
    for path in tables.values():
        if not path.is_file():
            raise missing(card, root, f"no file {path}")
    files = {int(i): f for i, f in _table(tables["images"], 2)}
    label = {int(i): int(c) - 1 for i, c in _table(tables["image_class_labels"], 2)}
    wanted = "1" if card.options.get("split") == "train" else "0"
    test = [int(i) for i, is_train in _table(tables["train_test_split"], 2) if is_train == wanted]
    names = [cub_name(n) for _, n in _table(tables["classes"], 2)]
    paths, labels = [], []
    for image_id in test:
        if image_id not in files or image_id not in label:
            raise DescgenError(f"{tables['train_test_split']}: image {image_id} is not in"
                               " images.txt and image_class_labels.txt")
        if not 0 <= label[image_id] < len(names):
            raise DescgenError(f"{tables['image_class_labels']}: image {image_id} has class"
                               f" {label[image_id] + 1}, beyond the {len(names)} classes")
        paths.append(str(base / "images" / files[image_id]))
        labels.append(label[image_id])
    return LabelledImages(card.name, paths, labels, classes=names)


def load_caltech101(card: Card, root: Path) -> LabelledImages:
    """Caltech-101 as CLIP_benchmark reads it: every folder of 101_ObjectCategories, the
    background class included, numbered by sorted folder name (102 classes)."""
    paths, labels = [], []
    folders = _folders(card, root, root / "caltech101" / "101_ObjectCategories")
    for index, folder in enumerate(folders):
        images = _images_in(folder)
        paths += [str(p) for p in images]
        labels += [index] * len(images)
    return LabelledImages(card.name, paths, labels, classes=[f.name for f in folders],
                          by_folders=True)


class ArrayImages:
    """Images held in an array (CIFAR), read by index in the DataLoader's workers."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def __call__(self, index: int) -> Image.Image:
        from PIL import Image

        return Image.fromarray(self.data[index])


_BY_FOLDERS = {"EuroSAT"}  # torchvision ImageFolder: classes are the sorted folders

# Where torchvision keeps each dataset's file list: (files attribute, labels attribute), or
# one attribute of (path, label) pairs.
_TV_FILES: dict[str, tuple[str, str | None]] = {
    "Food101": ("_image_files", "_labels"), "DTD": ("_image_files", "_labels"),
    "FGVCAircraft": ("_image_files", "_labels"), "Flowers102": ("_image_files", "_labels"),
    "SUN397": ("_image_files", "_labels"), "OxfordIIITPet": ("_images", "_labels"),
    "StanfordCars": ("_samples", None), "Places365": ("imgs", None), "EuroSAT": ("samples", None),
}


def load_torchvision(card: Card, root: Path) -> LabelledImages:
    """A torchvision dataset class under ROOT (`download=False`): its own file list and labels,
    so that decoding happens in our DataLoader and features are cached per file."""
    import torchvision.datasets as tvd

    options = dict(card.options)
    cls = getattr(tvd, options.pop("dataset"))
    try:
        ds = cls(str(root), download=False, **options)
    except (RuntimeError, FileNotFoundError, OSError, KeyError, ValueError, IndexError) as exc:
        raise missing(card, root, _untold(f"torchvision {cls.__name__}: {' '.join(str(exc).split())[:160]}")) from exc
    except (AttributeError, TypeError) as exc:  # a layout file of the wrong type (a list for a mapping)
        raise DescgenError(f"{card.name}: a file of its layout under {root} is not what"
                           f" {cls.__name__} reads ({type(exc).__name__}: {' '.join(str(exc).split())[:120]});"
                           f" expected {card.layout}") from exc
    names = list(getattr(ds, "classes", []) or [])
    if cls.__name__ in ("CIFAR10", "CIFAR100"):
        files = [Path(root) / ds.base_folder / f for f, _ in (ds.train_list if ds.train else ds.test_list)]
        paths = [f"{files[0]}#{i}" for i in range(len(ds.data))]
        return LabelledImages(card.name, paths, [int(t) for t in ds.targets], classes=names,
                              reader=ArrayImages(ds.data), fingerprint=files_fingerprint(map(str, files)))
    files_attr, labels_attr = _TV_FILES[cls.__name__]
    if labels_attr is None:
        pairs = [(str(p), int(t)) for p, t in getattr(ds, files_attr)]
    else:
        pairs = [(str(p), int(t)) for p, t in zip(getattr(ds, files_attr), getattr(ds, labels_attr))]
    pairs.sort()  # some classes list files in directory order (SUN397): one order everywhere
    return LabelledImages(card.name, [p for p, _ in pairs], [t for _, t in pairs], classes=names,
                          by_folders=cls.__name__ in _BY_FOLDERS)


def _coop_items(path: Path, part: str) -> list[tuple[str, int, str]]:
    """One list of a CoOp split file: `{"train"|"val"|"test": [[path, label, classname], ...]}`."""
    data = parse_json(read_text(path, "CoOp split file"), path)
    items = data.get(part) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise DescgenError(f"{path}: expected a JSON object with a {part!r} list (CoOp's"
                           " split_zhou format)")
    out = []
    for number, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], int) and not isinstance(item[1], bool) and item[1] >= 0
                and isinstance(item[2], str)):
            raise DescgenError(f"{path}: {part}[{number}] is not [path, label, classname]")
        out.append((item[0], item[1], item[2]))
    return out


def load_coop_split(card: Card, root: Path) -> LabelledImages:
    """A list of CoOp's split file (`split_zhou_*.json`), image paths relative to the card's
    image folder, labels as the file numbers them; class names from the file, in label order
    (the card's class list or rule then names them)."""
    path = root / str(card.options["file"])
    if not path.is_file():
        raise missing(card, root, f"no file {path}")
    items = _coop_items(path, str(card.options["part"]))
    names: dict[int, str] = {}
    for _, label, classname in items:
        if names.setdefault(label, classname) != classname:
            raise DescgenError(f"{path}: label {label} is both {names[label]!r} and {classname!r}")
    if sorted(names) != list(range(len(names))):
        raise DescgenError(f"{path}: its {card.options['part']} labels are not 0..{len(names) - 1}")
    base = root / str(card.options["images"])
    return LabelledImages(card.name, [str(base / p) for p, _, _ in items],
                          [label for _, label, _ in items],
                          classes=[names[i] for i in range(len(names))], by_folders=True)


def _untold(message: str) -> str:
    """torchvision's advice to download is not ours: descgen never downloads."""
    return message.replace("You can use download=True to download it", "get it as its card says")


CARD_LOADERS: dict[str, Callable[[Card, Path], LabelledImages]] = {
    "imagenet_val": load_imagenet_val, "imagenetv2": load_imagenetv2, "cub": load_cub,
    "imagenet_subset": load_imagenet_subset, "objectnet": load_objectnet,
    "caltech101": load_caltech101, "torchvision": load_torchvision, "coop_split": load_coop_split,
}


def _places(name: str) -> str:
    """`/a/apartment_building/outdoor` -> `apartment building-outdoor` (DCLIP's key, spaced)."""
    return re.sub(r"^/[a-z]/", "", name).replace("/", "-").replace("_", " ")


# How a card without a class-list file names its classes from the dataset's own names.
RULES: dict[str, Callable[[str], str]] = {
    "as_is": lambda n: n,
    "underscores": lambda n: n.replace("_", " "),
    "sun397": lambda n: n.replace("_", " ").replace("/", " "),
    "places": _places,
    "cub_dclip": lambda n: n,  # the CUB loader already names its classes by DCLIP's rule
}


def card_images(card: Card, root: Path, split: str = "test") -> LabelledImages:
    """The card's dataset (its `split`) under `root`, with its class names in label order."""
    if card.loader not in CARD_LOADERS:
        raise DescgenError(f"{card.name}: unknown loader {card.loader!r}")
    data = CARD_LOADERS[card.loader](card, root)
    if not data.paths and split != "test":
        raise DescgenError(f"{card.name}:{split}: its {split} split lists no images under {root}"
                           f" (the test split may be there: descgen datasets {card.name}); expected"
                           f" {card.layout}")
    listed = card.class_file_names()
    if listed is not None and data.by_folders and len(data.classes or []) != len(listed):
        raise missing(card, root, f"{len(data.classes)} classes where the card has {len(listed)};"
                      " a class folder is missing or extra")
    if listed is not None:
        data.classes = listed
    if card.subset is not None:
        data.class_subset, data.parent_classes = card.subset_indices(), card.parent_names()
    elif card.rule is not None:
        data.classes = [RULES[card.rule](n) for n in data.classes or []]
    if not data.classes:
        raise DescgenError(f"{card.name}: no class names (the card names no class list)")
    if not data.paths:
        raise missing(card, root, "no images")
    beyond = [label for label in data.labels if not 0 <= label < len(data.classes)]
    if beyond:
        raise DescgenError(f"{card.name}: label {beyond[0]} is beyond its {len(data.classes)} classes")
    return data

