"""Where user input enters: files the user names, output paths, and validation errors, each
turned into one :class:`DescgenError` line that names the file, line, key or flag at fault.

Every command reads its input files through :func:`read_text` and checks the paths it will
write with :func:`output_file` / :func:`output_dir` before doing any work.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from descriptor_gen.errors import DescgenError

M = TypeVar("M", bound=BaseModel)


def read_text(path: Path | str, what: str = "file") -> str:
    """The UTF-8 text of a file a user named.

    Args:
        path: the file.
        what: what the file should be ("class list", "spec"), for the message.

    Raises:
        DescgenError: missing, a directory, unreadable, binary, or not UTF-8 (naming the line of
            the first bad byte).
    """
    path = Path(path)
    if path.is_dir():
        raise DescgenError(f"{path}: is a folder, not a {what}")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DescgenError(f"{path}: no such {what}") from exc
    except OSError as exc:
        raise DescgenError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc
    if b"\0" in data:
        raise DescgenError(f"{path}: a binary file, not a {what} (UTF-8 text)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DescgenError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x});"
                           f" save the {what} as UTF-8") from exc


def parse_yaml(text: str, path: Path | str) -> Any:
    """YAML from text; a syntax error is named by file, line and what was wrong. libyaml's
    parser when PyYAML has it (the same documents, several times faster than PyYAML's own)."""
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise DescgenError(f"{where}: not valid YAML ({problem})") from exc


def parse_json(text: str, path: Path | str, line: int | None = None) -> Any:
    """JSON from text; a syntax error is named by file and line (`line`: the text is that line
    of the file)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DescgenError(f"{path}:{line or exc.lineno}: not valid JSON ({exc.msg})") from exc


def read_yaml(path: Path | str, what: str = "YAML file") -> Any:
    return parse_yaml(read_text(path, what), path)


def lines_of(text: str) -> list[str]:
    """Lines split on newlines only (a name or descriptor may hold any other Unicode break)."""
    return text.replace("\r\n", "\n").split("\n")


def output_file(path: Path | str | None, flag: str) -> Path | None:
    """Check, before any work, that a file can be written at `path` (its folder created)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise DescgenError(f"{flag} {path}: is a directory, expected a file path")
    _writable_folder(path.parent, f"{flag} {path}")
    return path


def output_dir(path: Path | str | None, flag: str) -> Path | None:
    """Check, before any work, that `path` is (or can be made) a writable folder."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DescgenError(f"{flag} {path}: is a file, expected a folder")
    _writable_folder(path, f"{flag} {path}")
    return path


def future_dir(path: Path, flag: str) -> Path:
    """Check, before any work and without creating anything, that `path` is a folder or can be
    made one where the nearest existing folder above it can be written."""
    if path.exists() and not path.is_dir():
        raise DescgenError(f"{flag} {path}: is a file, expected a folder")
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        raise DescgenError(f"{flag} {path}: {existing} is a file, not a folder")
    _writable_folder(existing, f"{flag} {path}")
    return path


def _writable_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise DescgenError(f"{what}: {_first_file(folder)} is a file, not a folder") from exc
    except NotADirectoryError as exc:
        raise DescgenError(f"{what}: {_first_file(folder)} is a file, not a folder") from exc
    except OSError as exc:
        raise DescgenError(f"{what}: cannot create folder {folder} ({exc.strerror or exc})") from exc
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".descgen-write-test-")
    except OSError as exc:
        raise DescgenError(f"{what}: cannot write in {folder} ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


def _first_file(folder: Path) -> Path:
    """The nearest ancestor of `folder` that exists as something other than a folder."""
    for candidate in [folder, *folder.parents]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return folder


def validated(model: type[M], data: Any, where: Path | str) -> M:
    """`data` (parsed from a file) as `model`; errors name the file and each bad key."""
    if data is None:
        raise DescgenError(f"{where}: is empty, expected a mapping of keys")
    if not isinstance(data, dict):
        raise DescgenError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DescgenError(f"{where}: {validation_message(exc)}") from exc


def validation_message(exc: ValidationError, flags: bool = False) -> str:
    """A pydantic error as one line: each bad key (or `--flag`) with what was wrong."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        key = ("--" + loc[0].replace("_", "-")) if flags and loc else ".".join(loc) or "top level"
        what = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        what = what.removeprefix("Value error, ")
        shown = "" if error["type"] == "extra_forbidden" else f" (got {_short(error.get('input'))})"
        parts.append(f"{key}: {what}{shown}")
    return "; ".join(dict.fromkeys(parts))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def finite(value: float, what: str) -> float:
    """Refuse NaN and infinities where a number must be real."""
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value}")
    return value
