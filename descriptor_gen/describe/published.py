"""Import of published descriptor files (DCLIP, WaffleCLIP, CuPL) into the store.

Texts are kept exactly as published, repeats included: DCLIP and CuPL average over their lists
as they stand (a repeated sentence weighs twice), and CLIP's tokenizer normalises whitespace
itself. Only blank texts are dropped; a class left with none is recorded with an error and
scored by the `--on-empty` policy (`blank` is DCLIP's own `['']`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from descriptor_gen.models import Model
from descriptor_gen.describe.classes import name_key
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import parse_json, read_text
from descriptor_gen.describe.store import DescriptorRecord

PublishedFormat = Literal["dclip", "cupl"]
FORMATS: tuple[str, ...] = ("dclip", "cupl")
MatchBy = Literal["name", "order"]
MATCHES: tuple[str, ...] = ("name", "order")


class ImportReport(Model):
    """How a published file's keys lined up with the class list, by name."""

    matched: int
    renamed: list[str] = []
    missing_in_file: list[str]
    unused_in_file: list[str]
    empty_in_file: list[str]

    def lines(self) -> list[str]:
        out = [f"matched {self.matched} classes"]
        for label, names in (
            ("matched under another name", self.renamed),
            ("in the class list but not in the file", self.missing_in_file),
            ("in the file but not in the class list", self.unused_in_file),
            ("with an empty list in the file", self.empty_in_file),
        ):
            if names:
                out.append(f"{len(names)} {label}: {', '.join(names)}")
        return out


def load_published(path: Path, fmt: str) -> dict[str, list[str]]:
    """Read `{class name: [text, ...]}`; errors name the file, and the key at fault."""
    if fmt not in FORMATS:
        raise DescgenError(f"unknown import format {fmt!r} (choose {', '.join(FORMATS)})")
    data = parse_json(read_text(path, "published descriptor file"), path)
    if not isinstance(data, dict):
        raise DescgenError(f"{path}: expected a JSON object of class name -> list of {fmt} texts")
    for key, value in data.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DescgenError(f"{path}: entry {key!r} is not a list of strings")
    return data


def _kept_texts(texts: list[str]) -> list[str]:
    return [t for t in texts if t.strip()]


def _match_by_name(classes: list[str], entries: dict[str, list[str]]) -> list[str | None]:
    """The file key for each class: the exact name, else the name ignoring case and underscores."""
    loose = {name_key(k): k for k in entries}
    return [c if c in entries else loose.get(name_key(c)) for c in classes]


def _match_by_order(
    classes: list[str], entries: dict[str, list[str]], path: Path
) -> list[str | None]:
    """The file's i-th key for class i (DCLIP's ImageNet file is in index order, other names)."""
    if len(entries) != len(classes):
        raise DescgenError(
            f"{path}: {len(entries)} entries but {len(classes)} classes; matching by order needs"
            " one entry per class"
        )
    return list(entries)


def import_published(
    path: Path | str, fmt: str, classes: list[str], match: MatchBy = "name",
    classes_file: Path | str | None = None,
) -> tuple[list[DescriptorRecord], ImportReport]:
    """Turn a published file into one record per class of `classes`.

    Args:
        path: the published JSON file.
        fmt: `dclip` (short descriptors) or `cupl` (full sentences).
        classes: the class list; record i is class i.
        match: `name` pairs classes and keys by name (loosely: case and underscores ignored);
            `order` pairs the i-th key with class i, for files in index order with other names.

    A class without an entry, or with an empty one, gets a record with no descriptors and an
    `error` saying so, so that the store stays complete and scoring can fall back.
    """
    path = Path(path)
    entries = load_published(path, fmt)
    params = {
        "format": fmt,
        "source": str(path),
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        **({"classes_file": str(classes_file)} if classes_file is not None else {}),
    }
    if match not in MATCHES:
        raise DescgenError(f"unknown match {match!r} (choose {', '.join(MATCHES)})")
    keys = _match_by_order(classes, entries, path) if match == "order" else _match_by_name(
        classes, entries
    )
    records = []
    for index, (name, key) in enumerate(zip(classes, keys)):
        raw = entries[key] if key is not None else []
        descriptors = _kept_texts(raw)
        error = None
        if key is None:
            error = f"no entry for this class in {path.name}"
        elif not descriptors:
            error = f"{'empty list' if not raw else 'only blank texts'} in {path.name}"
        records.append(
            DescriptorRecord(
                class_index=index,
                class_name=name,
                descriptors=descriptors,
                backend="import",
                params=params if key is None else {**params, "key": key},
                raw=raw,
                error=error,
            )
        )
    used = {k for k in keys if k is not None}
    report = ImportReport(
        matched=sum(k is not None for k in keys),
        renamed=[f"{i}: {c} <- {k}" for i, (c, k) in enumerate(zip(classes, keys)) if k and k != c],
        missing_in_file=[c for c, k in zip(classes, keys) if k is None],
        unused_in_file=[k for k in entries if k not in used],
        empty_in_file=[
            c for c, k, r in zip(classes, keys, records) if k is not None and not r.descriptors
        ],
    )
    return records, report
