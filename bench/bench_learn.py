"""Learned-prompt benchmark: CoOp epochs trained from the shots' cached image features (ours)
against re-encoding every image at every step (the reference implementation's way), on the
CPU with the tiny random-weights CLIP; the two loss curves must agree (one view, no
augmentation). Visual prompt padding backpropagates through the image encoder and cannot use
the cache: its epoch time is shown beside.

    python bench/bench_learn.py [--classes 10] [--shots 16] [--epochs 5] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from descriptor_gen.data.datasets import load_image_folder
from descriptor_gen.learn.methods import learned
from descriptor_gen.learn.run import (
    RunInfo,
    _batches,
    build_learner,
    reencoding_batches,
    shot_features,
)
from descriptor_gen.learn.train import make_optimiser, train
from descriptor_gen.score.features import load_clip
from descriptor_gen.paths import CachePaths

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def make_images(root: Path, classes: int, per_class: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = [f"class{c}" for c in range(classes)]
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(40 * c % 255, 60, (size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i:03d}.jpg", quality=90)
    return names


def run(method: str, clip, names: list[str], data, cache: Path, prompts: Path, epochs: int,
        cached: bool) -> tuple[float, list[float]]:
    definition = learned(method)
    options = definition.parse({"shots": len(data.paths) // len(names), "epochs": epochs, "lr": 0.5,
                                "n_ctx": 4} if method == "coop" else
                               {"shots": len(data.paths) // len(names), "epochs": epochs, "lr": 1.0,
                                "pad": 4, "warmup": 0, "batch_size": 32})
    info = RunInfo(method=method, options=options.model_dump(), recipe={}, dataset="bench",
                   source_identity="", split="", classes=names, clip={})
    labels = list(data.labels)
    features = None
    if method != "padding":
        features = shot_features(clip, data, 1, options.seed, cache, 64, 0)
    learner = build_learner(info, clip, cache, prompts, features, labels)
    optimiser = make_optimiser(definition.recipe, [p for p in learner.parameters() if p.requires_grad],
                               options.lr)
    batches = (_batches(method, learner, clip, data, features, labels, None)  # type: ignore[arg-type]
               if cached or method == "padding" else reencoding_batches(clip, data, labels))
    step_loss = getattr(learner, "image_loss", None) if method == "padding" else None
    batch = options.batch_size or definition.recipe.batch_size
    started = time.perf_counter()
    logs = train(learner, batches, definition.recipe, options.lr, epochs, batch, options.seed, 0,
                 optimiser, lambda done, logs: None, progress=False, step_loss=step_loss)
    return (time.perf_counter() - started) / epochs, [entry.loss for entry in logs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or platform.system()}, "
          f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; date {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "tiny-clip-bench.json"
        config.write_text(json.dumps(TINY))
        clip = load_clip(str(config), "none", "cpu")
        clip.model.requires_grad_(False)
        names = make_images(folder / "shots", args.classes, args.shots, args.size)
        data = load_image_folder(folder / "shots", names)
        prompts = CachePaths.resolve().prompts_dir
        encode_started = time.perf_counter()
        shot_features(clip, data, 1, 1, folder / "cache", 64, 0)
        encode_once = time.perf_counter() - encode_started
        ours, ours_losses = run("coop", clip, names, data, folder / "cache", prompts, args.epochs, True)
        theirs, their_losses = run("coop", clip, names, data, folder / "cache", prompts, args.epochs, False)
        padding, _ = run("padding", clip, names, data, folder / "cache", prompts, args.epochs, True)
        print(f"CoOp, {args.classes} classes x {args.shots} shots ({args.size} px JPEGs),"
              f" tiny CLIP on the CPU, {args.epochs} epochs:")
        print(f"  encoding the shots once (one view): {encode_once:7.3f} s")
        print(f"  epoch from cached features (ours):  {ours:7.3f} s")
        print(f"  epoch re-encoding every image:      {theirs:7.3f} s")
        print(f"  speed-up: {theirs / ours:.1f}x (target >= 5x)")
        gap = max(abs(a - b) for a, b in zip(ours_losses, their_losses))
        print(f"  loss curves: {', '.join(f'{x:.4f}' for x in ours_losses)} (cached) vs"
              f" {', '.join(f'{x:.4f}' for x in their_losses)}; largest gap {gap:.2e}")
        print(f"padding (backpropagates through the image encoder: no cache): {padding:7.3f} s an epoch")


if __name__ == "__main__":
    main()
