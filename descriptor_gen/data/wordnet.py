"""ImageNet's WordNet ids: class i of ImageNet-1k (and of the sets keyed by it) is id i."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def imagenet_wnids() -> list[str]:
    """The 1000 ILSVRC-2012 WordNet ids in their canonical (sorted) order: class i is id i.
    timm's list (`ImageNetInfo().label_names()`; timm comes with open_clip), read from its
    data file without importing timm (which imports torch)."""
    spec = importlib.util.find_spec("timm")
    path = Path(spec.origin).parent / "data" / "_info" / "imagenet_synsets.txt" \
        if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        from timm.data import ImageNetInfo

        return list(ImageNetInfo().label_names())
    return [line.strip() for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
