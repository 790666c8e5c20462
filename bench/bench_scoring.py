"""Scoring by mean embedding (one matmul) against per-descriptor similarities, for 10,000
images x 1,000 classes x 7 descriptors: same predictions, time and peak memory of each.

Then an evaluation's metrics (top-1, top-5, recall, entropy) from fp16 features memory-mapped
from a `.npy` as the feature cache holds them, for each `--shapes` IMAGESxCLASSES: the whole
score matrix made at once and then summarised (before) against scores made a block of images
at a time (`score/blocks.py`, now): time, peak memory, and whether the metrics agree.

    python bench/bench_scoring.py [--images 10000] [--classes 1000] [--descriptors 7] [--dim 512]
                                  [--shapes 50000x1000 20000x10450]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from descriptor_gen.score.blocks import ImageRows, PooledScores
from descriptor_gen.score.scoring import ClassTexts, Group, class_vectors, scores, summarise


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def measure(fn):  # noqa: ANN001, ANN201 - a tiny harness
    tracemalloc.start()
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--descriptors", type=int, default=7)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--shapes", nargs="*", default=["50000x1000", "20000x10450"],
                        help="IMAGESxCLASSES of the metrics' arms (ImageNet's validation set;"
                             " 20,000 images of ImageNet-21k-P's 10,450 classes)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = unit(rng.normal(size=(args.images, args.dim)).astype(np.float32))
    texts = unit(rng.normal(size=(args.classes * args.descriptors, args.dim)).astype(np.float32))
    ct = ClassTexts([[Group(["t"] * args.descriptors, ["d"] * args.descriptors, False)]
                     for _ in range(args.classes)])

    def mean_embedding() -> np.ndarray:
        return scores(images, class_vectors(texts, ct)).argmax(axis=1)

    def per_descriptor() -> np.ndarray:
        sims = images @ texts.T
        return sims.reshape(args.images, args.classes, args.descriptors).mean(axis=2).argmax(axis=1)

    fast, fast_s, fast_mb = measure(mean_embedding)
    slow, slow_s, slow_mb = measure(per_descriptor)
    print(f"machine: {platform.machine()} {platform.system()}, numpy {np.__version__},"
          f" {time.strftime('%Y-%m-%d')}")
    print(f"{args.images} images x {args.classes} classes x {args.descriptors} descriptors, D={args.dim}:")
    print(f"  per-descriptor similarities: {slow_s:6.2f} s, peak {slow_mb:7.1f} MiB")
    print(f"  mean embedding (one matmul): {fast_s:6.2f} s, peak {fast_mb:7.1f} MiB")
    print(f"  speed-up {slow_s / fast_s:.1f}x, memory {slow_mb / fast_mb:.1f}x less;"
          f" same prediction for {100 * np.mean(fast == slow):.3f}% of images")
    if args.shapes:
        print("\nAn evaluation's metrics from memory-mapped fp16 features (D="
              f"{args.dim}), best of 2:\n")
        print("| images x classes | whole matrix, then metrics | a block at a time (ours) |"
              " time ratio | peak memory ratio | same metrics |")
        print("| --- | --- | --- | --- | --- | --- |")
        for shape in args.shapes:
            print(metrics_row(*map(int, shape.split("x")), args.dim, rng))


def metrics_row(n: int, classes: int, dim: int, rng: np.random.Generator) -> str:
    """One shape: the metrics both ways, from a `.npy` opened as the cache opens it."""
    feats = unit(rng.normal(size=(n, dim)).astype(np.float32)).astype(np.float16)
    vectors = unit(rng.normal(size=(classes, dim)).astype(np.float32)) * 0.9
    labels = rng.integers(0, classes, n)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "features.npy"
        np.save(path, feats)
        stored = np.load(path, mmap_mode="r")

        def whole() -> object:
            return summarise(scores(np.asarray(stored, np.float32), vectors), labels)[0]

        def in_blocks() -> object:
            return summarise(PooledScores(ImageRows.of(stored), vectors), labels)[0]

        runs = {name: min((measure(fn) for _ in range(2)), key=lambda r: r[1])
                for name, fn in (("whole", whole), ("blocks", in_blocks))}
    (before, b_s, b_mb), (after, a_s, a_mb) = runs["whole"], runs["blocks"]
    same = before == after
    if not same:  # the two products may round a last bit apart: say by how much
        same = all(abs(getattr(before, k) - getattr(after, k)) < 1e-6
                   for k in ("top1", "top5", "mean_per_class_recall", "mean_entropy"))
        same = "within 1e-6" if same else "no"
    return (f"| {n:,} x {classes:,} | {b_s:.2f} s, {b_mb:,.0f} MiB | {a_s:.2f} s, {a_mb:,.0f} MiB"
            f" | {b_s / a_s:.2f}x | {b_mb / a_mb:.1f}x less | {'yes' if same is True else same} |")


if __name__ == "__main__":
    main()
