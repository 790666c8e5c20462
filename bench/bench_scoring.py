"""Scoring by mean embedding (one matmul) against per-descriptor similarities, for 10,000
images x 1,000 classes x 7 descriptors: same predictions, time and peak memory of each.

    python bench/bench_scoring.py [--images 10000] [--classes 1000] [--descriptors 7] [--dim 512]
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc

import numpy as np

from descriptor_gen.score.scoring import ClassTexts, Group, class_vectors, scores


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


if __name__ == "__main__":
    main()
