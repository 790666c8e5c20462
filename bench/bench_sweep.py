"""A sweep of 8 settings over the same images against 8 independent `eval` runs (each a fresh
process-like start: its own model load and no feature cache), in one run on this machine.

    python bench/bench_sweep.py [--images 100] [--model ViT-B-32] [--device auto]

Descriptors come from the local dev server; CLIP uses random weights (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from descriptor_gen.generation.devserver import DevServer
from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.experiments.specs import load_spec
from descriptor_gen.experiments.sweep import run_sweep
from descriptor_gen.paths import CachePaths

sys_quiet = lambda message: None  # noqa: E731


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    from bench_eval import CLASSES, make_dataset  # same generated images as the eval benchmark

    prompts = CachePaths.resolve().prompts_dir
    with tempfile.TemporaryDirectory() as tmp, DevServer() as server:
        root = Path(tmp)
        make_dataset(root / "images", args.images)
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        spec_path = root / "spec.yaml"
        spec_path.write_text(yaml.safe_dump({
            "name": "bench", "classes": str(root / "classes.txt"), "dataset": str(root / "images"),
            "generation": {"base_url": server.base_url, "model": "dev", "concurrency": 16},
            "clip": {"model": args.model, "pretrained": "none", "device": args.device,
                     "precision": args.precision, "workers": 2},
            "grid": {"per_example": list(range(1, 9))}, "methods": ["descriptors"]}))
        spec = load_spec(spec_path)
        # descriptors first, so that both arms score the very same files
        warm = run_sweep(spec, root / "warm", root / "llm-cache", prompts, log=sys_quiet)
        stores = [Path(row["descriptor_file"]) for row in warm]

        started = time.perf_counter()
        for i, store in enumerate(stores):
            cfg = EvalConfig(dataset=spec.dataset, descriptors=store, model=args.model,
                             pretrained="none", device=args.device, precision=args.precision)
            evaluate(cfg, CLASSES, root / f"fresh-{i}", prompts, log=sys_quiet)
        independent = time.perf_counter() - started

        fresh = root / "sweep-cache"  # the LLM's answers, but no image or text features
        fresh.mkdir()
        shutil.copy(root / "llm-cache" / "responses.sqlite", fresh / "responses.sqlite")
        started = time.perf_counter()
        run_sweep(spec, root / "sweep", fresh, prompts, log=sys_quiet)
        sweep = time.perf_counter() - started
    print(f"machine: {platform.machine()} {platform.system()}, python {platform.python_version()},"
          f" {time.strftime('%Y-%m-%d')}")
    print(f"8 settings, {args.images} images x {len(CLASSES)} classes, {args.model}:")
    print(f"  8 independent evals: {independent:7.2f} s")
    print(f"  one sweep:           {sweep:7.2f} s")
    print(f"  sweep / independent = {sweep / independent:.3f} (target <= 0.25)")


if __name__ == "__main__":
    main()
