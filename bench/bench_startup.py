"""Start-up of commands that need no model, a fully cached re-evaluation at ImageNet
validation's shape, and (`--first-run N`) a first evaluation of N new photo-sized JPEGs by a
remembered ViT-B-32 (random weights, the CPU: the model is built, every image encoded), before
and after a change: two checkouts of the package, each command in a fresh process, the two
checkouts taking turns (this machine's noise falls on both alike).

    git worktree add /tmp/before <commit>
    python bench/bench_startup.py --before /tmp/before --after .          # medians of 5
    python bench/bench_startup.py --before /tmp/before --after . --per-class 2 --reps 1  # quick
    python bench/bench_startup.py --before /tmp/before --after . --first-run 128

The ImageNet-shaped tree (1,000 class folders of tiny JPEGs, 5 descriptors a class) and the
tiny CLIP's cached features are made once in --work; bytecode is compiled before timing. A
first run starts from a cache holding the CLIP's remembered identity and the texts' features,
but no image's (made once).
Prints a Markdown table of median wall seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def first_run_world(work: Path, n: int) -> dict[str, Path]:
    """N photo-like 500x375 JPEGs in 100 class folders, their texts, and a cache in which
    ViT-B-32 with random weights is remembered (its identity, its preprocessing's settings)
    and the texts' features are cached (made by an eval of other images, whose image features
    are then removed): a first run builds the model and encodes its images only."""
    from bench_gpu import linked_subset, make_images, write_texts

    from descriptor_gen.paths import IMAGE_FEATURES

    root, memo = work / f"photos-{n}", work / "memo-b32"
    if not root.exists():
        make_images(root, n, os.cpu_count() or 1)
    classes, store = write_texts(work / "texts-100")
    world = {"images": root, "classes": classes, "store": store, "memo": memo,
             "cache": work / "first-run-cache"}
    if not memo.exists():
        linked_subset(root, work / "photos-other", 100)
        subprocess.run([sys.executable, "-m", "descriptor_gen",
                        *eval_argv(world, work / "photos-other", memo)], check=True, cwd=REPO,
                       capture_output=True)
        shutil.rmtree(memo / IMAGE_FEATURES)
    return world


def eval_argv(world: dict[str, Path], images: Path, cache: Path) -> list[str]:
    return ["eval", "--dataset", str(images), "--classes", str(world["classes"]),
            "--descriptors", str(world["store"]), "--model", "ViT-B-32", "--pretrained", "none",
            "--device", "cpu", "--cache-dir", str(cache), "--out", str(cache / "result.json")]


def fresh_cache(world: dict[str, Path]) -> None:
    """The first run's cache: the remembered identity and the texts' features, no image's."""
    shutil.rmtree(world["cache"], ignore_errors=True)
    shutil.copytree(world["memo"], world["cache"])


Command = tuple[list[str], str | None, Callable[[], None] | None]


def first_run(world: dict[str, Path]) -> Command:
    return eval_argv(world, world["images"], world["cache"]), None, lambda: fresh_cache(world)


def commands(world: dict[str, Path]) -> dict[str, Command]:
    evaluate = ["eval", "--dataset", str(world["images"]), "--classes", str(world["classes"]),
                "--descriptors", str(world["store"]), "--model", str(world["model"]),
                "--pretrained", str(world["weights"]), "--device", "cpu", "--precision", "fp32",
                "--cache-dir", str(world["cache"]), "--out", str(world["cache"] / "result.json")]
    return {"--help": (["--help"], None, None), "prompt tench": (["prompt", "tench"], None, None),
            "parse -": (["parse", "-"], "- a red comb\n- a hooked beak\n", None),
            "show STORE": (["show", str(world["store"])], None, None),
            "datasets": (["datasets"], None, None),
            "eval, all features cached": (evaluate, None, None)}


def timed(tree: Path, argv: list[str], given: str | None,
          prepare: Callable[[], None] | None = None) -> float:
    """Wall seconds of `python -m descriptor_gen ARGV` with `tree`'s package first on the path
    (after `prepare`, untimed)."""
    if prepare is not None:
        prepare()
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
    parser.add_argument("--first-run", type=int, default=0, metavar="N",
                        help="also time a first eval of N new JPEGs by a remembered ViT-B-32")
    args = parser.parse_args()
    world = make_world(args.work, args.per_class)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    todo = commands(world)
    if args.first_run:
        todo[f"eval, remembered ViT-B-32, {args.first_run} new images"] = first_run(
            first_run_world(args.work, args.first_run))
    for tree in trees.values():  # features cached, bytecode compiled
        for argv, given, prepare in todo.values():
            timed(tree, argv, given, prepare)
    walls: dict[tuple[str, str], list[float]] = {(c, t): [] for c in todo for t in trees}
    for _ in range(args.reps):
        for name, (argv, given, prepare) in todo.items():
            for label, tree in trees.items():
                walls[(name, label)].append(timed(tree, argv, given, prepare))
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
