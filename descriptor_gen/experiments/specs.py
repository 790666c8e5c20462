"""The YAML specs of sweeps: the grid of prompt options, the methods, the stores, the CLIP and
the language model, with `--set KEY=VALUE` overrides; read and checked before any work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from descriptor_gen.models import Model
from descriptor_gen.generation.backends import GenerationParams
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.decode import DecodeName
from descriptor_gen.score.engine_options import EngineOptions
from descriptor_gen.score.evaluate import TextOptions
from descriptor_gen.describe.prompts import PerExample
from descriptor_gen.inputs import parse_yaml, read_yaml, validation_message
from descriptor_gen.experiments.entries import MethodEntry, expand_shots

M = TypeVar("M", bound=BaseModel)
GRID_KEYS = ("per_example", "detailed", "instruction", "examples", "bank")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


class GenerationSpec(GenerationParams):
    """Mirrors the flags of `descgen generate`: the model's parameters plus how to run."""

    concurrency: int = Field(default=8, ge=1)
    max_attempts: int = Field(default=4, ge=1)

    def params(self) -> GenerationParams:
        return GenerationParams(**self.model_dump(exclude={"concurrency", "max_attempts"}))


class ClipModelSpec(Model):
    """Which CLIP to load, as `load_clip` takes it."""

    model_config = ConfigDict(extra="forbid")

    model: str = "ViT-B-32"
    pretrained: str = "openai"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str = "auto"

    def identity(self) -> dict[str, str]:
        from descriptor_gen.score.features import clip_identity  # open_clip: names are checked

        return clip_identity(self.model, self.pretrained, self.precision)


class ClipSpec(ClipModelSpec, TextOptions, EngineOptions):
    """Mirrors the flags of `descgen eval` (`engine: ray` and its `ray_*` settings too)."""

    batch_size: int = Field(default=64, ge=1)
    workers: int | None = Field(default=None, ge=0)  # None: machine.loader_workers
    decode: DecodeName = "pil"


class ListGrid(Model):
    """A grid whose every field takes a value or a list of values; the grid is their product."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]


class Grid(ListGrid):
    """Each prompt option, a value or a list of values; null (the default) takes the bank's own
    default (the `dclip` bank: every example line), then the study's."""

    per_example: list[PerExample | None] = [None]
    detailed: list[bool | None] = [None]
    instruction: list[str | None] = [None]
    examples: list[Annotated[int, Field(ge=0)] | None] = [None]
    bank: list[str] = ["default"]


class StoreSpec(Model):
    """Descriptors scored beside the generated ones: a store, or a published file to import."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    format: Literal["store", "dclip", "cupl"] = "store"
    match: Literal["name", "order"] = "name"


def safe_name(value: str) -> str:
    """An experiment name names a results folder: letters, digits, '.', '_' and '-' only."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise ValueError("expected letters, digits, '.', '_' and '-' (it names the results folder)")
    return value


SpecName = Annotated[str, AfterValidator(safe_name)]


class ExperimentSpec(Model):
    """A sweep: the grid's settings x methods, plus `stores` (descriptors not generated here,
    e.g. a reference's published file) scored with the same descriptor methods."""

    model_config = ConfigDict(extra="forbid")

    name: SpecName
    classes: Path | None = None
    dataset: str
    data_root: Path | None = None
    generation: GenerationSpec = GenerationSpec()
    clip: ClipSpec = ClipSpec()
    grid: Grid = Grid()
    methods: list[MethodEntry] = Field(default=[MethodEntry(method="descriptors")], min_length=1)
    stores: dict[str, StoreSpec] = {}

    @field_validator("stores", mode="before")
    @classmethod
    def _path_alone_is_a_store(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"path": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _one_entry_per_k(cls, value: Any) -> Any:
        return expand_shots(value)

    @property
    def grid_entries(self) -> list[MethodEntry]:
        """The methods scored over the grid's (and the given stores') descriptors."""
        return [m for m in self.methods if m.needs_descriptors and m.descriptor_style is None]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested mappings; a key path through a value that is not a mapping is an
    error naming it."""
    keys = dotted.split(".")
    if not all(keys):
        raise DescgenError(f"--set {dotted!r}: expected a dotted key such as clip.model")
    for depth, key in enumerate(keys[:-1]):
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            path = ".".join(keys[: depth + 1])
            raise DescgenError(f"--set {dotted}: {path} is a {type(data).__name__}, not a mapping of keys")
    data[keys[-1]] = value


def load_spec(path: Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Read and validate an experiment spec; see :func:`load_yaml_model`."""
    return load_yaml_model(path, ExperimentSpec, overrides)


def load_yaml_model(path: Path, model: type[M], overrides: list[str] | None = None) -> M:
    """Read and validate a YAML spec; `overrides` are `dotted.key=value` (value parsed as YAML).

    Errors name the file and the key: an unknown key (a typo) is refused, not ignored.
    """
    data = read_yaml(path, "spec")
    if data is None:
        raise DescgenError(f"{path}: is empty, expected a mapping of keys")
    if not isinstance(data, dict):
        raise DescgenError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DescgenError(f"--set {item!r}: expected KEY=VALUE")
        _set_dotted(data, key.strip(), parse_yaml(value, f"--set {item!r}") if value else "")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DescgenError(f"{path}: {validation_message(exc)}") from exc
