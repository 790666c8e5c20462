"""Results files of the sweeps: one JSON line per cell, each keyed by the hash of its identity.

A cell's identity is everything that can change its numbers (models and weights, data and class
list, text forms, prompt texts, generation settings, method); a re-run skips exactly the cells
whose identity is already in the file, so changing any input runs the affected cells again
instead of reporting a stale number.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from descriptor_gen.atomic import writing
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import sha256_text
from descriptor_gen.inputs import parse_json, read_text
from descriptor_gen.describe.store import repair_torn_tail


def cell_id(identity: dict[str, Any]) -> str:
    """A stable hash of a cell's identity (key order does not matter)."""
    return sha256_text(json.dumps(identity, sort_keys=True, ensure_ascii=False))


_ROW_START = '{"experiment":'


def done_cells(results: Path, repair: bool = False) -> set[str]:
    """Cell ids already in a results file; rows without one (older files) count as not done.

    A torn last line (a killed run's) is not counted, and with `repair` it is cut off before
    the run appends; any other line that is not a row is an error naming it, and a file that is
    not a results file of ours is never changed.
    """
    if not results.exists():
        return set()
    text = read_text(results, "results file")
    lines = text.split("\n")
    tail = lines.pop()
    if tail.strip() and not tail.startswith(_ROW_START):
        raise DescgenError(f"{results}: not a results file made by descgen (its last line is not"
                           " a row); it is left as it is")
    done = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = parse_json(line, results, number)
        if not isinstance(row, dict):
            raise DescgenError(f"{results}:{number}: expected a row (a JSON object), got"
                               f" {type(row).__name__}")
        if isinstance(row.get("cell"), str):
            done.add(row["cell"])
    if repair and tail:
        repair_torn_tail(results)
    return done


def read_rows(results: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of every row of a results file; a torn last line (a killed run's) is
    skipped, any other line that is not a JSON object is an error naming it."""
    text = read_text(results, "results file")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines) and not text.endswith("\n"):
            try:
                json.loads(line)
            except json.JSONDecodeError:
                continue
        row = parse_json(line, results, number)
        if not isinstance(row, dict):
            raise DescgenError(f"{results}:{number}: expected a JSON object, got"
                               f" {type(row).__name__}")
        rows.append((number, row))
    return rows


def append_row(results: Path, row: dict[str, Any]) -> None:
    with writing(results), open(results, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")


class CellClock:
    """A long run's line per finished cell: `[k/N] what  (elapsed, ETA)`, printed whether or
    not stderr is a terminal (a night's log shows how far it got and how long is left)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.perf_counter()

    def skip(self) -> None:
        """A planned cell that will not run (already done, or skipped with its reason)."""
        self.total -= 1

    def line(self, text: str) -> str:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * max(self.total - self.done, 0)
        return (f"[{self.done}/{self.total}] {text}  ({duration(elapsed)} elapsed"
                + (f", about {duration(left)} left)" if self.done < self.total else ")"))


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def bars() -> bool:
    """Progress bars inside a long run (generation, encoding, training): on a terminal only;
    a piped log gets the per-cell lines alone."""
    import sys

    return sys.stderr.isatty()


SKIPPED = "skipped.json"  # the cells of the last run that did not run, and why (for the report)


def read_skipped(path: Path) -> dict[str, list[dict[str, Any]]]:
    """`skipped.json`: per suite, its cells not run, each a dict with dataset, column, reason
    and (since several CLIPs share a folder) the CLIP; a missing or broken file is empty."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {name: [e for e in entries if isinstance(e, dict)]
            for name, entries in found.items() if isinstance(entries, list)}
