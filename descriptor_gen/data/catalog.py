"""What `descgen datasets` prints: the cards with whether each is found, or one dataset's
class names."""

from __future__ import annotations

from pathlib import Path

from descriptor_gen.data.cards import data_root, load_cards
from descriptor_gen.data.datasets import load_dataset
from descriptor_gen.errors import DescgenError


def card_table(root: Path | str | None) -> list[str]:
    """A line per card: name, whether its data is under the root (and how many images; `+ CoOp
    split` when CoOp's split file is there too, for NAME:train/val/test-coop), title."""
    where = data_root(root)
    lines = [f"data root: {where if where is not None else '(none: give --data-root or set DESCRIPTOR_GEN_DATA)'}"]
    for name, card in load_cards().items():
        status = "-"
        if where is not None:
            try:
                found = load_dataset(name, None, Path("."), where)
                status = f"found ({len(found.paths)} images)"
                if card.coop is not None and card.coop.split and (where / card.coop.split).is_file():
                    status += " + CoOp split"
            except DescgenError:
                status = "not found"
        lines.append(f"{name:22} {status:36} {card.title}")
    return lines


def dataset_classes(spec: str, root: Path | str | None, cache_dir: Path) -> list[str]:
    """A dataset's class names in label order: the card's list when it holds one (no data
    needed), else read from the data."""
    cards = load_cards()
    if spec in cards and cards[spec].classes is not None and data_root(root) is None:
        return cards[spec].class_file_names() or []
    data = load_dataset(spec, None, cache_dir, root)  # under a root: the check eval makes
    if not data.classes:
        raise DescgenError(f"{spec}: the source names no classes")
    return data.classes
