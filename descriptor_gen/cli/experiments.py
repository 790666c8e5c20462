"""`descgen sweep`, `report`, `build`, `suite`, `base2novel`: experiments and their tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import output_dir, output_file
from descriptor_gen.paths import RESPONSES, CachePaths, results_root
from descriptor_gen.describe.prompts import PromptLibrary
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.score.model_list import model_pairs
from descriptor_gen.experiments.plan import (
    SweepIdentity,
    expand_grid,
    plan_cells,
    requests_needed,
    setting_slug,
)
from descriptor_gen.experiments.specs import load_spec, load_yaml_model
from descriptor_gen.experiments.results import done_cells
from descriptor_gen.experiments.report import is_suite, write_report, write_suite_report
from descriptor_gen.cli.options import (
    CacheDir,
    DataRoot,
    OutFolder,
    SetKeys,
    SpecModelEntries,
    SpecModels,
    SpecWeights,
    Wait,
)

app = typer.Typer(rich_markup_mode=None, add_completion=False)


@app.command("sweep")
def sweep_cmd(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Experiment spec (YAML).")],
    out: OutFolder = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only settings with KEY=VALUE (repeatable).")] = None,
    set_: SetKeys = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the grid and the LLM requests it would send.")] = False,
    wait: Wait = False,
    model: SpecModels = None,
    pretrained: SpecWeights = None,
    models: SpecModelEntries = None,
    cache_dir: CacheDir = None,
) -> None:
    """Run an experiment: generate each setting's descriptors and score them with every method."""
    from descriptor_gen.experiments.sweep import run_sweep

    variants = with_clips(load_spec(spec, set_), model, pretrained, models)
    paths = CachePaths.resolve(cache_dir, writable=True)
    folder = out or results_root() / variants[0].name
    if folder.exists() and not folder.is_dir():
        raise DescgenError(f"--out {folder}: is a file, expected a results folder")
    if dry_run:
        for experiment in variants:
            if len(variants) > 1:
                typer.echo(f"CLIP {experiment.clip.model} / {experiment.clip.pretrained}:")
            _dry_run(experiment, folder, paths, only)
        return
    output_dir(folder, "--out")
    for experiment in variants:  # each CLIP loads once; its cells resume as any sweep's
        run_sweep(experiment, folder, paths.cache_dir, paths.prompts_dir, only, wait=wait)
    typer.echo(f"results: {folder / 'results.jsonl'}")
    for path in _with_table(write_report(folder), folder):  # every sweep's, not a step to remember
        typer.echo(str(path))


def with_clips(spec: Any, model: list[str] | None, pretrained: list[str] | None,
               entries: list[str] | None) -> list[Any]:
    """The spec once per CLIP asked for (`--model`/`--pretrained`/`--models`), else as it is."""
    if not (model or pretrained or entries):
        return [spec]
    pairs = model_pairs(model, pretrained, entries, default=(spec.clip.model, spec.clip.pretrained))
    return [spec.model_copy(update={"clip": spec.clip.model_copy(update={"model": m, "pretrained": p})})
            for m, p in pairs]


def _dry_run(experiment: Any, folder: Path, paths: CachePaths, only: list[str] | None) -> None:
    """The grid, the cells already done and the requests a sweep would send."""
    library = PromptLibrary(paths.prompts_dir)
    grid = expand_grid(experiment, library, only)
    for options in grid:
        typer.echo(setting_slug(options))
    ident = SweepIdentity.of(experiment, paths.cache_dir, paths.prompts_dir, ask=False)
    cells = plan_cells(experiment, grid, folder, library, ident)
    done = done_cells(folder / "results.jsonl")
    cache = ResponseCache(paths.cache_dir / RESPONSES)
    needed = requests_needed(experiment, grid, folder, cache, library, ident)
    for entry in experiment.methods:
        typer.echo(f"method: {entry.name}")
    typer.echo(f"{len(grid)} settings x {len(experiment.methods)} methods: {len(cells)} cells,"
               f" {sum(c.id in done for c in cells)} already done;"
               f" LLM requests to send: {needed}")


@app.command("report")
def report_cmd(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A sweep's or a suite's results folder.")],
) -> None:
    """Write DIR/report.md (a table per experiment, best row marked) and the study's figures;
    for a suite, ours beside the published numbers."""
    write = write_suite_report if is_suite(folder) else write_report
    for path in _with_table(write(folder), folder):
        typer.echo(str(path))


def _with_table(written: list[Path], folder: Path) -> list[Path]:
    """The report's files and the folder's long CSV (`descgen build`'s columns)."""
    from descriptor_gen.experiments.table import write_folder_table

    table = write_folder_table(folder)
    return [*written, table] if table is not None else written


@app.command("build")
def build_cmd(
    results: Annotated[list[Path], typer.Argument(metavar="RESULT...", help="Result files of descgen eval or CLIP_benchmark, folders of them, or results folders (results.jsonl) of sweeps, suites and base2novel.")],
    output: Annotated[Path, typer.Option("--output", help="The CSV to write.")] = Path("benchmark.csv"),
) -> None:
    """One long CSV of evaluations (dataset, model, pretrained, method, setting, seed, n_images,
    acc1, acc5, mean_per_class_recall), as CLIP_benchmark's build makes it."""
    from descriptor_gen.experiments.table import table_rows, write_table

    output_file(output, "--output")
    rows = table_rows(results)
    typer.echo(f"{len(rows)} rows: {write_table(rows, output)}")


@app.command("suite")
def suite_cmd(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Suite spec (YAML): datasets x methods.")],
    out: OutFolder = None,
    set_: SetKeys = None,
    data_root: DataRoot = None,
    cache_dir: CacheDir = None,
    wait: Wait = False,
    model: SpecModels = None,
    pretrained: SpecWeights = None,
    models: SpecModelEntries = None,
) -> None:
    """Run methods x benchmark datasets (those found under the data root) and write the table
    with the published numbers beside ours (a table per CLIP)."""
    from descriptor_gen.experiments.suite import SuiteSpec, run_suite

    suite, folder, paths = _benchmark_spec(spec, SuiteSpec, set_, data_root, cache_dir, out)
    for variant in with_clips(suite, model, pretrained, models):
        run_suite(variant, folder, paths.cache_dir, paths.prompts_dir, wait=wait)
    for path in _with_table(write_suite_report(folder), folder):
        typer.echo(str(path))


def _benchmark_spec(spec: Path, model: type[Any], set_: list[str] | None, data_root: Path | None,
                    cache_dir: Path | None, out: Path | None) -> tuple[Any, Path, CachePaths]:
    """A suite-like spec read with its `--set` keys and `--data-root`, the writable caches,
    and its output folder (`results/NAME` unless `--out`)."""
    loaded = load_yaml_model(spec, model, set_)
    if data_root is not None:
        loaded = loaded.model_copy(update={"data_root": data_root})
    paths = CachePaths.resolve(cache_dir, writable=True)
    return loaded, output_dir(out or results_root() / loaded.name, "--out"), paths


@app.command("base2novel")
def base2novel_cmd(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Base-to-novel spec (YAML): datasets x columns (learned methods trained on the base half per seed, zero-shot methods).")],
    out: OutFolder = None,
    set_: SetKeys = None,
    data_root: DataRoot = None,
    cache_dir: CacheDir = None,
    wait: Wait = False,
) -> None:
    """CoCoOp's base-to-novel protocol: train on the base half of each dataset's classes,
    score the base and the new halves, and report base, new and their harmonic mean."""
    from descriptor_gen.experiments.base2novel import B2NSpec, run_base2novel, write_base2novel_report

    protocol, folder, paths = _benchmark_spec(spec, B2NSpec, set_, data_root, cache_dir, out)
    run_base2novel(protocol, folder, paths.cache_dir, paths.prompts_dir, wait=wait)
    for path in _with_table([write_base2novel_report(folder, protocol)], folder):
        typer.echo(str(path))
