"""Results files of the sweeps: one JSON line per cell, each keyed by the hash of its identity.

A cell's identity is everything that can change its numbers (models and weights, data and class
list, text forms, prompt texts, generation settings, method); a re-run skips exactly the cells
whose identity is already in the file, so changing any input runs the affected cells again
instead of reporting a stale number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from descriptor_gen.hashing import sha256_text


def cell_id(identity: dict[str, Any]) -> str:
    """A stable hash of a cell's identity (key order does not matter)."""
    return sha256_text(json.dumps(identity, sort_keys=True, ensure_ascii=False))


def done_cells(results: Path) -> set[str]:
    """Cell ids already in a results file; rows without one (older files) count as not done,
    and a torn last line from a killed run is skipped (that cell runs again)."""
    if not results.exists():
        return set()
    done = set()
    for line in results.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("cell"), str):
            done.add(row["cell"])
    return done


def append_row(results: Path, row: dict[str, Any]) -> None:
    with open(results, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
