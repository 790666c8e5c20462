"""Flags, enums and helpers that several command modules share (light: no stage is imported)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel, ValidationError

from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import parse_yaml, validation_message
from descriptor_gen.machine import CPU_LOADER_WORKERS, GPU_LOADER_WORKERS


class OnEmptyName(str, Enum):
    classname = "classname"
    blank = "blank"
    error = "error"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


# Options several commands share.
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="Cache folder (else $DESCRIPTOR_GEN_CACHE, else ~/.cache/descriptor_gen).")]


OutFolder = Annotated[Optional[Path], typer.Option("--out", help="Results folder (default results/NAME).")]


SetKeys = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a spec key, e.g. clip.model=ViT-L-14 (repeatable).")]


Wait = Annotated[bool, typer.Option(
    "--wait", help="If another run is writing the same output, wait for it instead of stopping.")]


SpecModels = Annotated[Optional[list[str]], typer.Option(
    "--model", help="Run the spec with this CLIP instead of its clip.model; repeat for several"
    " (each its own cells and table, in one results folder), paired in order with --pretrained.")]


SpecWeights = Annotated[Optional[list[str]], typer.Option(
    "--pretrained", help="The weights of each --model (one for all), else the spec's.")]


SpecModelEntries = Annotated[Optional[list[str]], typer.Option(
    "--models", help="More CLIPs: MODEL,PRETRAINED, a file of such lines, or a CLIP_benchmark"
    " collection (openai, openclip_base, ...); repeatable.")]


Workers = Annotated[Optional[int], typer.Option(
    "--workers", min=0, help="DataLoader worker processes (default: on a GPU one a usable CPU"
    f" core, at most {GPU_LOADER_WORKERS}; on a CPU {CPU_LOADER_WORKERS}; never more than the"
    " batches).")]

DataRoot = Annotated[Optional[Path], typer.Option(
    "--data-root", help="Folder holding the datasets as their downloads unpack (else $DESCRIPTOR_GEN_DATA).")]


def flag_error(exc: ValidationError) -> DescgenError:
    """A model's validation error as the flags the user typed, e.g. `--per-example`."""
    return DescgenError(validation_message(exc, flags=True))


def method_options(pairs: list[str] | None) -> dict[str, Any]:
    """`--option KEY=VALUE` flags as a mapping, each value read as YAML (`repeats=3`,
    `base=waffle`, `seed=[1, 2]`)."""
    out: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DescgenError(f"--option {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_yaml(value, f"--option {item!r}") if value else ""
    return out


def write_result(out: Path | None, result: BaseModel) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out, result.model_dump_json(indent=2) + "\n")
