"""Dataset cards: data files (`data/datasets/cards/*.yaml`) read into a registry by name.

A card says how to find a benchmark under a data root, which loader reads it, where its class
names and zero-shot templates come from, which published descriptor files fit it, and the
published reference numbers (with their sources) to print beside ours.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import lines_of, read_text, read_yaml, validated
from descriptor_gen.paths import PROJECT_ROOT

DATA_ENV = "DESCRIPTOR_GEN_DATA"
CARDS_DIR = PROJECT_ROOT / "data" / "datasets" / "cards"


class Published(Model):
    """A reference's top-1 (percent), with its standard deviation over seeds when it has one."""

    model_config = ConfigDict(extra="forbid")

    top1: float
    std: float | None = None
    source: str


class Concept(Model):
    """A high-level concept for the dataset's classes ("bird"), as a reference used it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str


class DescriptorFile(Model):
    """A reference's published descriptor file for the dataset, and how its keys pair with the
    card's classes (by name, or by position for files in label order under other names)."""

    model_config = ConfigDict(extra="forbid")

    file: str
    match: Literal["name", "order"] = "name"


class TrainSplit(Model):
    """Where a card's train split differs from its evaluation split: loader options and,
    when it lives elsewhere under the root, its layout."""

    model_config = ConfigDict(extra="forbid")

    options: dict[str, Any]
    layout: str | None = None


class CoopInfo(Model):
    """What the CoOp family (CoOp, CoCoOp, KgCoOp, Tip-Adapter) reads for this dataset: its
    dataset class there, the class-name template of KgCoOp's `CUSTOM_TEMPLATES`, and,
    where CoOp fixed one, its split file (`split_zhou_*.json`, relative to ROOT) with the folder
    the file's image paths are relative to."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    template: str
    zero_shot: str | None = None  # CoOp's zsclip.py template where it is not KgCoOp's
    split: str | None = None
    images: str | None = None


class ClassSubset(Model):
    """A dataset over some of another card's classes (ImageNet-A's and ImageNet-R's 200 of
    ImageNet's 1000), named by WordNet id in a file, one a line (`#` comments): its classes
    are the parent's, in the parent's order, and a store of the parent's classes scores it."""

    model_config = ConfigDict(extra="forbid")

    of: str
    wnids: str

    def ids(self) -> list[str]:
        return [x.strip() for x in lines_of(read_text(PROJECT_ROOT / self.wnids, "WordNet id list"))
                if x.strip() and not x.lstrip().startswith("#")]


COOP_PARTS = {"train": "train", "val": "val", "test-coop": "test"}
"""Card splits read from CoOp's split file, and the file's list each reads."""


class Card(Model):
    """One benchmark dataset.

    Attributes:
        loader: the key of its loader (`descriptor_gen.data.loaders.CARD_LOADERS`).
        options: the loader's options (torchvision's class and split, ...).
        layout: what the data root holds, for the message when it is not there.
        classes: a class-list file (project-relative); None: names from the dataset's own
            files by `rule`.
        templates: a template file (project-relative, `{}` for the class) or the templates.
        train: the train split (`NAME:train`), for few-shot methods; None when the dataset
            has no standard one.
        concept: the high-level concept a reference prefixed its prompts with (WaffleCLIP's
            where it has one, else Comparative-CLIP's).
        descriptors: published descriptor files that fit it, by format (`dclip`, `cupl`).
        published: model -> reference method (`clip`, `dclip`, `waffle`, `swapped`,
            `comparative`, ...) -> reference top-1.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    loader: str
    options: dict[str, Any] = {}
    layout: str
    url: str
    train: TrainSplit | None = None
    classes: str | None = None
    rule: str | None = None
    templates: str | list[str]
    concept: Concept | None = None
    descriptors: dict[str, DescriptorFile] = {}
    published: dict[str, dict[str, Published]] = {}
    coop: CoopInfo | None = None
    subset: ClassSubset | None = None

    def split(self, name: str, root: Path | None = None) -> Card:
        """The card for one of its splits: itself for `test`; for `train`, CoOp's split file
        where the card names one and it is under `root`, else the card's own train split
        (`train-own` always); `val` and `test-coop` from CoOp's split file."""
        if name == "test":
            return self
        has_file = self.coop is not None and self.coop.split is not None
        if name in COOP_PARTS and has_file and (name != "train" or self.train is None or (
                root is not None and (root / str(self.coop.split)).is_file())):
            return self._coop_split(COOP_PARTS[name])
        if name not in ("train", "train-own"):
            raise DescgenError(f"{self.name}:{name}: a card has the splits test (default), train"
                               + (", train-own, val and test-coop (CoOp's split file)" if has_file else ""))
        if self.train is None:
            raise DescgenError(f"{self.name}: has no standard train split (use an image folder,"
                               " a CSV or wds:DIR:train for few-shot images)")
        return self.model_copy(update={"options": {**self.options, **self.train.options},
                                       "layout": self.train.layout or self.layout, "train": None})

    def _coop_split(self, part: str) -> Card:
        assert self.coop is not None and self.coop.split is not None
        return self.model_copy(update={
            "loader": "coop_split", "train": None,
            "options": {"file": self.coop.split, "images": self.coop.images or "", "part": part},
            "layout": f"ROOT/{self.coop.split} (CoOp's split file, from CoOp's DATASETS.md) with"
                      f" its images under ROOT/{self.coop.images or ''}"})

    def class_file_names(self) -> list[str] | None:
        """The class names the card holds as data, or None when they come from the dataset;
        a subset card's are its classes' names in its parent's list."""
        names = self._listed()
        if names is None or self.subset is None:
            return names
        return [names[i] for i in self.subset_indices()]

    def _listed(self) -> list[str] | None:
        if self.classes is None:
            return None
        return [" ".join(x.split()) for x in lines_of(read_text(PROJECT_ROOT / self.classes,
                                                                 "class list")) if x.strip()]

    def parent_names(self) -> list[str] | None:
        """A subset card's whole class list (its parent's names); None for other cards."""
        return self._listed() if self.subset is not None else None

    def subset_indices(self) -> list[int]:
        """A subset card's classes as indices into its parent's (ImageNet's canonical order)."""
        from descriptor_gen.data.wordnet import imagenet_wnids

        assert self.subset is not None
        order = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
        ids = self.subset.ids()
        unknown = [w for w in ids if w not in order]
        if unknown:
            raise DescgenError(f"{self.subset.wnids}: {unknown[0]} is not an ImageNet WordNet id")
        return sorted(order[w] for w in ids)

    def template_list(self) -> list[str]:
        if isinstance(self.templates, list):
            return list(self.templates)
        text = read_text(PROJECT_ROOT / self.templates, "template file")
        return [t for t in lines_of(text) if t.strip()]


def load_cards(folder: Path = CARDS_DIR) -> dict[str, Card]:
    """Every card in `folder`, by name (the file's stem must be the card's name). Each file is
    parsed once per process while its size and date stay the same."""
    return {path.stem: _read_card(path) for path in sorted(folder.glob("*.yaml"))}


def card_names(folder: Path = CARDS_DIR) -> list[str]:
    """The cards' names (their files' stems), without reading them."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def find_card(name: str, folder: Path = CARDS_DIR) -> Card | None:
    """One card by name, reading only its file; None when there is none."""
    path = folder / f"{name}.yaml"
    if not name or "/" in name or not path.is_file():
        return None
    return _read_card(path)


def _read_card(path: Path) -> Card:
    """A card file, checked; its name must be the file's stem."""
    stat = path.stat()
    card = validated(Card, _card_data(str(path), stat.st_size, stat.st_mtime_ns), path)
    if card.name != path.stem:
        raise DescgenError(f"{path}: name {card.name!r} differs from the file name")
    return card


@functools.lru_cache(maxsize=256)
def _card_data(path: str, size: int, mtime_ns: int) -> Any:
    return read_yaml(Path(path), "dataset card")


def coop_template(dataset: str, zero_shot: bool = False) -> str:
    """KgCoOp's class-name template for a dataset spec (`eurosat:train` -> the eurosat card's),
    or with `zero_shot` CoOp's zero-shot CLIP's (zsclip.py); "a photo of a {}." for sources
    without a card, as their ImageNet entry."""
    card = find_card(dataset.partition(":")[0])
    if card is None or card.coop is None:
        return "a photo of a {}."
    return (card.coop.zero_shot or card.coop.template) if zero_shot else card.coop.template


def data_root(given: Path | str | None) -> Path | None:
    """`--data-root`, else `$DESCRIPTOR_GEN_DATA`, else None."""
    value = given if given is not None else os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


def need_root(card: Card, root: Path | None) -> Path:
    if root is None:
        raise DescgenError(f"{card.name}: no data root: give --data-root ROOT (or set"
                           f" ${DATA_ENV}) where ROOT holds {card.layout}")
    if not root.is_dir():
        raise DescgenError(f"--data-root {root}: no such folder")
    return root


def missing(card: Card, root: Path, detail: str) -> DescgenError:
    """The one-line error for a dataset that is not where its card says."""
    return DescgenError(f"{card.name}: not found under {root} ({detail}); expected {card.layout};"
                        f" the dataset is published at {card.url}")
