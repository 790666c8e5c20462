"""Sweeps over the prompt options: generate each setting's descriptors, score them with every
method, and append one results line per (setting, method) cell, skipping the cells whose whole
identity (see :mod:`descriptor_gen.experiments.results`) is already there.

Cells: a method without descriptors is one cell; a method over descriptors is a cell per grid
setting and per given store; a method whose descriptors come from a prompt style (CuPL's
questions, comparative pairs) is one cell over the store the sweep generates in that style."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from descriptor_gen.settings import RESPONSES
from descriptor_gen.generation.backends import GenerationParams, generation_identity, make_backend
from descriptor_gen.generation.cache import ResponseCache, response_key
from descriptor_gen.describe.classes import load_classes
from descriptor_gen.data.datasets import load_dataset
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.engines import EngineOptions
from descriptor_gen.score.evaluate import EvalConfig, TextOptions, evaluate
from descriptor_gen.score.features import check_device, clip_identity, load_clip
from descriptor_gen.generation.generate import GenerationJob, generate
from descriptor_gen.describe.prompts import PerExample, PromptLibrary, PromptOptions, build_prompt
from descriptor_gen.inputs import parse_yaml, read_yaml, validation_message
from descriptor_gen.locks import exclusive
from descriptor_gen.hashing import sha256_file, sha256_text
from descriptor_gen.experiments.results import append_row, cell_id, done_cells
from descriptor_gen.score.scoring import AUTO, TextForms
from descriptor_gen.describe.presets import load_preset
from descriptor_gen.describe.published import import_published
from descriptor_gen.describe.store import read_store_for_resume, write_store
from descriptor_gen.describe.styles import STYLE_FILES, Style, cupl_question_set
from descriptor_gen.experiments.entries import MethodEntry, expand_shots
from descriptor_gen.generation.concept import ask_concept
from descriptor_gen.score.neighbours import clip_neighbours

M = TypeVar("M", bound=BaseModel)
GRID_KEYS = ("per_example", "detailed", "instruction", "examples", "bank")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


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
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str = "auto"

    def identity(self) -> dict[str, str]:
        return clip_identity(self.model, self.pretrained, self.precision)


class ClipSpec(ClipModelSpec, TextOptions, EngineOptions):
    """Mirrors the flags of `descgen eval` (`engine: ray` and its `ray_*` settings too)."""

    batch_size: int = Field(default=64, ge=1)
    workers: int = Field(default=2, ge=0)


class ListGrid(BaseModel):
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


class StoreSpec(BaseModel):
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


class ExperimentSpec(BaseModel):
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


def expand_grid(spec: ExperimentSpec, library: PromptLibrary,
                only: list[str] | None = None) -> list[PromptOptions]:
    """The grid's settings in a stable order, each option resolved (bank defaults filled in),
    filtered by `KEY=VALUE` terms."""
    grid = spec.grid
    settings = list(dict.fromkeys(
        library.options(bank=b, per_example=k, detailed=d, instruction=i, examples=n)
        for k, d, i, n, b in itertools.product(grid.per_example, grid.detailed, grid.instruction,
                                               grid.examples, grid.bank)
    ))
    for term in only or []:
        key, sep, value = term.partition("=")
        if not sep or key not in GRID_KEYS:
            raise DescgenError(f"--only {term!r}: expected KEY=VALUE with KEY in {', '.join(GRID_KEYS)}")
        try:
            wanted = PromptOptions.model_validate(
                {key: parse_yaml(value, f"--only {term!r}")}).model_dump()[key]
        except ValidationError as exc:
            raise DescgenError(f"--only {term!r}: {validation_message(exc)}") from exc
        settings = [s for s in settings if getattr(s, key) == wanted]
    return settings


def setting_slug(options: PromptOptions) -> str:
    instruction = options.instruction if len(options.instruction) < 24 else "custom"
    text = (f"k{options.per_example}-{'detailed' if options.detailed else 'short'}-"
            f"{instruction}-n{options.examples}-{options.bank}")
    return "".join(ch if ch.isalnum() or ch in "-_+" else "_" for ch in text)


@dataclass
class SweepIdentity:
    """The parts of every cell's identity that do not depend on the setting or the method."""

    classes: list[str]
    evaluation: dict[str, Any]  # class list, data, CLIP, text forms
    generation: dict[str, Any]
    templates: str
    chat: bool
    dataset_card: str | None = None
    concept: str | None = None  # `concept: auto`, once asked
    cache_dir: Path | None = None
    data_root: Path | None = None

    @classmethod
    def of(cls, spec: ExperimentSpec, cache_dir: Path, prompts_dir: Path,
           ask: bool = True) -> SweepIdentity:
        """Everything a cell's identity shares. `ask`: with `clip.concept: auto`, ask the
        language model for the concept (one request, cached); a dry run does not."""
        given = load_classes(spec.classes) if spec.classes is not None else None
        check_device(spec.clip.device, spec.clip.precision)
        forms = TextForms.load(prompts_dir)
        for kind, value in (("descriptor", spec.clip.descriptor_template),
                            ("classname", spec.clip.classname_template)):
            if value != AUTO:
                forms.resolve(kind, value, f"clip.{kind}_template")  # type: ignore[arg-type]
        data = load_dataset(spec.dataset, given, cache_dir, spec.data_root)
        classes = data.classes or given or []
        concept = None
        if spec.clip.concept == "auto":
            concept, _ = ask_concept(classes, spec.generation.params(),
                                     ResponseCache(cache_dir / RESPONSES), prompts_dir,
                                     spec.generation.max_attempts, send=ask)
        text = {**spec.clip.model_dump(include=set(TextOptions.model_fields)),
                "forms": sha256_file(prompts_dir / "text_forms.yaml")}
        if spec.clip.concept == "auto":
            text["concept"] = {"auto": concept, "prompt": sha256_file(prompts_dir / "concept.yaml")}
        evaluation = {
            "classes": sha256_text("\n".join(classes)),
            "data": {"spec": spec.dataset, "files": data.identity(),
                     "labels": sha256_text(",".join(map(str, data.labels or [])))},
            "clip": spec.clip.identity(),
            "text": text,
        }
        params = spec.generation.params()
        from descriptor_gen.data.cards import load_cards

        card = spec.dataset if spec.dataset in load_cards() else None
        return cls(classes, evaluation, generation_identity(params),
                   sha256_file(prompts_dir / "templates" / "imagenet80.txt"), params.api == "chat",
                   card, concept, cache_dir, spec.data_root)

    def train_of(self, entry: MethodEntry) -> tuple[str, dict[str, Any]]:
        """A learned method's training source (its `train`, else the dataset card's train
        split) and the identity of its images."""
        source = entry.train
        if source is None:
            if self.dataset_card is None:
                raise DescgenError(f"methods: {entry.name}: give train: (the labelled images to"
                                   " learn from; the dataset is not a card with a train split)")
            source = f"{self.dataset_card}:train"
        assert self.cache_dir is not None
        data = load_dataset(source, self.classes, self.cache_dir, self.data_root)
        return source, {"spec": source, "files": data.identity()}

    def prompts(self, options: PromptOptions, library: PromptLibrary) -> str:
        """A hash of every prompt a setting sends (an edited bank or instruction changes it)."""
        sent = [build_prompt(name, options, library).sha256(self.chat) for name in self.classes]
        return sha256_text("\n".join(sent))

    def cell(self, experiment: str, options: PromptOptions | None, entry: MethodEntry,
             prompts: str | None, generation: dict[str, Any] | None = None) -> dict[str, Any]:
        """A cell's identity: baselines do not depend on the prompt or the language model."""
        described = entry.needs_descriptors
        return {
            "experiment": experiment,
            **entry.identity(),
            "setting": options.model_dump() if described and options is not None else {},
            **self.evaluation,
            "templates": self.templates if "templates" in json.dumps(entry.identity()) else None,
            "generation": (generation or self.generation) if described else None,
            "prompts": prompts if described else None,
        }

    def style_of(self, spec: ExperimentSpec, entry: MethodEntry, prompts_dir: Path) -> Style:
        """The prompt style of a style method's descriptors: its preset's settings, the entry's
        own, and the sweep's CLIP for the neighbours."""
        name = entry.descriptor_style
        preset = load_preset(prompts_dir, str(name)).style
        chosen = {**preset, "name": name}
        if name == "cupl":
            chosen["questions"] = entry.questions or cupl_question_set(prompts_dir, self.dataset_card)
        else:
            if entry.neighbours >= len(self.classes):
                raise DescgenError(f"methods: {entry.name}: neighbours {entry.neighbours} must be"
                                   f" fewer than the {len(self.classes)} classes")
            chosen.update(neighbours=entry.neighbours, clip=self.evaluation["clip"])
        return Style(**chosen)

    def style_params(self, spec: ExperimentSpec, entry: MethodEntry,
                     prompts_dir: Path) -> GenerationParams:
        """The spec's language model with the style preset's sampling, then the entry's."""
        sampling = load_preset(prompts_dir, str(entry.descriptor_style)).sampling()
        try:
            return GenerationParams(**{**spec.generation.params().model_dump(), **sampling,
                                       **entry.generation})
        except ValidationError as exc:
            raise DescgenError(f"methods: {entry.name}: generation: {validation_message(exc)}") from exc

    def style_prompts(self, style: Style, prompts_dir: Path) -> str:
        """What a style's prompts are made of (its data files and settings); the neighbours
        follow from the classes and the CLIP, both in the identity already."""
        return sha256_text(json.dumps({"style": style.model_dump(),
                                       "files": [sha256_file(prompts_dir / STYLE_FILES[style.name])]},
                                      sort_keys=True))

    def store_name(self, options: PromptOptions, prompts: str) -> str:
        """A setting's descriptor file, named apart for each language model and prompt text."""
        tag = sha256_text(f"{sorted(self.generation.items())}\0{prompts}")[:10]
        return f"{setting_slug(options)}-{tag}.jsonl"


def requests_needed(spec: ExperimentSpec, settings: list[PromptOptions], out_dir: Path,
                    cache: ResponseCache, library: PromptLibrary, ident: SweepIdentity) -> int:
    """First-round requests a sweep would send: classes not yet generated, answers not cached.
    Reads the descriptor files as they are, repairing nothing. For comparative descriptors the
    count is at most (the neighbours are known once CLIP is loaded): classes not yet in the
    store times the neighbours."""
    total = _style_requests(spec, out_dir, library, ident, cache)
    if spec.clip.concept == "auto" and ident.concept is None:
        total += 1
    if not spec.grid_entries:
        return total
    params = spec.generation.params()
    identity = _identity(params)
    for options in settings:
        store = out_dir / "descriptors" / ident.store_name(options, ident.prompts(options, library))
        have = {r.class_index for r in read_store_for_resume(store, ident.classes, repair=False,
                                                              retry_failed=True)}
        for index, name in enumerate(ident.classes):
            if index in have:
                continue
            if identity is None:
                total += 1
                continue
            prompt = build_prompt(name, options, library).sent(params.api == "chat")
            keys = [response_key(identity, prompt, s) for s in range(params.samples)]
            total += len(cache.get_many(keys)) < len(keys)
    return total


def _style_requests(spec: ExperimentSpec, out_dir: Path, library: PromptLibrary,
                    ident: SweepIdentity, cache: ResponseCache) -> int:
    total = 0
    seen: set[Path] = set()
    for cell in _style_cells(spec, out_dir, library, ident):
        if cell.store in seen or cell.store is None or cell.style is None:
            continue
        seen.add(cell.store)
        have = {r.class_index for r in read_store_for_resume(cell.store, ident.classes,
                                                              repair=False, retry_failed=True)}
        todo = [i for i in range(len(ident.classes)) if i not in have]
        if cell.style.name == "comparative":
            total += len(todo) * cell.style.neighbours
            continue
        params = ident.style_params(spec, cell.entry, library.prompts_dir)
        identity = _identity(params)
        from descriptor_gen.describe.styles import cupl_prompts

        for index in todo:
            for prompt in cupl_prompts(ident.classes[index], cell.style, library.prompts_dir):
                if identity is None:
                    total += 1
                    continue
                keys = [response_key(identity, prompt.sent(params.api == "chat"), s)
                        for s in range(params.samples)]
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


@dataclass
class Cell:
    options: PromptOptions | None  # None: a given store or a style's, not the grid's
    entry: MethodEntry
    identity: dict[str, Any]
    id: str
    store: Path | None
    source: StoreSpec | None = None
    style: Style | None = None  # the prompt style the sweep generates this cell's store in
    params: GenerationParams | None = None

    @property
    def method(self) -> str:
        return self.entry.name


def _style_cells(spec: ExperimentSpec, out_dir: Path, library: PromptLibrary,
                 ident: SweepIdentity) -> list[Cell]:
    cells = []
    for entry in spec.methods:
        if entry.descriptor_style is None:
            continue
        style = ident.style_of(spec, entry, library.prompts_dir)
        params = ident.style_params(spec, entry, library.prompts_dir)
        prompts = ident.style_prompts(style, library.prompts_dir)
        generation = generation_identity(params)
        identity = {**ident.cell(spec.name, None, entry, prompts, generation),
                    "setting": {"style": style.name}}
        tag = sha256_text(json.dumps([generation, prompts], sort_keys=True))[:10]
        store = out_dir / "descriptors" / f"{style.name}-{tag}.jsonl"
        cells.append(Cell(None, entry, identity, cell_id(identity), store, style=style,
                          params=params))
    return cells


def plan_cells(spec: ExperimentSpec, settings: list[PromptOptions], out_dir: Path,
               library: PromptLibrary, ident: SweepIdentity) -> list[Cell]:
    """Every distinct cell of the grid x methods, of the given stores and of the styles' stores,
    with its identity."""
    cells: dict[str, Cell] = {}
    grid_entries = spec.grid_entries
    trained = {id(e): ident.train_of(e) for e in spec.methods if e.learned}
    for entry in spec.methods:
        if not entry.needs_descriptors:
            identity = ident.cell(spec.name, None, entry, None)
            if entry.learned:
                identity["train"] = trained[id(entry)][1]
                identity["setting"] = {"shots": entry.parsed().shots}
            cells.setdefault(cell_id(identity), Cell(None, entry, identity, cell_id(identity), None))
    for options in settings if grid_entries else []:
        prompts = ident.prompts(options, library)
        store = out_dir / "descriptors" / ident.store_name(options, prompts)
        for entry in grid_entries:
            identity = ident.cell(spec.name, options, entry, prompts)
            if entry.learned:
                identity["train"] = trained[id(entry)][1]
                identity["setting"] = {**identity["setting"], "shots": entry.parsed().shots}
            key = cell_id(identity)
            cells.setdefault(key, Cell(options, entry, identity, key, store))
    for name, source in spec.stores.items():
        if not source.path.is_file():
            raise DescgenError(f"stores.{name}: {source.path}: no such file")
        content = {"name": name, "sha256": sha256_file(source.path), "format": source.format,
                   "match": source.match}
        for entry in grid_entries:
            identity = {**ident.cell(spec.name, None, entry, None),
                        "setting": {"store": name}, "store": content}
            if entry.learned:
                identity["train"] = trained[id(entry)][1]
            key = cell_id(identity)
            store = source.path
            if source.format != "store":
                store = out_dir / "descriptors" / f"{name}-{content['sha256'][:10]}.jsonl"
            cells.setdefault(key, Cell(None, entry, identity, key, store, source))
    for cell in _style_cells(spec, out_dir, library, ident):
        cells.setdefault(cell.id, cell)
    return list(cells.values())


def _learned_run(spec: ExperimentSpec, cell: Cell, ident: SweepIdentity, out_dir: Path,
                 cache_dir: Path, prompts_dir: Path, clip: Any,
                 log: Callable[[str], None]) -> Path | None:
    """Train a learned cell's run (resuming one a killed sweep left), or None for the others."""
    if not cell.entry.learned:
        return None
    from descriptor_gen.learn.run import LearnConfig, learn

    folder = out_dir / "learned" / f"{cell.entry.method}-{cell.id[:12]}"
    source = cell.identity["train"]["spec"]
    cfg = LearnConfig(method=cell.entry.method, dataset=source, options=cell.entry.options,
                      classes=ident.classes, data_root=spec.data_root, descriptors=cell.store,
                      model=spec.clip.model, pretrained=spec.clip.pretrained,
                      device=spec.clip.device, workers=spec.clip.workers)
    trainer = clip if spec.clip.precision == "fp32" else None
    learn(cfg, folder, cache_dir, prompts_dir, resume=(folder / "run.json").exists(),
          progress=False, clip=trainer, log=log)
    return folder


def _given_store(cell: Cell, classes: list[str], log: Callable[[str], None]) -> None:
    """Import a published file into the cell's store, once."""
    assert cell.source is not None and cell.store is not None
    if cell.source.format == "store" or cell.store.exists():
        return
    records, report = import_published(cell.source.path, cell.source.format, classes,
                                       cell.source.match)
    write_store(cell.store, records)
    for line in report.lines():
        log(f"{cell.source.path.name}: {line}")


def run_sweep(spec: ExperimentSpec, out_dir: Path, cache_dir: Path, prompts_dir: Path,
              only: list[str] | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
              wait: bool = False) -> list[dict[str, Any]]:
    """Run every cell whose identity is not yet in `out_dir/results.jsonl`; returns new rows.
    One sweep at a time per folder (`wait`: wait for the other instead of stopping)."""
    library = PromptLibrary(prompts_dir)
    settings = expand_grid(spec, library, only)
    ident = SweepIdentity.of(spec, cache_dir, prompts_dir)
    results = out_dir / "results.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(results, wait=wait):
        return _run_cells(spec, settings, ident, library, out_dir, cache_dir, prompts_dir, log)


def _run_cells(spec: ExperimentSpec, settings: list[PromptOptions], ident: SweepIdentity,
               library: PromptLibrary, out_dir: Path, cache_dir: Path, prompts_dir: Path,
               log: Callable[[str], None]) -> list[dict[str, Any]]:
    results = out_dir / "results.jsonl"
    done = done_cells(results, repair=True)
    cells = [c for c in plan_cells(spec, settings, out_dir, library, ident) if c.id not in done]
    if not cells:
        log(f"{spec.name}: every cell is already in {results}")
        return []
    cache = ResponseCache(cache_dir / RESPONSES)
    clip = load_clip(spec.clip.model, spec.clip.pretrained, spec.clip.device, spec.clip.precision)
    # A local model is loaded once for the sweep; an HTTP client is made per run, inside its loop.
    backend = make_backend(spec.generation.params()) if spec.generation.backend == "hf" else None
    rows = []
    try:
        for cell in cells:
            started = time.perf_counter()
            gen = None
            if cell.source is not None:
                _given_store(cell, ident.classes, log)
            elif cell.style is not None and cell.store is not None:
                neighbours = None
                if cell.style.name == "comparative":
                    neighbours, _ = clip_neighbours(ident.classes, cell.style.neighbours, cache_dir,
                                                    spec.clip.model, spec.clip.pretrained,
                                                    clip=clip)
                style_backend = backend if cell.params == spec.generation.params() else None
                gen = generate(GenerationJob(
                    classes=ident.classes, out=cell.store, options=PromptOptions(),
                    params=cell.params or spec.generation.params(), library=library, cache=cache,
                    style=cell.style, neighbours=neighbours,
                    concurrency=spec.generation.concurrency,
                    max_attempts=spec.generation.max_attempts, progress=False,
                    backend=style_backend, log=log))
            elif cell.store is not None:
                gen = generate(GenerationJob(
                    classes=ident.classes, out=cell.store, options=cell.options,
                    params=spec.generation.params(), library=library, cache=cache,
                    concurrency=spec.generation.concurrency,
                    max_attempts=spec.generation.max_attempts, progress=False, backend=backend,
                    log=log))
            clip_options = spec.clip.model_dump()
            if ident.concept is not None:
                clip_options["concept"] = ident.concept
            run = _learned_run(spec, cell, ident, out_dir, cache_dir, prompts_dir, clip, log)
            cfg = EvalConfig(dataset=spec.dataset, data_root=spec.data_root,
                             descriptors=None if run else cell.store,
                             method="classname" if run else cell.entry.method,
                             options={} if run else cell.entry.options, learned=run,
                             **clip_options)
            result = evaluate(cfg, ident.classes, cache_dir, prompts_dir, clip=clip, log=log)
            row = {
                "experiment": spec.name,
                "cell": cell.id,
                "setting": cell.identity["setting"],
                "method": cell.method,
                "method_name": cell.entry.method,
                "seed_group": cell.entry.seed_group,
                "options": result.options,
                "metrics": result.metrics,
                "metrics_std": result.metrics_std,
                "repeats": result.repeats,
                "concept": result.concept,
                "identity": cell.identity,
                "text": result.text.model_dump() if result.text else None,
                "descriptors": result.counts.get("descriptors_per_class") if cell.store else None,
                "descriptor_file": str(cell.store) if cell.store else None,
                "llm_requests": gen.requests if gen else 0,
                "cache_hits": gen.cache_hits if gen else 0,
                "classes_without_descriptors": len(gen.failed) if gen else 0,
                "images_encoded": result.images_encoded,
                "device": result.device,
                "seconds": round(time.perf_counter() - started, 3),
            }
            append_row(results, row)
            rows.append(row)
            what = (f"{cell.identity['setting']['shots']} shots" if "shots" in cell.identity["setting"]
                    else "baseline" if cell.store is None else setting_slug(cell.options)
                    if cell.options else f"style {cell.style.name}" if cell.style
                    else f"store {cell.identity['setting']['store']}")
            log(f"{spec.name}: {what} {cell.method}: top-1 {result.metrics['top1']:.4f}")
    finally:
        if backend is not None:
            asyncio.run(backend.aclose())
    return rows

