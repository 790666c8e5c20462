"""`make demo`: a small end-to-end run with the default models, or stand-ins when they are out
of reach, saying which and what to install or set.

Classes are simple drawn shapes (so that a real CLIP recognises them); the LLM is
gpt-3.5-turbo-instruct when `OPENAI_API_KEY` is set, else the local dev server; CLIP is
ViT-B-32 with OpenAI's weights when they can be loaded, else random weights.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from descriptor_gen.generation.devserver import DevServer
from descriptor_gen.errors import DescgenError
from descriptor_gen.experiments.specs import load_spec
from descriptor_gen.experiments.sweep import run_sweep
from descriptor_gen.score.features import load_clip
from descriptor_gen.experiments.report import write_report
from descriptor_gen.paths import CachePaths

SPEC = Path("data/experiments/demo.yaml")
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60),
           "yellow": (240, 210, 20), "black": (10, 10, 10)}


def _shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "star":
        angles = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
        radii = [r if i % 2 == 0 else r * 0.45 for i in range(10)]
        draw.polygon([(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles)], fill=fill)
    else:
        w = r / 3
        draw.rectangle((cx - w, y0, cx + w, y1), fill=fill)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=fill)


def make_images(classes: list[str], root: Path, per_class: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in classes:
        colour, shape = name.split()
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("RGB", (224, 224), (250, 250, 250))
            size = int(rng.integers(90, 170))
            x, y = (int(v) for v in rng.integers(5, 224 - size - 5, 2))
            _shape(ImageDraw.Draw(image), shape, (x, y, x + size, y + size), COLOURS[colour])
            image.save(folder / f"{i}.png")


def _online(host: str = "huggingface.co") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def clip_weights(model: str, pretrained: str) -> str:
    """`pretrained` when those weights load (cached or downloadable), else `none`, said aloud."""
    if not _online():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        load_clip(model, pretrained, "cpu")
        return pretrained
    except DescgenError:
        print(f"!! CLIP {model} weights {pretrained!r} are not available here (not cached, no"
              " network). Scoring with RANDOM weights: the numbers below are meaningless. Run once"
              " with network access to download them, or set clip.pretrained to a checkpoint file.",
              flush=True)
        return "none"


@contextlib.contextmanager
def llm_base_url() -> Iterator[str | None]:
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        print("== LLM: gpt-3.5-turbo-instruct through the OpenAI API", flush=True)
        yield None
        return
    with DevServer() as server:
        print("!! OPENAI_API_KEY is not set: descriptors come from the local dev server's canned"
              " answers. `export OPENAI_API_KEY=...` (or OPENAI_BASE_URL for a local server) for"
              " real ones.", flush=True)
        yield server.base_url


def main(out_dir: str = "results/demo", spec_file: str = str(SPEC)) -> int:
    """Run a spec over the demo's images (made here: the test images, and training images for
    the few-shot methods beside them) and print its report."""
    out = Path(out_dir)
    (out / "results.jsonl").unlink(missing_ok=True)  # a fresh table each time; caches stay
    for old in (out / "descriptors").glob("*.jsonl"):
        old.unlink()
    path = Path(spec_file)
    spec = load_spec(path)
    classes = Path(spec.classes).read_text().split("\n")[:-1]
    make_images(classes, Path(spec.dataset))
    make_images(classes, Path(spec.dataset).parent / "train", per_class=16, seed=1)
    paths = CachePaths.resolve()
    try:
        weights = clip_weights(spec.clip.model, spec.clip.pretrained)
        with llm_base_url() as base_url:
            overrides = [f"clip.pretrained={weights}"]
            if base_url:
                overrides += [f"generation.base_url={base_url}", "generation.model=dev-server"]
            spec = load_spec(path, overrides)
            run_sweep(spec, out, paths.cache_dir, paths.prompts_dir)
        report = write_report(out)[0]
    except DescgenError as exc:
        print(f"descgen: error: {exc}", file=sys.stderr)
        return 2
    print(report.read_text(), flush=True)
    print(f"figures and tables: {out}", flush=True)
    return 0


def base2novel(out_dir: str = "results/base2novel-demo",
               spec_file: str = "data/experiments/base2novel_demo.yaml") -> int:
    """The base-to-novel protocol on the demo's shapes (images made here) and print its report."""
    from descriptor_gen.experiments.base2novel import B2NSpec, run_base2novel, write_base2novel_report
    from descriptor_gen.experiments.specs import load_yaml_model

    out = Path(out_dir)
    try:
        spec = load_yaml_model(Path(spec_file), B2NSpec, [])
        for dataset in spec.datasets:
            classes = Path(str(dataset.classes)).read_text().split("\n")[:-1]
            make_images(classes, Path(dataset.test_spec))
            make_images(classes, Path(dataset.train_spec), per_class=16, seed=1)
        weights = clip_weights(spec.clip.model, spec.clip.pretrained)
        spec = spec.model_copy(update={"clip": spec.clip.model_copy(update={"pretrained": weights})})
        paths = CachePaths.resolve()
        run_base2novel(spec, out, paths.cache_dir, paths.prompts_dir)
        report = write_base2novel_report(out, spec)
    except DescgenError as exc:
        print(f"descgen: error: {exc}", file=sys.stderr)
        return 2
    print(report.read_text(), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["base2novel"]:
        sys.exit(base2novel(*sys.argv[2:]))
    sys.exit(main(*sys.argv[1:]))
