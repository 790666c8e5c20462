"""Evaluation benchmark: the first `eval` of a dataset against a second one with other
descriptors (image features from the cache), in one run, on this machine.

    python bench/bench_eval.py [--images 400] [--model ViT-B-32] [--device auto] [--precision fp32]

Uses random weights (`--pretrained none`) so nothing is downloaded; speed does not depend on them.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.paths import CachePaths
from descriptor_gen.describe.store import DescriptorRecord, write_store

CLASSES = [f"object {i}" for i in range(100)]


def make_dataset(root: Path, n_images: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n_images):
        folder = root / str(i % len(CLASSES))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)


def store(path: Path, words: list[str]) -> Path:
    write_store(path, [DescriptorRecord(class_index=i, class_name=c,
                                        descriptors=[f"{w} {i}" for w in words], backend="bench")
                       for i, c in enumerate(CLASSES)])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root / "images", args.images)
        first_store = store(root / "a.jsonl", ["a red part", "a round shape", "a metal surface"])
        second_store = store(root / "b.jsonl", ["a blue part", "a square shape", "a wooden surface",
                                                "a long handle", "a small window", "a flat base",
                                                "a striped pattern"])
        prompts = CachePaths.resolve().prompts_dir
        base = dict(dataset=str(root / "images"), model=args.model, pretrained="none",
                    device=args.device, precision=args.precision, batch_size=args.batch_size,
                    workers=args.workers)
        quiet = lambda message: None  # noqa: E731
        classes_file = root / "classes.txt"
        classes_file.write_text("\n".join(CLASSES) + "\n")
        first = evaluate(EvalConfig(descriptors=first_store, **base), CLASSES, root / "cache",
                         prompts, log=quiet)
        second = evaluate(EvalConfig(descriptors=second_store, **base), CLASSES, root / "cache",
                          prompts, log=quiet)
    print(f"machine: {platform.machine()} {platform.system()}, device {first.device},"
          f" python {platform.python_version()}, {time.strftime('%Y-%m-%d')}", file=sys.stderr)
    print(f"{args.images} images x {len(CLASSES)} classes, {args.model} {args.precision}:")
    print(f"  first eval:  {first.seconds:7.2f} s  ({first.images_per_second:.1f} images/s encoded,"
          f" {first.texts_encoded} texts encoded)")
    print(f"  second eval, other descriptors: {second.seconds:7.2f} s  ({second.images_encoded}"
          f" images encoded, {second.texts_encoded} texts encoded)")
    print(f"  speed-up: {first.seconds / second.seconds:.1f}x (target >= 20x)")
    for label, result in (("first", first), ("second", second)):
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
        print(f"  {label} eval time by stage: {parts}")


if __name__ == "__main__":
    main()
