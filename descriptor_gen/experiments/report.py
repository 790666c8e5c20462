"""`descgen report DIR`: results.jsonl -> report.md with a table per experiment and PNG figures
of the study (top-1 and entropy against |D(c)|, bars for the instruction and examples runs).

Rows whose identities differ (another language model, CLIP weights, dataset, class list or text
form) are never mixed: each run gets its own table and figures, titled by what sets it apart."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError

from descriptor_gen.atomic import save_figure_atomically, write_text_atomically
from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.experiments.results import SKIPPED, read_rows, read_skipped
from descriptor_gen.inputs import validation_message

OPTION_KEYS = ("per_example", "detailed", "instruction", "examples", "bank")


class ResultRow(Model):
    """The part of a results line a report reads; other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")

    experiment: str
    setting: dict[str, Any]
    method: str
    metrics: dict[str, float | None]


SWEEP_METRICS = ("top1", "mean_per_class_recall", "mean_entropy")


def read_results(folder: Path, needed: tuple[str, ...] = SWEEP_METRICS) -> list[dict[str, Any]]:
    """The rows of `folder/results.jsonl`, each checked for the keys and metrics a report needs;
    a torn last line (a killed sweep's) is skipped, any other bad line is an error naming it."""
    if folder.exists() and not folder.is_dir():
        raise DescgenError(f"{folder}: is a file, expected a results folder")
    path = folder / "results.jsonl"
    if not path.is_file():
        raise DescgenError(f"{path}: no results (run `descgen sweep` first)")
    rows = [_checked(data, needed, f"{path}:{number}") for number, data in read_rows(path)]
    if not rows:
        raise DescgenError(f"{path}: no results")
    return rows


def _checked(data: Any, needed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DescgenError(f"{where}: expected a JSON object, got {type(data).__name__}")
    try:
        ResultRow.model_validate(data)
    except ValidationError as exc:
        raise DescgenError(f"{where}: {validation_message(exc)}") from exc
    missing = [k for k in needed if data["metrics"].get(k) is None]
    if missing:
        raise DescgenError(f"{where}: metrics has no {', '.join(missing)}")
    return data


def _grid_settings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["setting"] for r in rows if r["setting"] and "store" not in r["setting"]
            and "style" not in r["setting"] and "shots" not in r["setting"]]


def _varying(rows: list[dict[str, Any]], keys: tuple[str, ...] = OPTION_KEYS) -> list[str]:
    return [k for k in keys if len({json.dumps(s.get(k)) for s in _grid_settings(rows)}) > 1]


def _label(row: dict[str, Any], keys: list[str]) -> str:
    if not row["setting"]:
        return "(baseline)"
    if "store" in row["setting"]:
        return f"store: {row['setting']['store']}"
    if "style" in row["setting"]:
        return f"style: {row['setting']['style']}"
    if "shots" in row["setting"]:
        grid = ", ".join(f"{k}={row['setting'][k]}" for k in keys if k in row["setting"])
        return f"{row['setting']['shots']} shots" + (f", {grid}" if grid else "")
    return ", ".join(f"{k}={row['setting'][k]}" for k in keys) or f"bank={row['setting']['bank']}"


def _percent(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _spread(row: dict[str, Any], key: str) -> float | None:
    return (row.get("metrics_std") or {}).get(key)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    keys = _varying(rows)
    best = max(rows, key=lambda r: r["metrics"]["top1"])
    lines = ["| setting | method | top-1 | top-5 | mean recall | entropy | descriptors/class | LLM requests |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        m = row["metrics"]
        mark = " **(best)**" if row is best else ""
        per_class = f"{row['descriptors']['mean']:.2f}" if row.get("descriptors") else "-"
        lines.append(f"| {_label(row, keys)}{mark} | {row['method']} |"
                     f" {_percent(m['top1'], _spread(row, 'top1'))} |"
                     f" {_percent(m.get('top5'), _spread(row, 'top5'))} |"
                     f" {_percent(m['mean_per_class_recall'], _spread(row, 'mean_per_class_recall'))} |"
                     f" {m['mean_entropy']:.3f} | {per_class} | {row.get('llm_requests', 0)} |")
    if any(row.get("metrics_std") for row in rows):
        lines += ["", "± : standard deviation over the method's seeds (mean over them shown)."]
    return lines


_EVALUATION_KEYS = ("classes", "data", "clip", "text")


_LLM_KEYS = ("backend", "model", "base_url", "api", "files")


def _llm(generation: dict[str, Any]) -> str:
    """The language model of a generation identity, without its sampling settings."""
    return json.dumps({k: generation.get(k) for k in _LLM_KEYS}, sort_keys=True)


def _runs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Split one experiment's rows into runs of one identity each: rows evaluated alike
    (class list, data, CLIP, text forms) and, for descriptor rows, generated alike. Baseline
    rows join every run of their evaluation; rows of a prompt style (CuPL, comparative: their
    own sampling settings) join every run of the same language model. Returns (identity, rows)
    pairs in first-seen order."""
    evaluations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        identity = row.get("identity") or {}
        key = json.dumps({k: identity.get(k) for k in _EVALUATION_KEYS}, sort_keys=True)
        evaluations[key].append(row)
    runs = []
    for key, group in evaluations.items():
        evaluation = json.loads(key)
        by_generation: dict[str, list[dict[str, Any]]] = defaultdict(list)
        styled: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in group:
            generation = (row.get("identity") or {}).get("generation")
            if generation is None:
                continue
            if "style" in row["setting"]:
                styled[_llm(generation)].append(row)
            else:
                by_generation[json.dumps(generation, sort_keys=True)].append(row)
        baselines = [r for r in group if (r.get("identity") or {}).get("generation") is None]
        joined: set[str] = set()
        for generation_key, described in by_generation.items():
            generation = json.loads(generation_key)
            identity = {**evaluation, "generation": generation}
            joined.add(_llm(generation))
            chosen = {id(r) for r in baselines + described + styled.get(_llm(generation), [])}
            runs.append((identity, [r for r in group if id(r) in chosen]))
        alone = [llm for llm in styled if llm not in joined]
        for llm in alone:
            chosen = {id(r) for r in baselines + styled[llm]}
            runs.append(({**evaluation, "generation": json.loads(llm)},
                         [r for r in group if id(r) in chosen]))
        if not by_generation and not alone:
            runs.append((evaluation, baselines))
    return runs


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def _titles(identities: list[dict[str, Any]]) -> list[str]:
    """For each run, the identity values that set it apart from the experiment's other runs."""
    flat = [_flatten(i) for i in identities]
    keys = sorted({k for f in flat for k in f})
    differing = [k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]
    return ["; ".join(f"{k}={_short(f.get(k))}" for k in differing) for f in flat]


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def line_series(rows: list[dict[str, Any]], metric: str) -> dict[str, list[tuple[int, float]]]:
    """The study's Fig. 1/2 data: per detailedness, (|D(c)|, metric) of the descriptor rows,
    sorted by |D(c)|; top-1 in percent."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        if row["setting"] and row["method"] == "descriptors" and isinstance(
                row["setting"].get("per_example"), int):
            label = "detailed" if row["setting"]["detailed"] else "short phrases"
            value = row["metrics"][metric] * (100 if metric == "top1" else 1)
            series[label].append((row["setting"]["per_example"], value))
    return {label: sorted(points) for label, points in sorted(series.items())}


def bar_values(rows: list[dict[str, Any]], keys: list[str],
               metric: str = "top1") -> tuple[list[str], list[float]]:
    """Bar labels and heights (percent), one a row, in row order."""
    several = len({r["method"] for r in rows if r["setting"]}) > 1
    labels = [_label(r, keys) + ("" if r["setting"] and "store" not in r["setting"]
                                 and "style" not in r["setting"] and "shots" not in r["setting"]
                                 and not several
                                 else f" {r['method']}") for r in rows]
    return labels, [100 * r["metrics"][metric] for r in rows]


def shots_series(rows: list[dict[str, Any]]) -> tuple[dict[str, list[tuple[int, float]]], dict[str, float]]:
    """The few-shot figure's data: per learned method, (K, top-1 %) sorted by K; and the
    zero-shot rows' top-1 (%) by method, drawn as horizontal lines."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    flat: dict[str, float] = {}
    for row in rows:
        value = 100 * row["metrics"]["top1"]
        if "shots" in row["setting"]:
            series[row.get("method_name") or row["method"]].append((int(row["setting"]["shots"]), value))
        else:
            flat.setdefault(row["method"] if not row["setting"] else f"{_label(row, [])} {row['method']}", value)
    return {k: sorted(v) for k, v in sorted(series.items())}, flat


def _plot_shots(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, flat = shots_series(rows)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    for label, value in flat.items():
        ax.axhline(value, linestyle="--", linewidth=1, label=f"{label} (zero-shot)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure_atomically(fig, path, 120)
    plt.close(fig)


def baseline_values(rows: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """The baselines of a |D(c)| figure: rows scored without descriptors (class name,
    templates), by method, top-1 in percent; baselines of one value share a line and a label
    (`classname = templates`), so that none hides another."""
    by_value: dict[float, list[str]] = defaultdict(list)
    for r in rows:
        if not r["setting"] and r["metrics"].get(metric) is not None:
            by_value[round(r["metrics"][metric] * (100 if metric == "top1" else 1), 9)].append(r["method"])
    return {" = ".join(methods): value for value, methods in by_value.items()}


def figure_caption(rows: list[dict[str, Any]]) -> str:
    """What every figure names: the CLIP (model / weights) and the images it scored."""
    clips = sorted({f"{c['model']} / {c['weights']}" for r in rows
                    if isinstance(c := (r.get("identity") or {}).get("clip"), dict)
                    and {"model", "weights"} <= set(c)})
    images = sorted({r["metrics"].get("n_images") for r in rows if r["metrics"].get("n_images")})
    shown = [Path(c).name if "/" in c.split(" / ")[0] else c for c in clips]
    return (f"CLIP {', '.join(shown) or 'unrecorded'}; "
            f"{'/'.join(map(str, images)) or '?'} images")


SERIES_STYLES = [("tab:blue", "o", "-"), ("tab:orange", "s", "-"), ("tab:green", "^", "-"),
                 ("tab:red", "D", "-"), ("tab:purple", "v", "-"), ("tab:brown", "P", "-")]
BASELINE_STYLES = [("black", ":"), ("dimgray", "--"), ("gray", "-.")]


def _plot_lines(rows: list[dict[str, Any]], metric: str, ylabel: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = lines_figure(rows, metric, ylabel)
    save_figure_atomically(fig, path, 120)
    plt.close(fig)


def lines_figure(rows: list[dict[str, Any]], metric: str, ylabel: str) -> Any:
    """The study's |D(c)| figure: a line per detailedness (each its own colour and marker),
    the baselines as labelled reference lines, the CLIP and image count in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (label, points), (colour, marker, style) in zip(line_series(rows, metric).items(),
                                                        SERIES_STYLES * 4):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, color=colour,
                linestyle=style, label=f"descriptors, {label}")
    for (method, value), (colour, style) in zip(baseline_values(rows, metric).items(),
                                                BASELINE_STYLES * 4):
        ax.axhline(value, color=colour, linestyle=style, linewidth=1.2, label=f"{method} (baseline)")
    ax.set_xlabel("|D(c)| (descriptors per example)")
    ax.set_ylabel(ylabel)
    ax.set_title(figure_caption(rows), fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def class_gains(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, float]]] | None:
    """The figure every descriptor paper shows: per class, the best descriptor row's top-1
    recall minus the class-name baseline's (percentage points), sorted; None without both."""
    base = next((r for r in rows if not r["setting"] and r["method"] == "classname"
                 and r.get("per_class_recall")), None)
    described = [r for r in rows if r["setting"] and r["method"] == "descriptors"
                 and r.get("per_class_recall")]
    if base is None or not described:
        return None
    best = max(described, key=lambda r: r["metrics"]["top1"])
    gains = [(name, 100 * (ours - theirs)) for (name, ours), (_, theirs)
             in zip(best["per_class_recall"], base["per_class_recall"])
             if ours is not None and theirs is not None]
    return best, sorted(gains, key=lambda g: g[1])


def _named(gains: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} ({gain:+.1f})" for name, gain in gains)


def gains_figure(rows: list[dict[str, Any]], keys: list[str], named: int = 3) -> Any:
    """Bars of the sorted per-class gains, zero drawn, the `named` worst and best classes
    written beside their bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = class_gains(rows)
    assert found is not None
    best, gains = found
    values = [g for _, g in gains]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.bar(range(len(values)), values, width=1.0,
           color=["tab:green" if v > 0 else "tab:red" if v < 0 else "gray" for v in values])
    ax.axhline(0, color="black", linewidth=0.8)
    shown = sorted({*range(min(named, len(gains))), *range(max(0, len(gains) - named), len(gains))})
    span = max(max(values, default=0.0), 0.0) - min(min(values, default=0.0), 0.0) or 1.0
    for i in shown:  # each name on the other side of zero from its bar: never on a bar or the title
        ax.annotate(gains[i][0], (i, 0.0), xytext=(0, 3 if values[i] <= 0 else -3),
                    textcoords="offset points", fontsize=7, rotation=90, ha="center",
                    va="bottom" if values[i] <= 0 else "top")
    ax.set_ylim(min(min(values), 0.0) - 0.35 * span, max(max(values), 0.0) + 0.35 * span)
    ax.set_xticks([])
    ax.set_xlabel(f"classes ({len(gains)}), sorted by gain; the {named} worst and best named")
    ax.set_ylabel("top-1 recall gain (pp)")
    ax.set_title(f"{_label(best, keys)} descriptors − class name; {figure_caption(rows)}", fontsize=8)
    fig.tight_layout()
    return fig


def _plot_bars(rows: list[dict[str, Any]], keys: list[str], path: Path, title: str,
               metric: str = "top1", ylabel: str = "top-1 (%)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = bar_values(rows, keys, metric)
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(rows)), 3.5))
    ax.bar(range(len(rows)), values, color="tab:blue")
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    low = min(values)
    ax.set_ylim(max(0.0, low - 5), max(values) + 2)
    fig.tight_layout()
    save_figure_atomically(fig, path, 120)
    plt.close(fig)


def merge_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one seed list (a learned entry's `seed: [1, 2, 3]`) as one row: each metric's
    mean over the seeds, its standard deviation (numpy's, as CoOp's parse_test_res.py) and
    each seed's in `repeats`; other rows as they are, in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    order: list[Any] = []
    for row in rows:
        if not row.get("seed_group"):
            order.append(row)
            continue
        identity = dict(row.get("identity") or {})
        identity["method_options"] = {k: v for k, v in (identity.get("method_options") or {}).items()
                                      if k != "seed"}
        key = json.dumps([row["experiment"], row["setting"], row["seed_group"], identity],
                         sort_keys=True, default=str)
        if key not in groups:
            order.append(key)
        groups[key].append(row)
    return [item if isinstance(item, dict) else _merged(groups[item]) for item in order]


def _merged(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    if len(rows) == 1:
        return rows[0]
    seeds = [(r.get("options") or {}).get("seed") for r in rows]
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for key, value in rows[0]["metrics"].items():
        values = [r["metrics"].get(key) for r in rows]
        if value is None or any(v is None for v in values) or key == "n_images":
            mean[key], std[key] = value, None
        else:
            mean[key], std[key] = float(np.mean(values)), float(np.std(values))
    return {**rows[0], "method": f"{rows[0]['seed_group']} (seeds {', '.join(map(str, seeds))})",
            "metrics": mean, "metrics_std": std,
            "repeats": [{"seed": s, **r["metrics"]} for s, r in zip(seeds, rows)]}


def write_report(folder: Path) -> list[Path]:
    """Write `report.md` and the figures that the results allow; returns the files written."""
    rows = merge_seeds(read_results(folder))
    by_experiment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_experiment[row["experiment"]].append(row)
    lines = ["# Results", ""]
    written: list[Path] = []
    for name, rows_of_experiment in by_experiment.items():
        lines += [f"## {name}", "", f"{figure_caption(rows_of_experiment)}. Top-1, top-5 and mean"
                  " per-class recall in percent; entropy: of the softmax over scores rescaled to"
                  " [-10, 10], in nats (the study's Fig. 2).", ""]
        runs = _runs(rows_of_experiment)
        titles = _titles([identity for identity, _ in runs])
        for number, ((_, group), title) in enumerate(zip(runs, titles), start=1):
            if len(runs) > 1:
                lines += [f"### run {number}: {title}", ""]
            lines += [*_table(group), ""]
            slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
            if len(runs) > 1:
                slug = f"{slug}_run{number}"
            lines += _figures(group, folder, slug, name, written)
    report = folder / "report.md"
    write_text_atomically(report, "\n".join(lines))
    return [report, *written]


def _figures(group: list[dict[str, Any]], folder: Path, slug: str, title: str,
             written: list[Path]) -> list[str]:
    """The study's figures for one run; returns the report lines that show them."""
    keys = _varying(group)
    lines: list[str] = []
    if any("shots" in r["setting"] for r in group):
        path = folder / f"{slug}_shots.png"
        _plot_shots(group, path, title)
        written.append(path)
        lines += [f"![few-shot]({path.name})", ""]
    if "per_example" in keys:
        for metric, ylabel, stem in (("top1", "top-1 (%)", "fig1_top1"),
                                     ("mean_entropy", "mean entropy", "fig2_entropy")):
            path = folder / f"{slug}_{stem}.png"
            _plot_lines(group, metric, ylabel, path)
            written.append(path)
            lines += [f"![{stem}]({path.name})", ""]
    elif keys or len(group) > 1:
        path = folder / f"{slug}_bars.png"
        _plot_bars(group, keys, path, title)
        written.append(path)
        lines += [f"![{title}]({path.name})", ""]
    found = class_gains(group)
    if found is not None:
        import matplotlib.pyplot as plt

        path = folder / f"{slug}_class_gain.png"
        fig = gains_figure(group, keys)
        save_figure_atomically(fig, path, 120)
        plt.close(fig)
        written.append(path)
        best, gains = found
        part = max(1, min(5, len(gains) // 2))
        lines += [f"![per-class gain]({path.name})", "",
                  f"Per-class top-1 recall, {_label(best, keys)} descriptors minus the class name"
                  f" (pp): best {_named(gains[::-1][:part])}; worst {_named(gains[:part])}.", ""]
    return lines


MARKER_KEYS = ("marker", "color", "thickness")


def write_refer_report(folder: Path) -> list[Path]:
    """The marker ablation's report: a table (best row marked) and a bar chart of accuracy."""
    rows = read_results(folder, ("accuracy", "crop_accuracy", "n_expressions"))
    keys = _varying(rows, MARKER_KEYS) or list(MARKER_KEYS)
    best = max(rows, key=lambda r: r["metrics"]["accuracy"])
    lines = ["# Marker ablation", "", "| setting | accuracy | crop baseline | expressions |",
             "| --- | --- | --- | --- |"]
    for row in rows:
        m = row["metrics"]
        mark = " **(best)**" if row is best else ""
        label = ", ".join(f"{k}={row['setting'][k]}" for k in keys)
        lines.append(f"| {label}{mark} | {100 * m['accuracy']:.2f} | {100 * m['crop_accuracy']:.2f} |"
                     f" {m['n_expressions']} |")
    chart = folder / "markers_bars.png"
    _plot_bars(rows, keys, chart, "marker ablation", metric="accuracy", ylabel="accuracy (%)")
    lines += ["", f"![markers]({chart.name})", ""]
    report = folder / "report.md"
    write_text_atomically(report, "\n".join(lines))
    return [report, chart]


def is_suite(folder: Path) -> bool:
    """Whether a results folder holds a suite's rows (each names its dataset and column)."""
    rows = read_results(folder, ("top1",))
    return all("column" in r and "dataset" in r for r in rows)


def suite_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """(datasets, columns, (dataset, column) -> row) in first-seen order; a later row of the same
    cell identity never replaces an earlier one (there is none: cells are unique)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    columns = list(dict.fromkeys(r["column"] for r in rows))
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        cells.setdefault((row["dataset"], row["column"]), row)
    return datasets, columns, cells


def _cell_text(row: dict[str, Any] | None) -> list[str]:
    if row is None:
        return ["-", "-", "-"]
    ours, published = 100 * row["metrics"]["top1"], row.get("published")
    shown = _percent(row["metrics"]["top1"], _spread(row, "top1"))
    if published is None:
        return [shown, "-", "-"]
    return [shown, f"{100 * published:.2f}", f"{ours - 100 * published:+.2f}"]


def _average(datasets: list[str], column: str, cells: dict[tuple[str, str], dict[str, Any]],
             published_only: bool = False) -> list[str]:
    """The mean of a column over its datasets (`published_only`: over those with a published
    number); the published mean beside it when every one of those datasets has one."""
    present = [cells[(d, column)] for d in datasets if (d, column) in cells]
    if published_only:
        present = [r for r in present if r.get("published") is not None]
    if not present:
        return ["-", "-", "-"]
    ours = 100 * sum(r["metrics"]["top1"] for r in present) / len(present)
    if any(r.get("published") is None for r in present):
        return [f"{ours:.2f}", "-", "-"]
    published = 100 * sum(r["published"] for r in present) / len(present)
    return [f"{ours:.2f}", f"{published:.2f}", f"{ours - published:+.2f}"]


def _mixed(datasets: list[str], columns: list[str], cells: dict[tuple[str, str], dict[str, Any]]) -> bool:
    """Whether some column has published numbers for some of its datasets but not all."""
    for column in columns:
        flags = {cells[(d, column)].get("published") is not None for d in datasets if (d, column) in cells}
        if flags == {True, False}:
            return True
    return False


def write_suite_report(folder: Path) -> list[Path]:
    """`report.md`: a table per suite of top-1 (%) per dataset and method, ours beside the
    published number and the difference, with the average; and a bar chart."""
    rows = read_results(folder, ("top1",))
    by_suite: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:  # a table per suite and CLIP (`suite --model A --model B`)
        by_suite[(row["experiment"], json.dumps(row.get("clip"), sort_keys=True))].append(row)
    lines = ["# Benchmark suite", "", "Top-1 (%): ours, published, ours - published.", ""]
    written: list[Path] = []
    names = [name for name, _ in by_suite]
    for (name, clip), group in by_suite.items():
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        if names.count(name) > 1:
            slug += f"_clip{[k for k in by_suite if k[0] == name].index((name, clip)) + 1}"
        datasets, columns, cells = suite_table(group)
        head = ["dataset (images)"] + [f"{c}: {part}" for c in columns for part in ("ours", "published", "Δ")]
        lines += [f"## {name}", "", *_suite_context(group), "",
                  "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        images = {r["dataset"]: r["metrics"].get("n_images") for r in group}
        for dataset in datasets:
            values = [v for c in columns for v in _cell_text(cells.get((dataset, c)))]
            lines.append(f"| {dataset} ({images.get(dataset)}) | " + " | ".join(values) + " |")
        values = [v for c in columns for v in _average(datasets, c, cells)]
        lines.append(f"| **average ({len(datasets)})** | " + " | ".join(values) + " |")
        if _mixed(datasets, columns, cells):
            values = [v for c in columns for v in _average(datasets, c, cells, published_only=True)]
            lines.append("| **average where published** | " + " | ".join(values) + " |")
        sources = sorted({r["published_source"] for r in group if r.get("published_source")})
        lines += ["", *(f"- published: {s}" for s in sources), *_not_run(folder, name, clip), ""]
        chart = folder / f"{slug}_suite.png"
        _plot_suite(datasets, columns, cells, chart, _suite_title(name, group))
        written.append(chart)
        lines += [f"![{name}]({chart.name})", ""]
    report = folder / "report.md"
    write_text_atomically(report, "\n".join(lines))
    return [report, *written]


def _not_run(folder: Path, suite: str, clip: str) -> list[str]:
    """The cells the last run of this suite with this CLIP (named as its rows name it, as
    JSON) could not run, each with why (`skipped.json`; an entry naming no CLIP is any
    CLIP's)."""
    return [f"- not run: {s['dataset']} / {s['column']}: {s['reason']}"
            for s in read_skipped(folder / SKIPPED).get(suite, [])
            if {"dataset", "column", "reason"} <= set(s)
            and ("clip" not in s or json.dumps(s["clip"], sort_keys=True) == clip)]


def _suite_context(group: list[dict[str, Any]]) -> list[str]:
    """The CLIP the numbers are of, and why published numbers are missing where withheld."""
    clips = sorted({f"{r['clip']['model']} / {r['clip']['pretrained']} ({r['clip']['precision']})"
                    for r in group if r.get("clip")})
    lines = [f"CLIP: {', '.join(clips) or 'not recorded (rows from before it was)'}."]
    withheld = sorted({r["published_withheld"] for r in group if r.get("published_withheld")})
    lines += [f"**{w[0].upper() + w[1:]}.**" for w in withheld]
    return lines


def _suite_title(name: str, group: list[dict[str, Any]]) -> str:
    """A chart's title: the suite and its CLIP, files by their names (a path would run off the
    figure), wrapped."""
    import textwrap

    clips = sorted({f"{Path(c['model']).name} / {Path(c['pretrained']).name} ({c['precision']})"
                    for r in group if isinstance(c := r.get("clip"), dict)})
    return textwrap.fill(f"{name}: CLIP {', '.join(clips) or 'unrecorded'}", width=70)


def _plot_suite(datasets: list[str], columns: list[str], cells: dict[tuple[str, str], dict[str, Any]],
                path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    width = 0.8 / max(1, len(columns))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(datasets) * max(1, len(columns)) / 2), 3.8))
    x = np.arange(len(datasets))
    for k, column in enumerate(columns):
        ours = [100 * cells[(d, column)]["metrics"]["top1"] if (d, column) in cells else np.nan for d in datasets]
        published = [100 * cells[(d, column)]["published"] if (d, column) in cells and cells[(d, column)].get("published") is not None else np.nan for d in datasets]
        offset = (k - (len(columns) - 1) / 2) * width
        ax.bar(x + offset, ours, width, label=f"{column} (ours)")
        ax.scatter(x + offset, published, marker="_", s=200, color="black",
                   label="published" if k == 0 else None, zorder=3)
    ax.set_xticks(x, datasets, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomically(fig, path, 120)
    plt.close(fig)
