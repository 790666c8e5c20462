"""`descgen suite SPEC`: methods x benchmark datasets, with the published numbers beside ours.

Each (dataset, method) is a cell keyed by its whole identity, like a sweep's: a re-run does
only what is new. Datasets not under the data root, and methods whose descriptors cannot be had
(no published file given, no language model reachable), are skipped with a line saying why.
Image features are encoded once per (dataset, model) and shared by every method.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from descriptor_gen.models import Model
from descriptor_gen.paths import RESPONSES
from descriptor_gen.data.cards import Card, data_root, load_cards
from descriptor_gen.data.datasets import load_dataset
from descriptor_gen.describe.prompts import PromptLibrary, build_prompt
from descriptor_gen.describe.published import import_published
from descriptor_gen.describe.store import write_store
from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.errors import DescgenError
from descriptor_gen.experiments.results import (
    SKIPPED,
    CellClock,
    append_row,
    bars,
    cell_id,
    done_cells,
    read_skipped,
)
from descriptor_gen.experiments.specs import ClipModelSpec, GenerationSpec, SpecName
from descriptor_gen.generation.backends import generation_identity
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.generation.generate import GenerationJob, generate
from descriptor_gen.hashing import sha256_file, sha256_text
from descriptor_gen.locks import exclusive
from descriptor_gen.score.engines import EngineOptions
from descriptor_gen.score.evaluate import EvalConfig, TextOptions, evaluate
from descriptor_gen.score.clip_ref import ClipRef
from descriptor_gen.describe.styles import Style
from descriptor_gen.generation.backends import GenerationParams
from descriptor_gen.generation.resolve import preset_style, style_params
from descriptor_gen.score.methods import METHODS, method as method_def
from descriptor_gen.score.neighbours import neighbour_finder

GENERATED_STYLES = {"generated": "dclip", "generated-cupl": "cupl",
                    "generated-comparative": "comparative"}


class SuiteMethod(TextOptions):
    """One column of the table.

    Attributes:
        method: how class vectors are made (`descgen eval --method`); `options` its options.
        descriptors: `dclip` or `cupl` (the card's published file of that format, from the
            spec's `descriptor_dir`), `generated` (asked of the spec's language model with the
            few-shot prompt), `generated-cupl` / `generated-comparative` (in CuPL's or the
            comparative style, with that preset's sampling settings), or None for methods
            without descriptors.
        neighbours: for `generated-comparative`, the nearest classes asked about.
        published: the key of the card's published numbers to print beside ours.
    """

    method: str = "descriptors"
    options: dict[str, Any] = {}
    descriptors: Literal["dclip", "cupl", "generated", "generated-cupl",
                         "generated-comparative"] | None = None
    neighbours: int = Field(default=10, ge=1)
    published: str | None = None


class SuiteClip(ClipModelSpec, EngineOptions):
    batch_size: int = Field(default=64, ge=1)
    workers: int | None = Field(default=None, ge=0)  # None: machine.loader_workers


class SuiteSpec(Model):
    """Methods x datasets; `model_key` picks the cards' published numbers (e.g. ViT-B-32)."""

    model_config = ConfigDict(extra="forbid")

    name: SpecName
    datasets: list[str] = Field(min_length=1)
    data_root: Path | None = None
    descriptor_dir: Path | None = None
    model_key: str | None = None
    clip: SuiteClip = SuiteClip()
    generation: GenerationSpec = GenerationSpec()
    prompt: dict[str, Any] = {}
    methods: dict[str, SuiteMethod] = Field(min_length=1)

    def checked(self, cards: dict[str, Card]) -> SuiteSpec:
        unknown = [d for d in self.datasets if d not in cards]
        if unknown:
            raise DescgenError(f"datasets: unknown card {unknown[0]!r} (known: {', '.join(cards)})")
        for name, method in self.methods.items():
            if method.method not in METHODS:
                raise DescgenError(f"methods.{name}.method: unknown method {method.method!r}")
            try:
                options = method_def(method.method).parse(method.options)
            except DescgenError as exc:
                raise DescgenError(f"methods.{name}: {exc}") from exc
            needs = method_def(method.method).needs_descriptors(options)
            if needs != (method.descriptors is not None):
                raise DescgenError(f"methods.{name}: method {method.method!r} "
                                   + ("needs" if method.descriptors is None else "takes no")
                                   + " descriptors")
        return self


def published_store(card: Card, kind: str, descriptor_dir: Path | None, out: Path,
                    classes: list[str], identity: dict[str, Any],
                    log: Callable[[str], None]) -> Path | None:
    """The card's published descriptor file of a format (`dclip`, `cupl`) imported into a store
    under `out/descriptors` (once per file), its hash added to `identity`; None, said in a
    line, when the card has none or the file is not in `descriptor_dir`. A subset card
    (ImageNet-A) takes its parent's file, imported under the parent's classes: the evaluation
    scores the subset's records."""
    entry = card.descriptors.get(kind)
    if entry is None and card.subset is not None:
        entry = load_cards()[card.subset.of].descriptors.get(kind)
        classes = card.parent_names() or classes
    if entry is None:
        log(f"{card.name}: no published {kind} descriptors for this dataset")
        return None
    if descriptor_dir is None:
        log(f"{card.name}: {kind} descriptors skipped: give descriptor_dir (a folder holding"
            f" {entry.file})")
        return None
    source = descriptor_dir / entry.file
    if not source.is_file():
        log(f"{card.name}: {kind} descriptors skipped: no {source}")
        return None
    digest = sha256_file(source)
    identity.update(store={"file": entry.file, "sha256": digest, "match": entry.match})
    store = out / "descriptors" / f"{card.name}-{kind}-{digest[:10]}.jsonl"
    if not store.exists():
        records, report = import_published(source, "cupl" if kind == "cupl" else "dclip",
                                           classes, entry.match)
        write_store(store, records)
        for line in report.lines():
            log(f"{card.name}: {entry.file}: {line}")
    return store


def _withheld(spec: SuiteSpec) -> str | None:
    """Why the published numbers must not stand beside ours: they are another model's."""
    if spec.model_key is not None and spec.model_key != spec.clip.model:
        return (f"published numbers withheld: they are {spec.model_key}'s (model_key) and this"
                f" run scores {spec.clip.model} (clip.model); set both to the same model to"
                " compare")
    return None


def _published(card: Card, model_key: str | None, key: str | None) -> float | None:
    entry = card.published.get(model_key or "", {}).get(key or "")
    return entry.top1 / 100 if entry else None


class _SuiteRun:
    def __init__(self, spec: SuiteSpec, out: Path, cache_dir: Path, prompts_dir: Path,
                 log: Callable[[str], None]) -> None:
        self.spec, self.out, self.cache_dir, self.prompts_dir = spec, out, cache_dir, prompts_dir
        self.said, self.skipped = "", []  # the last line said; cells not run, with why

        def say(message: str) -> None:
            self.said = message
            log(message)

        self.log = say
        self.root = data_root(spec.data_root)
        if self.root is not None and not self.root.is_dir():
            raise DescgenError(f"data root {self.root}: no such folder")
        self.library = PromptLibrary(prompts_dir)
        self.options = self.library.options(**{"bank": "default", **spec.prompt})
        self._clip: Any = None

    @property
    def clip(self) -> Any:
        if self._clip is None:
            c = self.spec.clip
            self._clip = ClipRef(c.model, c.pretrained, c.device, c.precision, self.cache_dir)
        return self._clip

    def _style(self, card: Card, method: SuiteMethod) -> tuple[Style, GenerationParams]:
        """A generated column's prompt style and generation parameters: the few-shot prompt
        with the spec's settings, or a style with its preset's sampling on the spec's model."""
        name = GENERATED_STYLES[str(method.descriptors)]
        params = style_params(self.spec.generation.params(), self.prompts_dir, name)
        style = preset_style(self.prompts_dir, name, card.name, {
            "neighbours": method.neighbours, "clip": self.spec.clip.identity()})
        return style, params

    def store(self, card: Card, classes: list[str], method: SuiteMethod,
              identity: dict[str, Any]) -> Path | None:
        """The descriptor store of a cell (made now if needed), or None when it cannot be had."""
        if method.descriptors in GENERATED_STYLES:
            style, params = self._style(card, method)
            chat = params.api == "chat"
            files = style.files(self.prompts_dir)
            if files:
                prompts = sha256_file(files[0])
            else:
                prompts = sha256_text("\n".join(build_prompt(c, self.options, self.library).sha256(
                    chat) for c in classes))
            identity.update(generation=generation_identity(params), prompts=prompts,
                            prompt_options=self.options.model_dump(), style=style.model_dump())
            store = self.out / "descriptors" / f"{card.name}-{sha256_text(json.dumps(identity, sort_keys=True, default=str))[:10]}.jsonl"
            try:
                style, neighbours = style.prepare(classes, neighbour_finder(
                    self.cache_dir, self.spec.clip.model, self.spec.clip.pretrained, clip=self.clip))
                summary = generate(GenerationJob(
                    classes=classes, out=store, options=self.options,
                    params=params, library=self.library, style=style, neighbours=neighbours,
                    cache=ResponseCache(self.cache_dir / RESPONSES),
                    concurrency=self.spec.generation.concurrency,
                    max_attempts=self.spec.generation.max_attempts, progress=bars(), log=self.log))
            except DescgenError as exc:
                self.log(f"{card.name}: generated descriptors skipped: {exc}")
                return None
            identity["llm_requests"] = summary.requests
            return store
        return published_store(card, str(method.descriptors), self.spec.descriptor_dir,
                               self.out, classes, identity, self.log)

    def run(self) -> list[dict[str, Any]]:
        cards = load_cards()
        results = self.out / "results.jsonl"
        done = done_cells(results, repair=True)
        rows = []
        found = 0
        self.clock = CellClock(len(self.spec.datasets) * len(self.spec.methods))
        self.withheld = _withheld(self.spec)
        if self.withheld:
            self.log(f"{self.spec.name}: {self.withheld}")
        for name in self.spec.datasets:
            card = cards[name]
            try:
                data = load_dataset(name, None, self.cache_dir, self.root)
            except DescgenError as exc:
                self.log(f"{name}: skipped: {exc}")
                self.skipped.append({"dataset": name, "column": "every column", "reason": str(exc),
                                     "clip": self.clip_named()})
                for _ in self.spec.methods:
                    self.clock.skip()
                continue
            found += 1
            classes = data.classes or []
            base = {"experiment": self.spec.name, "dataset": name,
                    "data": {"files": data.identity(), "labels": sha256_text(",".join(map(str, data.labels or [])))},
                    "classes": sha256_text("\n".join(classes)),
                    "clip": self.spec.clip.identity(),
                    "forms": sha256_file(self.prompts_dir / "text_forms.yaml")}
            for column, method in self.spec.methods.items():
                identity = {**base, "column": column, "method": method.model_dump(),
                            "method_options": method_def(method.method).parse(
                                method.options).model_dump()}
                store = None
                if method.descriptors is not None:
                    store = self.store(card, classes, method, identity)
                    if store is None:
                        self.skipped.append({"dataset": name, "column": column,
                                             "reason": self.said.partition(": ")[2],
                                             "clip": self.clip_named()})
                        self.clock.skip()
                        continue
                requests = identity.pop("llm_requests", 0)
                key = cell_id(identity)
                if key in done:
                    self.clock.skip()
                    continue
                rows.append(self._cell(card, method, column, identity, key, store, requests))
                append_row(results, rows[-1])
        self._write_skipped()
        if not found:
            raise DescgenError(f"{self.spec.name}: none of its datasets is under the data root"
                               f" ({self.root or 'none given: --data-root or $DESCRIPTOR_GEN_DATA'})")
        return rows

    def clip_named(self) -> dict[str, str]:
        """The CLIP as a row and a skipped cell name it (the report groups by it)."""
        c = self.spec.clip
        return {"model": c.model, "pretrained": c.pretrained, "precision": c.precision}

    def _write_skipped(self) -> None:
        """This run's cells not run, beside those the last run of another CLIP left (`suite
        --model A --model B` runs the suite once per CLIP, into one folder)."""
        ours = json.dumps(self.clip_named(), sort_keys=True)
        earlier = read_skipped(self.out / SKIPPED).get(self.spec.name, [])
        kept = [e for e in earlier
                if "clip" in e and json.dumps(e["clip"], sort_keys=True) != ours]
        text = json.dumps({self.spec.name: kept + self.skipped}, indent=1) + "\n"
        write_text_atomically(self.out / SKIPPED, text)

    def _cell(self, card: Card, method: SuiteMethod, column: str, identity: dict[str, Any],
              key: str, store: Path | None, requests: int) -> dict[str, Any]:
        started = time.perf_counter()
        c = self.spec.clip
        cfg = EvalConfig(dataset=card.name, data_root=self.root, descriptors=store,
                         method=method.method, options=method.options, model=c.model,
                         pretrained=c.pretrained,
                         precision=c.precision, device=c.device, batch_size=c.batch_size,
                         workers=c.workers, **method.model_dump(include=set(TextOptions.model_fields)),
                         **c.model_dump(include=set(EngineOptions.model_fields)))
        result = evaluate(cfg, None, self.cache_dir, self.prompts_dir, clip=self.clip, log=self.log,
                          progress=bars())
        published = None if self.withheld else _published(card, self.spec.model_key, method.published)
        self.log(self.clock.line(
            f"{self.spec.name}: {card.name} {column}: top-1 {100 * result.metrics['top1']:.2f}%"
            + (f" (published {100 * published:.2f}%)" if published is not None else "")))
        return {"experiment": self.spec.name, "cell": key, "dataset": card.name, "setting": {"dataset": card.name},
                "column": column, "method": method.method, "options": result.options,
                "metrics": result.metrics, "metrics_std": result.metrics_std,
                "repeats": result.repeats, "concept": result.concept,
                "published": published, "published_source": (card.published.get(self.spec.model_key or "", {}).get(method.published or "").source
                                                              if published is not None else None),
                "identity": identity, "text": result.text.model_dump() if result.text else None,
                "descriptor_file": str(store) if store else None, "llm_requests": requests,
                "clip": self.clip_named(),
                "published_withheld": self.withheld,
                "images_encoded": result.images_encoded, "device": result.device,
                "seconds": round(time.perf_counter() - started, 3)}


def run_suite(spec: SuiteSpec, out: Path, cache_dir: Path, prompts_dir: Path,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
              wait: bool = False) -> list[dict[str, Any]]:
    """Run every cell of the suite not yet in `out/results.jsonl`; returns the new rows."""
    spec.checked(load_cards())
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out / "results.jsonl", wait=wait):
        return _SuiteRun(spec, out, cache_dir, prompts_dir, log).run()
