"""DCLIP's explanation figure (Menon & Vondrick, Fig. 1) from `eval --predictions --explain K`:
a row per image, the image beside two panels of bars, the predicted class and the true class
(the runner-up when the prediction is right), each with its class score and the K descriptors
most similar to the image, in 100 x cosine as the paper prints them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.atomic import save_figure_atomically
from descriptor_gen.inputs import parse_json, read_text, validation_message


class Because(Model):
    """One descriptor of an explanation and its cosine with the image."""

    model_config = ConfigDict(extra="allow")

    descriptor: str
    similarity: float


class PredictionLine(Model):
    """The part of a predictions line the figure reads."""

    model_config = ConfigDict(extra="allow")

    path: str
    label: int
    pred: int
    label_name: str | None = None
    pred_name: str | None = None
    runner_up_name: str | None = None
    score_pred: float | None = None
    score_label: float | None = None
    score_runner_up: float | None = None
    explain_pred: list[Because] | None = None
    explain_label: list[Because] | None = None
    explain_runner_up: list[Because] | None = None

    def panels(self) -> list[tuple[str, str, float | None, list[Because]]]:
        """(role, class name, class score, descriptors) for the prediction and the other class."""
        other = (("true class", self.label_name, self.score_label, self.explain_label)
                 if self.pred != self.label else
                 ("runner-up", self.runner_up_name, self.score_runner_up, self.explain_runner_up))
        return [(role, name or "?", score, because or [])
                for role, name, score, because in (("prediction", self.pred_name, self.score_pred,
                                                    self.explain_pred), other)
                if because]


def read_predictions(path: Path) -> list[PredictionLine]:
    """The explained lines of a predictions file; a bad line is an error naming it."""
    lines = []
    for number, text in enumerate(read_text(path, "predictions file").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = PredictionLine.model_validate(parse_json(text, path, number))
        except ValidationError as exc:
            raise DescgenError(f"{path}:{number}: not a predictions line"
                               f" ({validation_message(exc)})") from exc
        if line.explain_pred:
            lines.append(line)
    if not lines:
        raise DescgenError(f"{path}: no line has explanations (run eval with --explain K on a"
                           " method with descriptor texts)")
    return lines


def choose(lines: list[PredictionLine], n: int) -> list[PredictionLine]:
    """Up to `n` images in file order, half right and half wrong when there are both."""
    right = [line for line in lines if line.pred == line.label]
    wrong = [line for line in lines if line.pred != line.label]
    take_right = min(len(right), max(n - len(wrong), (n + 1) // 2))
    chosen = {id(line) for line in right[:take_right] + wrong[:n - take_right]}
    return [line for line in lines if id(line) in chosen]


def _short(text: str, width: int = 44) -> str:
    return textwrap.shorten(text, width=width, placeholder=" …")


def _thumbnail(path: str) -> Any:
    """The image as a centred square, or None when it is not a readable file (a webdataset or
    hub sample is named, not stored, in the predictions)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return ImageOps.fit(image.convert("RGB"), (224, 224))
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _draw_image(ax: Any, line: PredictionLine) -> None:
    picture = _thumbnail(line.path)
    if picture is not None:
        ax.imshow(picture)
    else:
        ax.text(0.5, 0.5, "image not\nreadable here", ha="center", va="center", fontsize=7,
                color="gray", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(_short("/".join(Path(line.path).parts[-2:]), 32), fontsize=6)


def _draw_panel(ax: Any, role: str, name: str, score: float | None, because: list[Because],
                correct: bool, span: tuple[float, float], slots: int) -> None:
    labels = (["class score"] if score is not None else []) + [_short(b.descriptor) for b in because]
    values = ([100 * score] if score is not None else []) + [100 * b.similarity for b in because]
    colours = (["#1f4e79" if role == "prediction" else "#7f1d1d"] if score is not None else []) \
        + ["#4a90d9" if role == "prediction" else "#d64541"] * len(because)
    low, high = span
    positions = list(range(len(values)))
    ax.barh(positions, [v - low for v in values], left=low, color=colours, height=0.72)
    for y, value in zip(positions, values):
        ax.text(value + 0.01 * (high - low), y, f"{value:.2f}", va="center", fontsize=6)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.set_ylim(slots - 0.5, -0.5)  # top down, one bar height in every panel
    ax.set_xlim(low, high)
    ax.tick_params(axis="x", labelsize=6)
    mark = {"prediction": "right" if correct else "wrong"}.get(role)
    ax.set_title(f"{role}: {name}" + (f" ({mark})" if mark else ""), loc="left", fontsize=9,
                 color="tab:green" if role == "prediction" and correct else
                 "tab:red" if role == "prediction" else "black")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _span(line: PredictionLine) -> tuple[float, float]:
    """One x range for both panels of a row, so that their bars compare."""
    values = [100 * v for _, _, score, because in line.panels()
              for v in ([score] if score is not None else []) + [b.similarity for b in because]]
    low, high = min(values), max(values)
    width = max(high - low, 0.5)
    return low - 0.6 * width, high + 0.3 * width


def explanation_figure(lines: list[PredictionLine], caption: str) -> Any:
    """A row per line: the image, then the prediction's panel and the other class's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(lines)
    most = max(len(b) for line in lines for _, _, _, b in line.panels()) + 1
    fig, axes = plt.subplots(rows, 3, figsize=(12, max(1.9, 0.2 * most + 0.9) * rows + 0.5),
                             gridspec_kw={"width_ratios": [1, 2.2, 2.2]}, squeeze=False)
    for line, (image_ax, *panel_axes) in zip(lines, axes):
        _draw_image(image_ax, line)
        span = _span(line)
        panels = line.panels()
        for ax, (role, name, score, because) in zip(panel_axes, panels):
            _draw_panel(ax, role, name, score, because, line.pred == line.label, span, most)
        for ax in panel_axes[len(panels):]:
            ax.axis("off")
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    return fig


FIGURE_FORMATS = ("png", "pdf", "svg")


def write_explanation_figure(predictions: Path, out: Path, caption: str, images: int = 6) -> int:
    """Draw the figure of up to `images` explained lines of `predictions` into `out` (PNG, PDF
    or SVG by its suffix), all or nothing; returns the number of images drawn."""
    import matplotlib.pyplot as plt

    form = out.suffix.lower().lstrip(".")
    if form not in FIGURE_FORMATS:
        raise DescgenError(f"{out}: a figure is written as {', '.join(FIGURE_FORMATS)}"
                           " (by the file's suffix)")
    chosen = choose(read_predictions(predictions), images)
    fig = explanation_figure(chosen, caption)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure_atomically(fig, out, 130)
    finally:
        plt.close(fig)
    return len(chosen)
