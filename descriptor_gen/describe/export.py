"""A descriptor store in the formats other tools read (`descgen export`):

- `dclip`: DCLIP's and WaffleCLIP's `{class name: [descriptor, ...]}`;
- `cupl`: CuPL's `{class name: [sentence, ...]}`, each descriptor as the text descgen encodes;
- `clip_benchmark`: CLIP_benchmark's `--custom_template_file`, `{dataset: {class name:
  [sentence, ...]}}` (its zero-shot classifier reads `templates[classname]`).

`descgen import` of a `dclip` export gives back the store's classes and descriptors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from descriptor_gen.describe.store import DescriptorRecord
from descriptor_gen.errors import DescgenError

EXPORT_FORMATS: tuple[str, ...] = ("dclip", "cupl", "clip_benchmark")
Sentence = Callable[[str, str], str]  # (class name, descriptor) -> text
Fallback = Callable[[str], list[str]]  # class name -> texts of a class without descriptors


def _names(records: list[DescriptorRecord], names: list[str] | None) -> list[str]:
    if names is None:
        return [r.class_name for r in records]
    if len(names) != len(records):
        raise DescgenError(f"--classes has {len(names)} names and the store {len(records)} classes")
    return names


def _keyed(names: list[str], lists: list[list[str]]) -> dict[str, list[str]]:
    """One key per name; a name used twice (ImageNet's `missile`, `sunglasses`) is one key when
    its lists agree, as CuPL's files have it, and an error when they differ."""
    out: dict[str, list[str]] = {}
    first: dict[str, int] = {}
    for index, (name, texts) in enumerate(zip(names, lists)):
        if name in out and out[name] != texts:
            raise DescgenError(f"class name {name!r} is classes {first[name]} and {index} with"
                               " different descriptors: a JSON object holds one list a name;"
                               " give --classes with distinct names")
        out.setdefault(name, texts)
        first.setdefault(name, index)
    return out


def export_store(records: list[DescriptorRecord], fmt: str, names: list[str] | None = None,
                 sentence: Sentence | None = None, fallback: Fallback | None = None,
                 dataset: str | None = None) -> dict[str, Any]:
    """The JSON object of `fmt` for a complete store (records in class order)."""
    if fmt not in EXPORT_FORMATS:
        raise DescgenError(f"unknown export format {fmt!r} (choose {', '.join(EXPORT_FORMATS)})")
    ordered = sorted(records, key=lambda r: r.class_index)
    if [r.class_index for r in ordered] != list(range(len(ordered))):
        raise DescgenError("the store is not complete (class indices are not 0..n-1): finish"
                           " it with descgen generate first")
    keys = _names(ordered, names)
    if fmt == "dclip":
        return _keyed(keys, [list(r.descriptors) for r in ordered])
    assert sentence is not None and fallback is not None
    texts = [[sentence(name, d) for d in r.descriptors] or fallback(name)
             for name, r in zip(keys, ordered)]
    table = _keyed(keys, texts)
    if fmt == "cupl":
        return table
    if not dataset:
        raise DescgenError("--format clip_benchmark needs --dataset NAME (CLIP_benchmark's"
                           " dataset name, e.g. imagenet1k: its templates file is keyed by it)")
    return {dataset: table}
