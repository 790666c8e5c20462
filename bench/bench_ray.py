"""Ray engine benchmark: image encoding by the local engine (a DataLoader on this machine)
against the Ray engine (Ray Data: decoding as CPU tasks, 2 encoder actors) on the same images,
in one run; Ray's start-up (ray.init, then the actor pool) measured apart, and the two feature
arrays compared (they must agree within fp16 rounding).

    python bench/bench_ray.py [--images 2000] [--actors 2] [--size 256] [--model CONFIG_OR_NAME]

Without --model it uses the tiny random-weights CLIP of the tests (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench_learn import TINY
from descriptor_gen.data.datasets import load_image_folder
from descriptor_gen.score.engines import EngineOptions, encode
from descriptor_gen.score.features import load_clip



def make_images(root: Path, n_images: int, size: int, classes: int = 10) -> list[str]:
    rng = np.random.default_rng(0)
    names = [f"class{c}" for c in range(classes)]
    for i in range(n_images):
        folder = root / names[i % classes]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return names


def timed(fn):  # noqa: ANN001, ANN202
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--actor-cpus", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default=None, help="open_clip name or config JSON (default: tiny)")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per Ray actor")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            model = str(root / "tiny-clip-bench.json")
            Path(model).write_text(json.dumps(TINY))
        names = make_images(root / "images", args.images, args.size)
        data = load_image_folder(root / "images", names)
        half = load_image_folder(root / "images", names)
        half.paths, half.labels = data.paths[:args.images // 2], data.labels[:args.images // 2]
        clip = load_clip(model, args.pretrained, args.device)
        spec = (model, args.pretrained, "fp32", args.device)
        local_options = EngineOptions()
        ray_options = EngineOptions(engine="ray", ray_actors=args.actors, ray_gpus=args.gpus,
                                    ray_actor_cpus=args.actor_cpus)

        def run(options: EngineOptions, source):  # noqa: ANN001, ANN202
            return timed(lambda: encode(options, clip, spec, source, args.batch_size, args.workers)[0])

        _, t_local_half = run(local_options, half)
        local, t_local = run(local_options, data)
        _, t_init = timed(lambda: ray.init(include_dashboard=False, log_to_driver=False,
                                           configure_logging=False))
        _, t_ray_half = run(ray_options, half)
        remote, t_ray = run(ray_options, data)
        ray.shutdown()

    gap = float(np.abs(local.features.astype(np.float32) - remote.features.astype(np.float32)).max())
    n, m = args.images, args.images - args.images // 2
    rate_local, rate_ray = m / (t_local - t_local_half), m / (t_ray - t_ray_half)
    fixed_local, fixed_ray = t_local - n / rate_local, t_ray - n / rate_ray
    cores = len(os.sched_getaffinity(0))
    name = Path(model).name if args.model is None else model
    print(f"# Ray engine, {n} images of {args.size} px, {platform.machine()}, {cores} cores, model {name}")
    print("| engine | time, all images | steady rate | fixed cost per run |")
    print("| --- | --- | --- | --- |")
    print(f"| local (DataLoader, {args.workers} workers) | {t_local:.2f} s | {rate_local:.0f} images/s | {fixed_local:.2f} s |")
    print(f"| ray, {args.actors} actors x {args.actor_cpus:g} CPU | {t_ray:.2f} s | {rate_ray:.0f} images/s | {fixed_ray:.2f} s (actor pool start) |")
    print(f"| ray / local | {t_local / t_ray:.2f}x | {rate_ray / rate_local:.2f}x | |")
    print(f"| start-up: ray.init (local Ray, once per process) | {t_init:.2f} s | | |")
    same = np.array_equal(local.ok, remote.ok) and gap < 2e-3
    print(f"| features: same order, largest gap {gap:.2e} | {'identical within fp16' if same else 'MISMATCH'} | | |")
    print(f"(steady rate: from the runs on {args.images // 2} and {n} images; fixed cost: the rest)")


if __name__ == "__main__":
    main()
