"""Start-up of commands that need no model, and a fully cached re-evaluation at ImageNet
validation's shape, before and after a change: two checkouts of the package, each command in a
fresh process, the two checkouts taking turns (this machine's noise falls on both alike).

    git worktree add /tmp/before <commit>
    python bench/bench_startup.py --before /tmp/before --after .          # medians of 5
    python bench/bench_startup.py --before /tmp/before --after . --per-class 2 --reps 1  # quick

The ImageNet-shaped tree (1,000 class folders of tiny JPEGs, 5 descriptors a class) and the
tiny CLIP's cached features are made once in --work; bytecode is compiled before timing.
Prints a Markdown table of median wall seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_world(work: Path, per_class: int) -> dict[str, Path]:
    """The image tree, class list, store and tiny CLIP (the tree made once, reused by later
    runs), as `bench_gpu.py`'s cached re-run makes them."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from bench_gpu import make_imagenet_shape, write_texts

    from descriptor_gen.score.tiny import TINY_CLIP_CONFIG, write_clip_checkpoint

    root = work / f"imagenet-shape-{per_class}"
    if not root.exists():
        make_imagenet_shape(root, per_class)
    classes, store = write_texts(work / "texts", 1000)
    model, weights = write_clip_checkpoint(work / "tiny", "bench-tiny", TINY_CLIP_CONFIG)
    return {"images": root, "classes": classes, "store": store, "model": model,
            "weights": weights, "cache": work / "cache"}


def commands(world: dict[str, Path]) -> dict[str, tuple[list[str], str | None]]:
    evaluate = ["eval", "--dataset", str(world["images"]), "--classes", str(world["classes"]),
                "--descriptors", str(world["store"]), "--model", str(world["model"]),
                "--pretrained", str(world["weights"]), "--device", "cpu", "--precision", "fp32",
                "--cache-dir", str(world["cache"]), "--out", str(world["cache"] / "result.json")]
    return {"--help": (["--help"], None), "prompt tench": (["prompt", "tench"], None),
            "parse -": (["parse", "-"], "- a red comb\n- a hooked beak\n"),
            "show STORE": (["show", str(world["store"])], None), "datasets": (["datasets"], None),
            "eval, all features cached": (evaluate, None)}


def timed(tree: Path, argv: list[str], given: str | None) -> float:
    """Wall seconds of `python -m descriptor_gen ARGV` with `tree`'s package first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "descriptor_gen", *argv], input=given, cwd=tree,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{tree}: descgen {' '.join(argv[:2])}: {done.stderr[-500:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a checkout (git worktree)")
    parser.add_argument("--after", type=Path, default=REPO)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=50, help="images a class (50: ImageNet)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-startup")
    args = parser.parse_args()
    world = make_world(args.work, args.per_class)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    todo = commands(world)
    for tree in trees.values():  # features cached, bytecode compiled
        for argv, given in todo.values():
            timed(tree, argv, given)
    walls: dict[tuple[str, str], list[float]] = {(c, t): [] for c in todo for t in trees}
    for _ in range(args.reps):
        for name, (argv, given) in todo.items():
            for label, tree in trees.items():
                walls[(name, label)].append(timed(tree, argv, given))
    bare = statistics.median(_bare() for _ in range(args.reps))
    print(f"{args.reps} alternating runs each, fresh processes, median wall seconds"
          f" (`python -c pass`: {bare:.2f} s); {1000 * args.per_class:,} images in the eval:\n")
    print("| command | before | after |\n| --- | --- | --- |")
    for name in todo:
        before, after = (statistics.median(walls[(name, label)]) for label in trees)
        print(f"| `descgen {name}` | {before:.2f} s | {after:.2f} s |")


def _bare() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
