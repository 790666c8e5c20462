"""`descgen base2novel SPEC`: CoCoOp's base-to-novel protocol over datasets and methods.

Every learned column trains on the base half's K shots (drawn over all classes, then kept)
once per seed, and its run scores the base and the new halves of the test split; every
zero-shot column scores both halves directly. Each (dataset, column, seed, half) is a row keyed
by everything that can change it (the data, the CLIP, the method and its options, the run's
learned tensors), so a re-run does only what is new and a changed input is computed again.
The report gives base, new and their harmonic mean per dataset (mean ± std over seeds), the
average over datasets (the harmonic mean of the averages, as the field's tables), the
published anchors beside them, and each descriptor-guided column against its plain one.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.models import Model
from descriptor_gen.data.cards import data_root, find_card
from descriptor_gen.data.datasets import load_dataset
from descriptor_gen.errors import DescgenError
from descriptor_gen.experiments.results import CellClock, append_row, bars, cell_id, done_cells
from descriptor_gen.experiments.specs import SpecName
from descriptor_gen.experiments.suite import SuiteClip, published_store
from descriptor_gen.hashing import sha256_file, sha256_text
from descriptor_gen.learn.methods import LEARNED
from descriptor_gen.locks import exclusive
from descriptor_gen.score.clip_ref import ClipRef
from descriptor_gen.score.engine_options import EngineOptions
from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.score.methods import METHODS, method as method_def

HALVES = ("base", "new")

# ViT-B/16, the average over CoOp's 11 datasets, 16 shots, 3 seeds: base / new / HM. From the
# MaPLe paper's Table 1 as its repository's README repeats it (muzairkhattak/
# multimodal-prompt-learning); VPT, language-only and IVLP from the same README's model zoo.
ANCHORS: dict[str, tuple[float, float, float]] = {
    "CLIP": (69.34, 74.22, 71.70),
    "CoOp": (82.69, 63.22, 71.66),
    "CoCoOp": (80.47, 71.69, 75.83),
    "VPT (deep)": (80.24, 73.43, 76.68),
    "language prompts (deep)": (81.72, 73.81, 77.56),
    "IVLP": (82.15, 74.07, 77.90),
    "MaPLe": (82.28, 75.14, 78.55),
}
ANCHOR_SOURCE = "MaPLe (Khattak et al., CVPR 2023) Table 1 and its repository's README"


class B2NDataset(Model):
    """A dataset: a card name (its `train` and `test` splits), or `train`/`test` sources with
    `classes` for folders and CSVs; `descriptors`: a store over all its classes, for the
    columns that use descriptors."""

    model_config = ConfigDict(extra="forbid")

    name: str
    train: str | None = None
    test: str | None = None
    classes: Path | None = None
    descriptors: Path | None = None

    @property
    def train_spec(self) -> str:
        return self.train or f"{self.name}:train"

    @property
    def test_spec(self) -> str:
        """The given test source; for a card, CoOp's test list where CoOp fixed a split
        (`NAME:test-coop`, the protocol's), else the card's evaluation split."""
        if self.test:
            return self.test
        card = find_card(self.name)
        return f"{self.name}:test-coop" if card is not None and card.coop and card.coop.split else f"{self.name}:test"


class B2NColumn(Model):
    """A column: a learned method (`learned`, trained per seed) or a zero-shot method
    (`method`); `options` its options; `beside`: the plain column a descriptor-guided one is
    compared with."""

    model_config = ConfigDict(extra="forbid")

    learned: str | None = None
    method: str | None = None
    options: dict[str, Any] = {}
    beside: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> B2NColumn:
        if (self.learned is None) == (self.method is None):
            raise ValueError("give either learned (a learned method) or method (a zero-shot one)")
        if self.learned is not None and self.learned not in LEARNED:
            raise ValueError(f"unknown learned method {self.learned!r} (choose {', '.join(LEARNED)})")
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r} (choose {', '.join(METHODS)})")
        try:
            if self.learned is not None:
                LEARNED[self.learned].parse(self.options)
            else:
                method_def(str(self.method)).parse(self.options)
        except DescgenError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def uses_descriptors(self) -> bool:
        if self.learned is not None:
            definition = LEARNED[self.learned]
            return definition.needs_descriptors(definition.parse(self.options))
        mdef = method_def(str(self.method))
        return mdef.needs_descriptors(mdef.parse(self.options))


class B2NSpec(Model):
    """Datasets x columns; `descriptor_dir`: the references' published files, a card's DCLIP
    file imported for the columns that use descriptors where a dataset names no store."""

    model_config = ConfigDict(extra="forbid")

    name: SpecName
    datasets: list[B2NDataset] = Field(min_length=1)
    data_root: Path | None = None
    clip: SuiteClip = SuiteClip()
    shots: int = Field(default=16, ge=1)
    seeds: list[int] = Field(default=[1, 2, 3], min_length=1)
    descriptor_dir: Path | None = None
    columns: dict[str, B2NColumn] = Field(min_length=1)

    @model_validator(mode="after")
    def _besides(self) -> B2NSpec:
        for name, column in self.columns.items():
            if column.beside is not None and column.beside not in self.columns:
                raise ValueError(f"columns.{name}.beside: no column {column.beside!r}")
        return self


def harmonic(base: float, new: float) -> float:
    return 2 * base * new / (base + new) if base + new else 0.0


class _Run:
    def __init__(self, spec: B2NSpec, out: Path, cache_dir: Path, prompts_dir: Path,
                 log: Callable[[str], None]) -> None:
        self.spec, self.out, self.cache_dir, self.prompts_dir, self.log = spec, out, cache_dir, prompts_dir, log
        self.root = data_root(spec.data_root)
        c = spec.clip
        self.clip = ClipRef(c.model, c.pretrained, c.device, c.precision, cache_dir)
        self.results = out / "results.jsonl"
        self.done = done_cells(self.results, repair=True)

    def run(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        found, skipped = 0, []
        per_dataset = sum(2 * (len(self.spec.seeds) if c.learned else 1)
                          for c in self.spec.columns.values())
        self.clock = CellClock(len(self.spec.datasets) * per_dataset)
        for dataset in self.spec.datasets:
            classes = _classes(dataset)
            try:
                test = load_dataset(dataset.test_spec, classes, self.cache_dir, self.root)
            except DescgenError as exc:
                skipped.append(f"{dataset.name}: skipped: {exc}")
                self.clock.total -= per_dataset
                continue
            found += 1
            base = {"experiment": self.spec.name, "dataset": dataset.name,
                    "test": {"files": test.identity(), "labels": sha256_text(",".join(map(str, test.labels or [])))},
                    "classes": sha256_text("\n".join(test.classes or classes or [])),
                    "clip": self.spec.clip.identity(), "shots": self.spec.shots,
                    "forms": sha256_file(self.prompts_dir / "text_forms.yaml")}
            found = self._store(dataset, test.classes or classes or [])
            for name, column in self.spec.columns.items():
                if column.uses_descriptors() and found is None:
                    self.log(f"{dataset.name}: {name} skipped: it uses descriptors; give the"
                             " dataset's descriptors (a store over all its classes) or"
                             " descriptor_dir")
                    self.clock.total -= 2 * (len(self.spec.seeds) if column.learned else 1)
                    continue
                store = found if column.uses_descriptors() else None
                identity = {**base, "column": name, "column_spec": column.model_dump(),
                            "descriptors": sha256_file(store) if store else None}
                seeds: list[int | None] = list(self.spec.seeds) if column.learned else [None]
                for seed in seeds:
                    rows += self._cells(dataset, classes, name, column, store, identity, seed)
        if not found:
            raise DescgenError(f"{self.spec.name}: none of its {len(skipped)} datasets could be"
                               f" read (first: {skipped[0]})")
        for line in skipped:
            self.log(line)
        return rows

    def _store(self, dataset: B2NDataset, classes: list[str]) -> Path | None:
        if dataset.descriptors is not None:
            return dataset.descriptors
        card = find_card(dataset.name)
        if card is None or not any(c.uses_descriptors() for c in self.spec.columns.values()):
            return None
        return published_store(card, "dclip", self.spec.descriptor_dir, self.out, classes, {},
                               self.log)

    def _cells(self, dataset: B2NDataset, classes: list[str] | None, name: str,
               column: B2NColumn, store: Path | None, identity: dict[str, Any],
               seed: int | None) -> list[dict[str, Any]]:
        run = None
        if column.learned is not None:
            assert seed is not None
            run = self._train(dataset, classes, name, column, store, seed)
            identity = {**identity, "seed": seed, "run": sha256_file(run / "learned.safetensors")}
        rows = []
        for half in HALVES:
            key = cell_id({**identity, "half": half})
            if key in self.done:
                self.clock.skip()
                continue
            rows.append(self._score(dataset, classes, name, column, store, run, seed, half, key, identity))
            append_row(self.results, rows[-1])
            self.done.add(key)
        return rows

    def _train(self, dataset: B2NDataset, classes: list[str] | None, name: str,
               column: B2NColumn, store: Path | None, seed: int) -> Path:
        from descriptor_gen.learn.run import LearnConfig, learn  # torch: only for learned columns

        c = self.spec.clip
        trained_on = cell_id({"train": dataset.train_spec, "classes": classes, "column": column.model_dump(),
                              "store": sha256_file(store) if store else None, "shots": self.spec.shots,
                              "clip": c.identity()})
        # a run folder per training input: a changed store or CLIP trains a new run, never
        # resumes into (or is refused by) the old one
        run = self.out / "runs" / dataset.name / f"{name}-{trained_on[:10]}" / f"seed{seed}"
        options = {**column.options, "shots": self.spec.shots, "seed": seed}
        cfg = LearnConfig(method=str(column.learned), dataset=dataset.train_spec, options=options,
                          classes=classes, data_root=self.root, descriptors=store, model=c.model,
                          pretrained=c.pretrained, device=c.device, workers=c.workers,
                          subsample="base")
        trained = self.clip.load() if c.precision == "fp32" else None  # training runs in fp32
        learn(cfg, run, self.cache_dir, self.prompts_dir, progress=bars(), clip=trained, log=self.log)
        return run

    def _score(self, dataset: B2NDataset, classes: list[str] | None, name: str,
               column: B2NColumn, store: Path | None, run: Path | None, seed: int | None,
               half: str, key: str, identity: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        c = self.spec.clip
        scorer = None
        if run is not None:
            from descriptor_gen.learn.run import LearnedScorer

            scorer = LearnedScorer(run)
        cfg = EvalConfig(dataset=dataset.test_spec, data_root=self.root, descriptors=store,
                         method=column.method or "descriptors",
                         options=column.options if run is None else {}, learned=run,
                         model=c.model, pretrained=c.pretrained, precision=c.precision,
                         device=c.device, batch_size=c.batch_size, workers=c.workers,
                         subsample=half, **c.model_dump(include=set(EngineOptions.model_fields)))
        result = evaluate(cfg, classes, self.cache_dir, self.prompts_dir, clip=self.clip,
                          progress=bars(),
                          log=self.log, scorer=scorer)
        self.log(self.clock.line(f"{self.spec.name}: {dataset.name} {name}"
                                 + (f" seed {seed}" if seed is not None else "")
                                 + f" {half}: top-1 {100 * result.metrics['top1']:.2f}%"))
        return {"experiment": self.spec.name, "cell": key, "dataset": dataset.name,
                "column": name, "seed": seed, "half": half, "metrics": result.metrics,
                "classes": result.counts.get("classes"), "identity": identity,
                "run": str(run) if run else None, "device": result.device,
                "clip": {"model": c.model, "pretrained": c.pretrained, "precision": c.precision},
                "seconds": round(time.perf_counter() - started, 3)}


def _classes(dataset: B2NDataset) -> list[str] | None:
    if dataset.classes is None:
        return None
    from descriptor_gen.describe.classes import load_classes

    return load_classes(dataset.classes)


def run_base2novel(spec: B2NSpec, out: Path, cache_dir: Path, prompts_dir: Path,
                   log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                   wait: bool = False) -> list[dict[str, Any]]:
    """Run every cell not yet in `out/results.jsonl`; returns the new rows."""
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out / "results.jsonl", wait=wait):
        return _Run(spec, out, cache_dir, prompts_dir, log).run()


# -- the report --------------------------------------------------------------------------------


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{dataset: {column: {base, new, hm, base_std, new_std, seeds}}} in percent, the halves
    averaged over seeds (HM of the averages)."""
    by: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        top1 = row["metrics"]["top1"]
        by.setdefault((row["dataset"], row["column"], row["half"]), []).append(100 * float(top1))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (dataset, column, _), _values in by.items():
        cell = out.setdefault(dataset, {})
        if column in cell:
            continue
        base, new = by.get((dataset, column, "base")), by.get((dataset, column, "new"))
        if not base or not new:
            continue
        b, n = statistics.fmean(base), statistics.fmean(new)
        cell[column] = {"base": b, "new": n, "hm": harmonic(b, n), "seeds": len(base),
                        "base_std": statistics.stdev(base) if len(base) > 1 else None,
                        "new_std": statistics.stdev(new) if len(new) > 1 else None}
    return out


def average(summary: dict[str, dict[str, dict[str, Any]]], columns: list[str]) -> dict[str, dict[str, float]]:
    """Per column, over the datasets that have it: mean base, mean new, their HM."""
    out = {}
    for column in columns:
        cells = [d[column] for d in summary.values() if column in d]
        if cells:
            b = statistics.fmean(c["base"] for c in cells)
            n = statistics.fmean(c["new"] for c in cells)
            out[column] = {"base": b, "new": n, "hm": harmonic(b, n), "datasets": len(cells)}
    return out


def _pm(value: float, std: float | None) -> str:
    return f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def report_lines(spec: B2NSpec, rows: list[dict[str, Any]]) -> list[str]:
    spec_columns = spec.columns
    summary = summarise(rows)
    columns = [c for c in spec_columns if any(c in d for d in summary.values())]
    lines = ["# Base-to-novel generalisation", "",
             "Top-1 (%) on the base half and the new half of each test split (CoCoOp's protocol:"
             " base = the first ceil(n/2) classes), mean ± std over seeds; HM = harmonic mean of"
             f" base and new. CLIP {spec.clip.model} / {spec.clip.pretrained}, {spec.shots} shots"
             f" per base class, seeds {', '.join(map(str, spec.seeds))}.", ""]
    for dataset, cells in summary.items():
        lines += [f"## {dataset}", "", "| column | base | new | HM | seeds |", "| --- | --- | --- | --- | --- |"]
        for column in columns:
            if column in cells:
                c = cells[column]
                lines.append(f"| {column} | {_pm(c['base'], c['base_std'])} | {_pm(c['new'], c['new_std'])}"
                             f" | {c['hm']:.2f} | {c['seeds']} |")
        lines.append("")
    avg = average(summary, columns)
    lines += [f"## Average over datasets ({len(summary)})", "",
              "| column | base | new | HM | datasets |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['base']:.2f} | {v['new']:.2f} | {v['hm']:.2f} | {v['datasets']} |"
              for k, v in avg.items()]
    lines += ["", f"Published anchors (ViT-B/16, average over CoOp's 11 datasets, 16 shots, 3 seeds;"
              f" {ANCHOR_SOURCE}): comparable only on those datasets and that model.", "",
              "| method | base | new | HM |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {b:.2f} | {n:.2f} | {h:.2f} |" for k, (b, n, h) in ANCHORS.items()]
    guided = [(k, c.beside) for k, c in spec_columns.items() if c.beside and k in avg and c.beside in avg]
    if guided:
        lines += ["", "## Do descriptors help on new classes?", "",
                  "| guided | plain | Δ base | Δ new | Δ HM |", "| --- | --- | --- | --- | --- |"]
        for k, plain in guided:
            g, p = avg[k], avg[str(plain)]
            lines.append(f"| {k} | {plain} | {g['base'] - p['base']:+.2f} | {g['new'] - p['new']:+.2f}"
                         f" | {g['hm'] - p['hm']:+.2f} |")
    return lines


def write_base2novel_report(out: Path, spec: B2NSpec) -> Path:
    """`out/report.md` from `out/results.jsonl` (every row of this spec's experiment)."""
    import json

    from descriptor_gen.inputs import read_text

    results = out / "results.jsonl"
    rows = [json.loads(line) for line in read_text(results, "results file").splitlines()
            if line.strip()] if results.exists() else []
    rows = [r for r in rows if r.get("experiment") == spec.name and "half" in r]
    path = out / "report.md"
    text = "\n".join(report_lines(spec, rows)) + "\n"
    write_text_atomically(path, text)
    return path
