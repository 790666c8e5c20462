"""Sweeps over the prompt options: generate each setting's descriptors, score them with every
method, and append one results line per (setting, method) cell, skipping the cells whose whole
identity (see :mod:`descriptor_gen.experiments.results`) is already there.

Cells: a method without descriptors is one cell; a method over descriptors is a cell per grid
setting and per given store; a method whose descriptors come from a prompt style (CuPL's
questions, comparative pairs) is one cell over the store the sweep generates in that style."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from descriptor_gen.models import Model
from descriptor_gen.paths import RESPONSES
from descriptor_gen.generation.backends import make_backend
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.score.clip_ref import ClipRef
from descriptor_gen.generation.generate import GenerationJob, GenerationSummary, generate
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions
from descriptor_gen.locks import exclusive
from descriptor_gen.experiments.results import CellClock, append_row, bars, done_cells
from descriptor_gen.describe.published import import_published
from descriptor_gen.describe.store import write_store
from descriptor_gen.score.neighbours import neighbour_finder
from descriptor_gen.learn.run import LearnConfig, LearnedScorer, learn

from descriptor_gen.experiments.plan import Cell, SweepIdentity, expand_grid, plan_cells
from descriptor_gen.experiments.specs import ExperimentSpec


def _learned_run(spec: ExperimentSpec, cell: Cell, ident: SweepIdentity, out_dir: Path,
                 cache_dir: Path, prompts_dir: Path, clip: Any,
                 log: Callable[[str], None]) -> Path | None:
    """Train a learned cell's run (resuming one a killed sweep left), or None for the others."""
    if not cell.entry.learned:
        return None
    folder = out_dir / "learned" / f"{cell.entry.method}-{cell.id[:12]}"
    source = cell.identity["train"]["spec"]
    cfg = LearnConfig(method=cell.entry.method, dataset=source, options=cell.entry.options,
                      classes=ident.classes, data_root=spec.data_root, descriptors=cell.store,
                      model=spec.clip.model, pretrained=spec.clip.pretrained,
                      device=spec.clip.device, workers=spec.clip.workers)
    trainer = clip if spec.clip.precision == "fp32" else None
    learn(cfg, folder, cache_dir, prompts_dir, resume=(folder / "run.json").exists(),
          progress=bars(), clip=trainer, log=log)
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
    points = expand_grid(spec, library, only)
    ident = SweepIdentity.of(spec, cache_dir, prompts_dir)
    results = out_dir / "results.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(results, wait=wait):
        return _run_cells(spec, points, ident, library, out_dir, cache_dir, prompts_dir, log)


class SweepRow(Model):
    """One line of `results.jsonl`: a cell's identity, its numbers and what it cost."""

    experiment: str
    cell: str
    setting: dict[str, Any]
    method: str
    method_name: str
    seed_group: str | None
    options: dict[str, Any]
    metrics: dict[str, Any]
    metrics_std: dict[str, Any] | None
    repeats: list[dict[str, Any]]
    concept: str | None
    identity: dict[str, Any]
    text: dict[str, Any] | None
    descriptors: dict[str, Any] | None
    descriptor_file: str | None
    llm_requests: int
    cache_hits: int
    classes_without_descriptors: int
    images_encoded: int
    device: str
    seconds: float
    per_class_recall: list[tuple[str, float | None]] = []
    clip: dict[str, str] | None = None  # as named (the identity holds a config by its hash)


@dataclass
class _Sweep:
    """What every cell of one run shares: the spec, the plan, the caches, the models."""

    spec: ExperimentSpec
    ident: SweepIdentity
    library: PromptLibrary
    out_dir: Path
    cache_dir: Path
    prompts_dir: Path
    log: Callable[[str], None]
    cache: ResponseCache
    clip: Any
    backend: Any  # a local model, loaded once; None: an HTTP client per generation

    def job(self, cell: Cell, **fields: Any) -> GenerationJob:
        spec = self.spec
        return GenerationJob(classes=self.ident.classes, out=cell.store, library=self.library,
                             cache=self.cache, concurrency=spec.generation.concurrency,
                             max_attempts=spec.generation.max_attempts, progress=bars(),
                             log=self.log, **fields)


def _given(run: _Sweep, cell: Cell) -> GenerationSummary | None:
    _given_store(cell, run.ident.classes, run.log)
    return None


def _styled(run: _Sweep, cell: Cell) -> GenerationSummary | None:
    assert cell.style is not None
    style, neighbours = cell.style.prepare(run.ident.classes, neighbour_finder(
        run.cache_dir, run.spec.clip.model, run.spec.clip.pretrained, clip=run.clip))
    params = cell.params or run.spec.generation.params()
    backend = run.backend if params == run.spec.generation.params() else None
    return generate(run.job(cell, options=PromptOptions(), params=params, style=style,
                            neighbours=neighbours, backend=backend))


def _grid(run: _Sweep, cell: Cell) -> GenerationSummary | None:
    assert cell.options is not None
    return generate(run.job(cell, options=cell.options, params=run.spec.generation.params(),
                            backend=run.backend))


DESCRIBE: dict[str, Callable[[_Sweep, Cell], GenerationSummary | None]] = {
    "given": _given, "style": _styled, "grid": _grid, "none": lambda run, cell: None}
"""How a cell of each kind gets its descriptors (the generation's summary, if it asked)."""


def run_cell(run: _Sweep, cell: Cell) -> SweepRow:
    """A cell's descriptors (generated or imported as needed), its learned run if any, and
    its evaluation."""
    started = time.perf_counter()
    spec = run.spec
    gen = DESCRIBE[cell.kind](run, cell)
    clip_options = spec.clip.model_dump()
    if run.ident.concept is not None:
        clip_options["concept"] = run.ident.concept
    learned = _learned_run(spec, cell, run.ident, run.out_dir, run.cache_dir, run.prompts_dir,
                           run.clip, run.log)
    cfg = EvalConfig(dataset=spec.dataset, data_root=spec.data_root,
                     descriptors=None if learned else cell.store,
                     method="classname" if learned else cell.entry.method,
                     options={} if learned else cell.entry.options, learned=learned,
                     **clip_options)
    result = evaluate(cfg, run.ident.classes, run.cache_dir, run.prompts_dir, clip=run.clip,
                      progress=bars(),
                      log=run.log, scorer=LearnedScorer(learned) if learned else None)
    return SweepRow(
        experiment=spec.name, cell=cell.id, setting=cell.identity["setting"],
        method=cell.method, method_name=cell.entry.method, seed_group=cell.entry.seed_group,
        options=result.options, metrics=result.metrics, metrics_std=result.metrics_std,
        repeats=result.repeats, concept=result.concept, identity=cell.identity,
        text=result.text.model_dump() if result.text else None,
        descriptors=result.counts.get("descriptors_per_class") if cell.store else None,
        descriptor_file=str(cell.store) if cell.store else None,
        llm_requests=gen.requests if gen else 0, cache_hits=gen.cache_hits if gen else 0,
        classes_without_descriptors=len(gen.failed) if gen else 0,
        images_encoded=result.images_encoded, device=result.device,
        seconds=round(time.perf_counter() - started, 3), per_class_recall=result.per_class_recall,
        clip={"model": result.model, "pretrained": result.pretrained, "precision": result.precision})


def _run_cells(spec: ExperimentSpec, points: list[PromptOptions], ident: SweepIdentity,
               library: PromptLibrary, out_dir: Path, cache_dir: Path, prompts_dir: Path,
               log: Callable[[str], None]) -> list[dict[str, Any]]:
    results = out_dir / "results.jsonl"
    done = done_cells(results, repair=True)
    cells = [c for c in plan_cells(spec, points, out_dir, library, ident) if c.id not in done]
    if not cells:
        log(f"{spec.name}: every cell is already in {results}")
        return []
    clip = ClipRef(spec.clip.model, spec.clip.pretrained, spec.clip.device, spec.clip.precision,
                   cache_dir)  # built only if a cell encodes something
    backend = make_backend(spec.generation.params()) if spec.generation.backend == "hf" else None
    run = _Sweep(spec, ident, library, out_dir, cache_dir, prompts_dir, log,
                 ResponseCache(cache_dir / RESPONSES), clip, backend)
    rows = []
    clock = CellClock(len(cells))
    try:
        for cell in cells:
            row = run_cell(run, cell).model_dump()
            append_row(results, row)
            rows.append(row)
            log(clock.line(f"{spec.name}: {cell.describe()} {cell.method}:"
                           f" top-1 {100 * row['metrics']['top1']:.2f}%"))
    finally:
        if backend is not None:
            asyncio.run(backend.aclose())
    return rows
