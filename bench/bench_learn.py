"""Learned-prompt benchmark: CoOp epochs trained from the shots' cached image features (ours)
against re-encoding every image at every step (the reference implementation's way), on the
CPU with the tiny random-weights CLIP; the two loss curves must agree (one view, no
augmentation). Then a row per learned method: its epoch time and peak memory beside CoOp's
cached-feature epoch, each method in a process of its own (peak resident memory on the CPU,
peak allocated on a GPU); the methods whose prompts are inside the image tower (padding, VPT,
IVLP, MaPLe) backpropagate through it and cannot use the cache.

    python bench/bench_learn.py [--classes 10] [--shots 16] [--epochs 5] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
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
    training_batches,
    build_learner,
    reencoding_batches,
    shot_features,
)
from descriptor_gen.learn.train import make_optimiser, train
from descriptor_gen.score.features import load_clip
from descriptor_gen.score.tiny import TINY_CLIP_CONFIG
from descriptor_gen.paths import CachePaths

TINY = TINY_CLIP_CONFIG


def make_images(root: Path, classes: int, per_class: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = [f"class{c}" for c in range(classes)]
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(40 * c % 255, 60, (size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i:03d}.jpg", quality=90)
    return names


OPTIONS = {  # each method on the tiny CLIP (2-layer towers): its own prompts kept small
    "coop": {"lr": 0.5, "n_ctx": 4},
    "kgcoop": {"lr": 0.5, "guide": "classname"},
    "cocoop": {"lr": 0.1, "batch_size": 32},
    "tip-adapter-f": {"lr": 0.001},
    "plot": {"lr": 0.5, "n_ctx": 4, "batch_size": 32},
    "padding": {"lr": 1.0, "pad": 4, "warmup": 0, "batch_size": 32},
    "vpt": {"lr": 0.5, "depth": 2, "n_ctx": 8, "batch_size": 32},
    "ivlp": {"lr": 0.5, "depth_text": 2, "depth_vision": 2, "batch_size": 32},
    "maple": {"lr": 0.5, "depth": 2, "batch_size": 32},
}


def run(method: str, clip, names: list[str], data, cache: Path, prompts: Path, epochs: int,
        cached: bool) -> tuple[float, list[float]]:
    definition = learned(method)
    options = definition.parse({"shots": len(data.paths) // len(names), "epochs": epochs,
                                **OPTIONS[method]})
    info = RunInfo(method=method, options=options.model_dump(), recipe={}, dataset="bench",
                   source_identity="", split="", classes=names, clip={})
    labels = list(data.labels)
    features = None
    if not definition.pixels:
        features = shot_features(clip, data, 1, options.seed, cache, 64, 0, definition.local)
    learner = build_learner(info, clip, cache, prompts, features, labels)
    lr = options.lr or definition.recipe.lr
    optimiser = make_optimiser(definition.recipe, [p for p in learner.parameters() if p.requires_grad], lr)
    batches = (training_batches(method, clip, data, features, labels, options.seed)
               if cached or definition.pixels else reencoding_batches(clip, data, labels))
    step_loss = learner.image_loss if definition.pixels else None
    batch = options.batch_size or definition.recipe.batch_size
    started = time.perf_counter()
    logs = train(learner, batches, definition.recipe, lr, epochs, batch, options.seed, 0,
                 optimiser, lambda done, logs: None, progress=False, step_loss=step_loss)
    return (time.perf_counter() - started) / epochs, [entry.loss for entry in logs]


def _world(folder: Path, classes: int, shots: int, size: int):
    config = folder / "tiny-clip-bench.json"
    config.write_text(json.dumps(TINY))
    clip = load_clip(str(config), "none", "cuda" if torch.cuda.is_available() else "cpu")
    clip.model.requires_grad_(False)
    names = make_images(folder / "shots", classes, shots, size) if not (folder / "shots").exists() \
        else [f"class{c}" for c in range(classes)]
    return clip, names, load_image_folder(folder / "shots", names)


def one_method(method: str, folder: Path, classes: int, shots: int, size: int, epochs: int) -> None:
    """Child mode: one method's epoch time and peak memory, as a JSON line."""
    clip, names, data = _world(folder, classes, shots, size)
    prompts = CachePaths.resolve().prompts_dir
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    seconds, losses = run(method, clip, names, data, folder / "cache", prompts, epochs, True)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"method": method, "epoch_s": seconds, "peak_mb": peak,
                      "loss": losses[-1], "cached": not learned(method).pixels}))


def every_method(folder: Path, args: argparse.Namespace) -> list[dict]:
    rows = []
    for method in OPTIONS:
        out = subprocess.run([sys.executable, __file__, "--one", method, "--folder", str(folder),
                              "--classes", str(args.classes), "--shots", str(args.shots),
                              "--size", str(args.size), "--epochs", str(args.epochs)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_method(args.one, args.folder, args.classes, args.shots, args.size, args.epochs)
        return
    print(f"machine: {platform.machine()}, {platform.processor() or platform.system()}, "
          f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; date {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip, names, data = _world(folder, args.classes, args.shots, args.size)
        prompts = CachePaths.resolve().prompts_dir
        encode_started = time.perf_counter()
        shot_features(clip, data, 1, 1, folder / "cache", 64, 0)
        encode_once = time.perf_counter() - encode_started
        ours, ours_losses = run("coop", clip, names, data, folder / "cache", prompts, args.epochs, True)
        theirs, their_losses = run("coop", clip, names, data, folder / "cache", prompts, args.epochs, False)
        print(f"CoOp, {args.classes} classes x {args.shots} shots ({args.size} px JPEGs),"
              f" tiny CLIP, {args.epochs} epochs:")
        print(f"  encoding the shots once (one view): {encode_once:7.3f} s")
        print(f"  epoch from cached features (ours):  {ours:7.3f} s")
        print(f"  epoch re-encoding every image:      {theirs:7.3f} s")
        print(f"  speed-up: {theirs / ours:.1f}x (target >= 5x)")
        gap = max(abs(a - b) for a, b in zip(ours_losses, their_losses))
        print(f"  loss curves: {', '.join(f'{x:.4f}' for x in ours_losses)} (cached) vs"
              f" {', '.join(f'{x:.4f}' for x in their_losses)}; largest gap {gap:.2e}")
        rows = every_method(folder, args)
    coop = next(r for r in rows if r["method"] == "coop")
    print("\nevery method, each in its own process (peak: resident memory on the CPU, allocated on"
          " a GPU):")
    print("| method | epoch | x CoOp's cached epoch | peak MB | uses the feature cache |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['epoch_s']:.3f} s | {r['epoch_s'] / coop['epoch_s']:.1f}x"
              f" | {r['peak_mb']:.0f} | {'yes' if r['cached'] else 'no: backpropagates through the image tower'} |")


if __name__ == "__main__":
    main()
