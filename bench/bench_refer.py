"""Visual-prompt throughput: marked candidates scored per second (marking + preprocessing +
one encoder batch per image), on this machine.

    python bench/bench_refer.py [--model ViT-B-32] [--device auto] [--images 20] [--proposals 8]

Random weights (`none`): nothing is downloaded, and speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from PIL import Image

from descriptor_gen.score.features import load_clip
from descriptor_gen.visual.refer import Variant, encode_marked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--proposals", type=int, default=8)
    args = parser.parse_args()
    clip = load_clip(args.model, "none", args.device, args.precision)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
              for _ in range(args.images)]
    boxes = [[float(x), float(y), 120.0, 100.0]
             for x, y in zip(rng.integers(0, 500, args.proposals), rng.integers(0, 360, args.proposals))]
    variants = [Variant("circle"), Variant("blur_outside"), Variant("grayscale_outside")]
    encode_marked(clip, images[0], boxes, variants)  # warm-up
    started = time.perf_counter()
    for image in images:
        encode_marked(clip, image, boxes, variants)
    seconds = time.perf_counter() - started
    candidates = args.images * args.proposals * len(variants)
    print(f"machine: {platform.machine()} {platform.system()}, device {clip.device},"
          f" {args.model} {args.precision}, {time.strftime('%Y-%m-%d')}")
    print(f"{candidates} marked candidates (640x480 images, {args.proposals} proposals x 3 markers)"
          f" in {seconds:.2f} s: {candidates / seconds:.1f} marked candidates/s")


if __name__ == "__main__":
    main()
