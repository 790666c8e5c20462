"""Sweeps over the prompt options: generate each setting's descriptors, score them with every
method, and append one results line per (setting, method), skipping what is already there."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from descriptor_gen.backends import GenerationParams, make_backend
from descriptor_gen.cache import ResponseCache, response_key
from descriptor_gen.classes import load_classes
from descriptor_gen.errors import DescgenError
from descriptor_gen.evaluate import EvalConfig, evaluate
from descriptor_gen.features import load_clip
from descriptor_gen.generate import GenerationJob, generate
from descriptor_gen.prompts import PromptLibrary, PromptOptions, build_prompt
from descriptor_gen.scoring import METHODS
from descriptor_gen.store import read_store_for_resume

M = TypeVar("M", bound=BaseModel)
GRID_KEYS = ("per_example", "detailed", "instruction", "examples", "bank")
NEEDS_DESCRIPTORS = ("descriptors", "descriptors+templates")


class GenerationSpec(GenerationParams):
    """Mirrors the flags of `descgen generate`: the model's parameters plus how to run."""

    concurrency: int = Field(default=8, ge=1)
    max_attempts: int = Field(default=4, ge=1)

    def params(self) -> GenerationParams:
        return GenerationParams(**self.model_dump(exclude={"concurrency", "max_attempts"}))


class ClipModelSpec(BaseModel):
    """Which CLIP to load, as `load_clip` takes it."""

    model_config = ConfigDict(extra="forbid")

    model: str = "ViT-B-32"
    pretrained: str = "openai"
    precision: str = "fp32"
    device: str = "auto"


class ClipSpec(ClipModelSpec):
    """Mirrors the flags of `descgen eval`."""

    batch_size: int = 64
    workers: int = 2
    descriptor_template: str = "menon"


class ListGrid(BaseModel):
    """A grid whose every field takes a value or a list of values; the grid is their product."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]


class Grid(ListGrid):
    """Each prompt option, a value or a list of values."""

    per_example: list[int] = [7]
    detailed: list[bool] = [False]
    instruction: list[str] = ["none"]
    examples: list[int] = [2]
    bank: list[str] = ["default"]


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    classes: Path
    dataset: str
    generation: GenerationSpec = GenerationSpec()
    clip: ClipSpec = ClipSpec()
    grid: Grid = Grid()
    methods: list[str] = ["descriptors"]

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r} (choose {', '.join(METHODS)})")
        return value


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def load_spec(path: Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Read and validate an experiment spec; see :func:`load_yaml_model`."""
    return load_yaml_model(path, ExperimentSpec, overrides)


def load_yaml_model(path: Path, model: type[M], overrides: list[str] | None = None) -> M:
    """Read and validate a YAML spec; `overrides` are `dotted.key=value` (value parsed as YAML).

    Errors name the file and the key: an unknown key (a typo) is refused, not ignored.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DescgenError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise DescgenError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise DescgenError(f"{path}: expected a mapping of keys")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DescgenError(f"--set {item!r}: expected KEY=VALUE")
        _set_dotted(data, key.strip(), yaml.safe_load(value) if value else "")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or "top level"
        what = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise DescgenError(f"{path}: {where}: {what}") from exc


def expand_grid(spec: ExperimentSpec, only: list[str] | None = None) -> list[PromptOptions]:
    """The grid's settings in a stable order, filtered by `KEY=VALUE` terms."""
    grid = spec.grid
    settings = [
        PromptOptions(per_example=k, detailed=d, instruction=i, examples=n, bank=b)
        for k, d, i, n, b in itertools.product(grid.per_example, grid.detailed, grid.instruction,
                                               grid.examples, grid.bank)
    ]
    for term in only or []:
        key, sep, value = term.partition("=")
        if not sep or key not in GRID_KEYS:
            raise DescgenError(f"--only {term!r}: expected KEY=VALUE with KEY in {', '.join(GRID_KEYS)}")
        wanted = PromptOptions.model_validate({key: yaml.safe_load(value)}).model_dump()[key]
        settings = [s for s in settings if getattr(s, key) == wanted]
    return settings


def setting_slug(options: PromptOptions) -> str:
    instruction = options.instruction if len(options.instruction) < 24 else "custom"
    text = (f"k{options.per_example}-{'detailed' if options.detailed else 'short'}-"
            f"{instruction}-n{options.examples}-{options.bank}")
    return "".join(ch if ch.isalnum() or ch in "-_+" else "_" for ch in text)


def done_cells(results: Path, experiment: str) -> set[tuple[str, str]]:
    """(setting JSON, method) cells of this experiment already in the results file."""
    if not results.exists():
        return set()
    done = set()
    for line in results.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line from a killed run: that cell is run again
        if row.get("experiment") == experiment:
            done.add((json.dumps(row["setting"], sort_keys=True), row["method"]))
    return done


def requests_needed(spec: ExperimentSpec, settings: list[PromptOptions], out_dir: Path,
                    cache: ResponseCache, library: PromptLibrary) -> int:
    """First-round requests a sweep would send: classes not yet generated, answers not cached."""
    if not any(m in NEEDS_DESCRIPTORS for m in spec.methods):
        return 0
    classes = load_classes(spec.classes)
    params = spec.generation.params()
    identity = _identity(params)
    total = 0
    for options in settings:
        store = out_dir / "descriptors" / f"{setting_slug(options)}.jsonl"
        have = {r.class_index for r in read_store_for_resume(store, classes)} if store.exists() else set()
        for index, name in enumerate(classes):
            if index in have:
                continue
            if identity is None:
                total += 1
                continue
            prompt = build_prompt(name, options, library).sent(params.api == "chat")
            keys = [response_key(identity, prompt, s) for s in range(params.samples)]
            total += len(cache.get_many(keys)) < len(keys)
    return total


def _identity(params: GenerationParams) -> dict[str, Any] | None:
    """The backend's cache identity, or None when it cannot be built yet (no API key)."""
    try:
        backend = make_backend(params)
    except DescgenError:
        return None
    try:
        return backend.identity()
    finally:
        asyncio.run(backend.aclose())


def run_sweep(spec: ExperimentSpec, out_dir: Path, cache_dir: Path, prompts_dir: Path,
              only: list[str] | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[dict[str, Any]]:
    """Run every (setting, method) cell not yet in `out_dir/results.jsonl`; returns new rows."""
    classes = load_classes(spec.classes)
    settings = expand_grid(spec, only)
    results = out_dir / "results.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    done = done_cells(results, spec.name)
    library = PromptLibrary(prompts_dir)
    cache = ResponseCache(cache_dir / "responses.sqlite")
    cells = _cells(spec, settings, done)
    if not cells:
        log(f"{spec.name}: every cell is already in {results}")
        return []
    clip = load_clip(spec.clip.model, spec.clip.pretrained, spec.clip.device, spec.clip.precision)
    # A local model is loaded once for the sweep; an HTTP client is made per run, inside its loop.
    backend = make_backend(spec.generation.params()) if spec.generation.backend == "hf" else None
    rows = []
    try:
        for options, method in cells:
            started = time.perf_counter()
            store, gen = None, None
            if method in NEEDS_DESCRIPTORS:
                store = out_dir / "descriptors" / f"{setting_slug(options)}.jsonl"
                gen = generate(GenerationJob(
                    classes=classes, out=store, options=options, params=spec.generation.params(),
                    library=library, cache=cache, concurrency=spec.generation.concurrency,
                    max_attempts=spec.generation.max_attempts, progress=False, backend=backend,
                    log=log))
            cfg = EvalConfig(dataset=spec.dataset, descriptors=store, model=spec.clip.model,
                             pretrained=spec.clip.pretrained, method=method,
                             descriptor_template=spec.clip.descriptor_template,
                             batch_size=spec.clip.batch_size, device=spec.clip.device,
                             precision=spec.clip.precision, workers=spec.clip.workers)
            result = evaluate(cfg, classes, cache_dir, prompts_dir, clip=clip, log=log)
            row = {
                "experiment": spec.name,
                "setting": _setting_of(options, method),
                "method": method,
                "metrics": result.metrics,
                "descriptors": result.counts["descriptors_per_class"] if store else None,
                "descriptor_file": str(store) if store else None,
                "llm_requests": gen.requests if gen else 0,
                "cache_hits": gen.cache_hits if gen else 0,
                "classes_without_descriptors": len(gen.failed) if gen else 0,
                "images_encoded": result.images_encoded,
                "seconds": round(time.perf_counter() - started, 3),
            }
            with open(results, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            rows.append(row)
            log(f"{spec.name}: {setting_slug(options) if store else 'baseline'} {method}:"
                f" top-1 {result.metrics['top1']:.4f}")
    finally:
        if backend is not None:
            asyncio.run(backend.aclose())
    return rows


def _setting_of(options: PromptOptions, method: str) -> dict[str, Any]:
    """Baselines do not depend on the prompt, so their setting is empty."""
    return options.model_dump() if method in NEEDS_DESCRIPTORS else {}


def _cells(spec: ExperimentSpec, settings: list[PromptOptions],
           done: set[tuple[str, str]]) -> list[tuple[PromptOptions, str]]:
    cells, seen = [], set()
    for options in settings:
        for method in spec.methods:
            key = (json.dumps(_setting_of(options, method), sort_keys=True), method)
            if key not in done and key not in seen:
                seen.add(key)
                cells.append((options, method))
    return cells
