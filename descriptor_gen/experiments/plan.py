"""A sweep's plan: its grid expanded, each cell's whole identity (what its number depends on),
the descriptor stores the cells share, and the language-model requests still to send. Planning
loads the dataset's class list and may ask the language model for a concept; it runs nothing."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from descriptor_gen.paths import RESPONSES
from descriptor_gen.generation.backends import GenerationParams, generation_identity, make_backend
from descriptor_gen.generation.cache import ResponseCache, response_key
from descriptor_gen.describe.classes import load_classes
from descriptor_gen.data.datasets import load_dataset
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.decode import decoder_key
from descriptor_gen.score.evaluate import TextOptions
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions, build_prompt
from descriptor_gen.inputs import parse_yaml, validation_message
from descriptor_gen.hashing import sha256_file, sha256_text
from descriptor_gen.experiments.results import cell_id
from descriptor_gen.score.scoring import AUTO, TextForms
from descriptor_gen.describe.store import read_store_for_resume
from descriptor_gen.describe.styles import Style
from descriptor_gen.experiments.entries import MethodEntry
from descriptor_gen.generation.concept import ask_concept

from descriptor_gen.experiments.specs import GRID_KEYS, ExperimentSpec, StoreSpec
from descriptor_gen.generation.resolve import preset_style, style_params

def expand_grid(spec: ExperimentSpec, library: PromptLibrary,
                only: list[str] | None = None) -> list[PromptOptions]:
    """The grid's points (prompt options) in a stable order, each option resolved (bank
    defaults filled in), filtered by `KEY=VALUE` terms."""
    grid = spec.grid
    points = list(dict.fromkeys(
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
        points = [s for s in points if getattr(s, key) == wanted]
    return points


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
        from descriptor_gen.score.features import check_device  # torch: is CUDA there

        given = load_classes(spec.classes) if spec.classes is not None else None
        device = check_device(spec.clip.device, spec.clip.precision)
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
        pixels = decoder_key(spec.clip.decode, device)
        if pixels:  # other pixels (pil under Pillow 13 keeps the identities it always had)
            evaluation["decode"] = pixels.replace("\0", " ").strip()
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
        if entry.neighbours >= len(self.classes) and entry.descriptor_style == "comparative":
            raise DescgenError(f"methods: {entry.name}: neighbours {entry.neighbours} must be"
                               f" fewer than the {len(self.classes)} classes")
        return preset_style(prompts_dir, str(entry.descriptor_style), self.dataset_card, {
            "questions": entry.questions, "neighbours": entry.neighbours,
            "clip": self.evaluation["clip"]})

    def style_params(self, spec: ExperimentSpec, entry: MethodEntry,
                     prompts_dir: Path) -> GenerationParams:
        """The spec's language model with the style preset's sampling, then the entry's."""
        try:
            return style_params(spec.generation.params(), prompts_dir,
                                str(entry.descriptor_style), entry.generation)
        except ValidationError as exc:
            raise DescgenError(f"methods: {entry.name}: generation: {validation_message(exc)}") from exc

    def style_prompts(self, style: Style, prompts_dir: Path) -> str:
        """What a style's prompts are made of (its data files and settings); the neighbours
        follow from the classes and the CLIP, both in the identity already."""
        return sha256_text(json.dumps({"style": style.model_dump(),
                                       "files": [sha256_file(f) for f in style.files(prompts_dir)]},
                                      sort_keys=True))

    def store_name(self, options: PromptOptions, prompts: str) -> str:
        """A setting's descriptor file, named apart for each language model and prompt text."""
        tag = sha256_text(f"{sorted(self.generation.items())}\0{prompts}")[:10]
        return f"{setting_slug(options)}-{tag}.jsonl"


def requests_needed(spec: ExperimentSpec, points: list[PromptOptions], out_dir: Path,
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
    for options in points:
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
        asked = [cell.style.class_requests(ident.classes[i], library.prompts_dir) for i in todo]
        if any(isinstance(a, int) for a in asked):  # prompts not known before the neighbours
            total += sum(a if isinstance(a, int) else len(a) for a in asked)
            continue
        params = ident.style_params(spec, cell.entry, library.prompts_dir)
        identity = _identity(params)
        for prompts in asked:
            for prompt in prompts:  # type: ignore[union-attr]
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

    @property
    def kind(self) -> str:
        """Where its descriptors come from: `given` (a store imported as it is), `style` (a
        prompt style's store), `grid` (a grid setting's store) or `none`."""
        if self.source is not None:
            return "given"
        if self.store is None:
            return "none"
        return "style" if self.style is not None else "grid"

    def describe(self) -> str:
        """How the log names the cell."""
        setting = self.identity["setting"]
        if "shots" in setting:
            return f"{setting['shots']} shots"
        return {"none": "baseline", "given": f"store {setting.get('store')}",
                "style": f"style {self.style.name if self.style else ''}",
                "grid": setting_slug(self.options) if self.options else ""}[self.kind]


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


def plan_cells(spec: ExperimentSpec, points: list[PromptOptions], out_dir: Path,
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
    for options in points if grid_entries else []:
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
