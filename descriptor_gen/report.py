"""`descgen report DIR`: results.jsonl -> report.md with a table per experiment and PNG figures
of the study (top-1 and entropy against |D(c)|, bars for the instruction and examples runs)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from descriptor_gen.errors import DescgenError

OPTION_KEYS = ("per_example", "detailed", "instruction", "examples", "bank")


def read_results(folder: Path) -> list[dict[str, Any]]:
    path = folder / "results.jsonl"
    if not path.is_file():
        raise DescgenError(f"{path}: no results (run `descgen sweep` first)")
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if number == len(lines):
                    continue  # torn last line of a killed sweep
                raise DescgenError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    if not rows:
        raise DescgenError(f"{path}: no results")
    return rows


def _varying(rows: list[dict[str, Any]], keys: tuple[str, ...] = OPTION_KEYS) -> list[str]:
    return [k for k in keys if len({json.dumps(r["setting"].get(k)) for r in rows if r["setting"]}) > 1]


def _label(row: dict[str, Any], keys: list[str]) -> str:
    if not row["setting"]:
        return "(baseline)"
    return ", ".join(f"{k}={row['setting'][k]}" for k in keys) or "default"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    keys = _varying(rows)
    best = max(rows, key=lambda r: r["metrics"]["top1"])
    lines = ["| setting | method | top-1 | top-5 | mean recall | entropy | descriptors/class | LLM requests |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        m = row["metrics"]
        mark = " **(best)**" if row is best else ""
        per_class = f"{row['descriptors']['mean']:.2f}" if row.get("descriptors") else "-"
        lines.append(f"| {_label(row, keys)}{mark} | {row['method']} | {100 * m['top1']:.2f} |"
                     f" {100 * m['top5']:.2f} | {100 * m['mean_per_class_recall']:.2f} |"
                     f" {m['mean_entropy']:.3f} | {per_class} | {row.get('llm_requests', 0)} |")
    return lines


def _plot_lines(rows: list[dict[str, Any]], metric: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        if row["setting"] and row["method"] == "descriptors":
            label = "detailed" if row["setting"]["detailed"] else "short phrases"
            value = row["metrics"][metric] * (100 if metric == "top1" else 1)
            series[label].append((row["setting"]["per_example"], value))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xlabel("|D(c)| (descriptors per example)")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_bars(rows: list[dict[str, Any]], keys: list[str], path: Path, title: str,
               metric: str = "top1", ylabel: str = "top-1 (%)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_label(r, keys) + ("" if r["setting"] else f" {r['method']}") for r in rows]
    values = [100 * r["metrics"][metric] for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(rows)), 3.5))
    ax.bar(range(len(rows)), values, color="tab:blue")
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    low = min(values)
    ax.set_ylim(max(0.0, low - 5), max(values) + 2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(folder: Path) -> list[Path]:
    """Write `report.md` and the figures that the results allow; returns the files written."""
    rows = read_results(folder)
    by_experiment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_experiment[row["experiment"]].append(row)
    lines = ["# Results", ""]
    written: list[Path] = []
    for name, group in by_experiment.items():
        lines += [f"## {name}", "", *_table(group), ""]
        keys = _varying(group)
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        if "per_example" in keys:
            for metric, ylabel, stem in (("top1", "top-1 (%)", "fig1_top1"),
                                         ("mean_entropy", "mean entropy", "fig2_entropy")):
                path = folder / f"{slug}_{stem}.png"
                _plot_lines(group, metric, ylabel, path)
                written.append(path)
                lines += [f"![{stem}]({path.name})", ""]
        elif keys or len(group) > 1:
            path = folder / f"{slug}_bars.png"
            _plot_bars(group, keys, path, name)
            written.append(path)
            lines += [f"![{name}]({path.name})", ""]
    report = folder / "report.md"
    report.write_text("\n".join(lines))
    return [report, *written]


MARKER_KEYS = ("marker", "color", "thickness")


def write_refer_report(folder: Path) -> list[Path]:
    """The marker ablation's report: a table (best row marked) and a bar chart of accuracy."""
    rows = read_results(folder)
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
    report.write_text("\n".join(lines))
    return [report, chart]
