"""The descriptor store: JSONL, one validated record per class, keyed by class index."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonlines
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from descriptor_gen.models import Model
from descriptor_gen.atomic import replace_atomically, writing
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_text
from descriptor_gen.secrets import redact
from descriptor_gen.describe.prompts import PromptOptions


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class DescriptorRecord(Model):
    """One class's descriptors with where they came from.

    `error` is null when there are descriptors, and says why when there are none. `truncated`
    says that an answer stopped at the token limit (its cut last item was dropped, or kept by
    the `dclip` parser, as the reference did); `finish_reasons` are the answers' own, in the order
    of `raw`. Descriptors may repeat: an imported file keeps its lists as published.
    `style` says how the prompts were made when not by the few-shot `options`: CuPL's questions
    or comparative pairs (with the neighbours asked about); None for the few-shot prompt.
    """

    model_config = ConfigDict(extra="forbid")

    class_index: int = Field(ge=0)
    class_name: str = Field(min_length=1)
    descriptors: list[str]
    options: PromptOptions | None = None
    style: dict[str, Any] | None = None
    prompt_sha256: str | None = None
    backend: str
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    raw: list[str] = Field(default_factory=list)
    finish_reasons: list[str | None] = Field(default_factory=list)
    truncated: bool = False
    created_at: datetime = Field(default_factory=utc_now)
    error: str | None = None

    @field_validator("descriptors")
    @classmethod
    def _no_blank_descriptors(cls, value: list[str]) -> list[str]:
        if any(not d.strip() for d in value):
            raise ValueError("descriptors must be non-empty strings")
        return value

    @field_validator("error")
    @classmethod
    def _no_secrets(cls, value: str | None) -> str | None:
        """An error may quote a server's body, which may quote credentials."""
        return redact(value) if value else value

    @model_validator(mode="after")
    def _error_iff_empty(self) -> DescriptorRecord:
        if not self.descriptors and not self.error:
            raise ValueError("a record with no descriptors must say why in 'error'")
        if self.descriptors and self.error:
            raise ValueError("a record with descriptors must have 'error' null")
        return self


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def parse_record_line(line: str, path: Path, number: int) -> DescriptorRecord:
    """Validate one JSONL line; errors name the file and line."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DescgenError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    try:
        return DescriptorRecord.model_validate(data)
    except ValidationError as exc:
        raise DescgenError(f"{path}:{number}: invalid record: {_first_error(exc)}") from exc


def read_store(path: Path | str, *, skip_torn_tail: bool = False) -> list[DescriptorRecord]:
    """Read and validate a store; a class index given twice is an error naming both lines.

    Records are split on newlines only: a descriptor may hold any other Unicode line break.
    `skip_torn_tail` ignores a last line without its newline (a killed run's half record).
    """
    path = Path(path)
    lines = read_text(path, "descriptor store").split("\n")
    if skip_torn_tail and lines and lines[-1]:
        lines = lines[:-1]
    records: list[DescriptorRecord] = []
    first_line: dict[int, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = parse_record_line(line, path, number)
        if record.class_index in first_line:
            raise DescgenError(
                f"{path}:{number}: class index {record.class_index} ({record.class_name!r})"
                f" already given on line {first_line[record.class_index]}"
            )
        first_line[record.class_index] = number
        records.append(record)
    return records


def write_store(path: Path | str, records: Iterable[DescriptorRecord]) -> None:
    """Write a whole store atomically (temp file, then rename), sorted by class index."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(records, key=lambda r: r.class_index)

    def write_to(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            writer = jsonlines.Writer(handle, compact=True)
            for record in ordered:
                writer.write(record.model_dump(mode="json"))
            handle.flush()
            os.fsync(handle.fileno())

    replace_atomically(path, write_to)


def descriptors_by_index(records: Iterable[DescriptorRecord]) -> dict[int, list[str]]:
    return {r.class_index: r.descriptors for r in records}


def check_against_classes(
    records: list[DescriptorRecord], classes: list[str], path: Path | str
) -> None:
    """Refuse a store whose indices or names disagree with the class list it is used with."""
    for record in records:
        if record.class_index >= len(classes):
            raise DescgenError(
                f"{path}: class index {record.class_index} ({record.class_name!r}) is beyond the"
                f" class list's {len(classes)} classes"
            )
        expected = classes[record.class_index]
        if " ".join(record.class_name.split()) != expected:
            raise DescgenError(
                f"{path}: class index {record.class_index} is {record.class_name!r} in the store"
                f" but {expected!r} in the class list" + _names_hint(records, classes)
            )


def _names_hint(records: list[DescriptorRecord], classes: list[str]) -> str:
    """How to score with the store's own names, when it says where they came from."""
    differ = sum(1 for r in records if r.class_index < len(classes)
                 and " ".join(r.class_name.split()) != classes[r.class_index])
    files = {str((r.params or {}).get("classes_file")) for r in records
             if (r.params or {}).get("classes_file")}
    if len(files) == 1:
        return (f" ({differ} of {len(records)} names differ); the store was made with --classes"
                f" {files.pop()}: give that --classes to score with its names")
    return f" ({differ} of {len(records)} names differ); give --classes with the store's names"


def select_records(records: list[DescriptorRecord], which: str) -> list[DescriptorRecord]:
    """Records of one class by index (`744`) or by name (all classes of that name)."""
    if which.isascii() and which.isdigit():
        chosen = [r for r in records if r.class_index == int(which)]
    else:
        chosen = [r for r in records if r.class_name == which]
    if not chosen:
        raise DescgenError(f"no class {which!r} in the store")
    return chosen


def summarize_store(records: list[DescriptorRecord]) -> list[str]:
    """Counts a user checks before scoring: classes, descriptors per class, classes without any."""
    counts = [len(r.descriptors) for r in records]
    failed = [r for r in records if r.error]
    lines = [f"classes: {len(records)}"]
    if counts:
        mean = sum(counts) / len(counts)
        lines.append(f"descriptors per class: mean {mean:.2f}, min {min(counts)}, max {max(counts)}")
    lines.append(f"classes without descriptors: {len(failed)}")
    lines.extend(f"  {r.class_index} {r.class_name}: {r.error}" for r in failed)
    truncated = sum(r.truncated for r in records)
    if truncated:
        lines.append(f"classes with an answer cut at the token limit: {truncated}")
    return lines


def repair_torn_tail(path: Path) -> bool:
    """Cut a last line that a killed run left without its newline; True when one was cut."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return False
        handle.truncate(data.rfind(b"\n") + 1)
        return True


_RECORD_START = '{"class_index":'


def read_own_store(path: Path) -> list[DescriptorRecord]:
    """The records of a store this tool wrote, a torn last line (a killed run's) not counted.

    Anything else (a published JSON file, a text file, a store with a broken line in the
    middle) is refused, naming the line, and is never changed.
    """
    text = read_text(path, "descriptor store")
    tail = text[text.rfind("\n") + 1 :]
    if tail.strip() and not tail.startswith(_RECORD_START):
        raise DescgenError(f"{path}: not a descriptor store made by descgen (its last line is not"
                           " a record); it is left as it is: choose another --out")
    try:
        return read_store(path, skip_torn_tail=True)
    except DescgenError as exc:
        raise DescgenError(f"not a descriptor store made by descgen: {exc}; it is left as it is:"
                           " choose another --out") from exc


def read_store_for_resume(
    path: Path, classes: list[str], *, overwrite: bool = False, repair: bool = True,
    retry_failed: bool = False,
) -> list[DescriptorRecord]:
    """The records a run can keep from its output, which must be a store this tool wrote.

    Args:
        overwrite: start afresh: the store is removed (only a store of ours).
        repair: cut a torn last line off the file, and drop the error records that
            `retry_failed` asks again; without it (a dry run) the file is not changed.
        retry_failed: classes whose record says why they have no descriptors are asked again;
            their records are replaced by the new ones.
    """
    if not path.exists():
        return []
    records = read_own_store(path)
    if overwrite:
        path.unlink()
        return []
    check_against_classes(records, classes, path)
    kept = [r for r in records if not (retry_failed and r.error)]
    if repair:
        repair_torn_tail(path)
        if len(kept) < len(records):
            write_store(path, kept)
    return kept


class StoreAppender:
    """Appends records one line at a time, flushed to disk, so a killed run loses nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None

    def __enter__(self) -> StoreAppender:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")
        return self

    def append(self, record: DescriptorRecord) -> None:
        with writing(self.path):
            self._handle.write(record.model_dump_json() + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def __exit__(self, *exc: object) -> None:
        try:
            self._handle.close()
        except OSError:
            if not exc[0]:  # an error already on its way is the one to report
                raise


def store_style(record: DescriptorRecord) -> str:
    """The kind of descriptors a record holds: `cupl` (generated by CuPL's questions or imported
    from a CuPL file), `comparative`, or `dclip` (few-shot or imported DCLIP-style lists)."""
    if record.params.get("format") == "cupl":
        return "cupl"
    return str((record.style or {}).get("name", "dclip"))
