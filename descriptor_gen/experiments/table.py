"""`descgen build`: result files and results folders -> one long CSV, a row per evaluation, in
CLIP_benchmark's metric names (its `build` users and pandas read it as they read theirs).

Read: descgen's eval result files (either vintage), CLIP_benchmark's own result files, folders
of them, and the `results.jsonl` of sweeps, suites and base-to-novel runs (a row per cell and
seed; seeds are not averaged here)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.errors import DescgenError
from descriptor_gen.experiments.results import read_rows
from descriptor_gen.score.result_file import LANGUAGE, TASK, benchmark_metrics, read_result_file

COLUMNS = ("dataset", "model", "pretrained", "method", "setting", "seed", "n_images", "acc1",
           "acc5", "mean_per_class_recall", "model_fullname", "task", "language", "experiment",
           "source")
RESULTS = "results.jsonl"
TABLE = "results.csv"


def _setting(setting: dict[str, Any] | None) -> str:
    return "; ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                     for k, v in sorted((setting or {}).items()))


def _row(dataset: str, model: str, pretrained: str, method: str, metrics: dict[str, Any],
         source: str, **rest: Any) -> dict[str, Any]:
    named = benchmark_metrics(metrics)
    return {"dataset": dataset, "model": model, "pretrained": pretrained, "method": method,
            "setting": rest.get("setting", ""), "seed": rest.get("seed"),
            "n_images": named.get("n_images"), "acc1": named.get("acc1"),
            "acc5": named.get("acc5"), "mean_per_class_recall": named.get("mean_per_class_recall"),
            "model_fullname": f"{model} {pretrained}", "task": rest.get("task", TASK),
            "language": rest.get("language", LANGUAGE), "experiment": rest.get("experiment", ""),
            "source": source}


def file_row(path: Path) -> dict[str, Any]:
    """A row of one result file (descgen's or CLIP_benchmark's; theirs has no method:
    CLIP_benchmark's zero-shot classifier is the class-name templates')."""
    found = read_result_file(path)
    extra = found.model_extra or {}
    method = found.method or "templates"
    seed = (extra.get("options") or {}).get("seed")
    setting = "" if extra.get("subsample", "all") == "all" else f"subsample={extra['subsample']}"
    return _row(found.dataset, found.model, found.pretrained, method, found.metrics, str(path),
                task=found.task, language=found.language, seed=seed, setting=setting)


def _clip_of(row: dict[str, Any]) -> tuple[str, str]:
    """A results row's CLIP as it was named (rows before `clip` was kept: its identity)."""
    clip = row.get("clip") or {}
    if clip.get("model"):
        return str(clip["model"]), str(clip.get("pretrained", ""))
    known = (row.get("identity") or {}).get("clip") or {}
    return str(known.get("model", "")), str(known.get("weights", ""))


def results_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A row of a sweep's, suite's or base-to-novel run's `results.jsonl`."""
    if not isinstance(row.get("metrics"), dict):
        raise DescgenError(f"{where}: a results row has no metrics")
    model, weights = _clip_of(row)
    identity = row.get("identity") or {}
    dataset = row.get("dataset") or (identity.get("data") or {}).get("spec", "")
    method = row.get("method_name") or row.get("column") or row.get("method") or ""
    setting = {k: v for k, v in (row.get("setting") or {}).items() if k != "dataset"}
    if "half" in row:
        setting["half"] = row["half"]
    seed = row.get("seed", (row.get("options") or {}).get("seed"))
    return _row(str(dataset), model, weights, str(method), row["metrics"], where,
                setting=_setting(setting), seed=seed, experiment=row.get("experiment", ""))


def _folder_rows(folder: Path) -> list[dict[str, Any]]:
    results = folder / RESULTS
    if results.is_file():
        return [results_row(row, f"{results}:{number}") for number, row in read_rows(results)]
    files = sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.is_file())
    if not files:
        raise DescgenError(f"{folder}: no {RESULTS} and no result files (*.json)")
    return [file_row(p) for p in files]


def table_rows(paths: list[Path]) -> list[dict[str, Any]]:
    """Every row of the given files and folders, in the order given."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        if path.is_dir():
            rows.extend(_folder_rows(path))
        elif path.suffix == ".jsonl":
            rows.extend(results_row(row, f"{path}:{n}") for n, row in read_rows(path))
        elif path.is_file():
            rows.append(file_row(path))
        else:
            raise DescgenError(f"{path}: no such result file or folder")
    return rows


def write_table(rows: list[dict[str, Any]], out: Path) -> Path:
    """The rows as CSV (`COLUMNS`, empty for an absent value), all or nothing."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, text.getvalue())
    return out


def write_folder_table(folder: Path) -> Path | None:
    """`DIR/results.csv` of a sweep's, suite's or base-to-novel run's folder (None for a folder
    of other rows, such as a marker ablation's, which has no classification metrics)."""
    rows = _folder_rows(folder)
    if not any(row["acc1"] is not None for row in rows):
        return None
    return write_table(rows, folder / TABLE)
