"""CPU encoding in a container whose CPU quota is smaller than its affinity (`docker --cpus`):
torch's own thread count (one a core of the affinity) against descgen's (one a usable core,
`machine.usable_cores`), each in a fresh process, the two taking turns, in one run.

    sudo python bench/bench_threads.py --quota 1            # a cgroup of 1 core, made and removed
    python bench/bench_threads.py --images 64 --reps 1       # no root: the process's own cgroup

With root and a writable cgroup (v1's `cpu` or v2), each process runs in a new cgroup limited to
--quota cores; without, in this process's own cgroup (both arms then agree unless it already has
a quota). ViT-B-32 with random weights (speed does not depend on them) encodes --images resident
224x224 images in batches of 32, fp32, after one warm-up batch; then NumPy's BLAS (the
scores' product) with 1, 2 and 8 threads, the same way. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")

ENCODE = """
import json, os, sys, time
import torch
own = torch.get_num_threads()
from descriptor_gen.score.features import load_clip
clip = load_clip(sys.argv[2], "none", "cpu", "fp32")
if sys.argv[1] == "torch":
    torch.set_num_threads(own)
batch = torch.randn(32, 3, 224, 224)
with torch.no_grad():
    clip.model.encode_image(batch)
    start = time.perf_counter()
    for _ in range(int(sys.argv[3]) // 32):
        clip.model.encode_image(batch)
    seconds = time.perf_counter() - start
from descriptor_gen.machine import usable_cores
print(json.dumps({"threads": torch.get_num_threads(), "usable": usable_cores(),
                  "images_per_s": int(sys.argv[3]) // 32 * 32 / seconds}))
"""

PRODUCT = """
import json, time
import numpy as np
rng = np.random.default_rng(0)
images = rng.standard_normal((20000, 512), dtype=np.float32)
classes = rng.standard_normal((1000, 512), dtype=np.float32)
images @ classes.T
times = []
for _ in range(5):
    start = time.perf_counter()
    images @ classes.T
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": sorted(times)[2]}))
"""
BLAS_THREADS = (1, 2, 8)


@contextmanager
def quota_cgroup(cores: float | None) -> Iterator[Path | None]:
    """A new cgroup limited to `cores` (v1's `cpu` controller, else v2), removed afterwards;
    None where none can be made (no root, a read-only cgroup file system)."""
    if cores is None:
        yield None
        return
    period = 100_000
    for parent, limit in ((CGROUP / "cpu", {"cpu.cfs_quota_us": str(int(cores * period)),
                                             "cpu.cfs_period_us": str(period)}),
                          (CGROUP, {"cpu.max": f"{int(cores * period)} {period}"})):
        folder = parent / f"descgen-bench-{os.getpid()}"
        try:
            folder.mkdir()
        except OSError:
            continue
        try:
            for name, value in limit.items():
                (folder / name).write_text(value)
        except OSError:
            folder.rmdir()
            continue
        try:
            yield folder
        finally:
            folder.rmdir()
        return
    yield None


def fresh(cgroup: Path | None, *args: str, **env: str) -> dict:
    """`python -c ARGS` in a fresh process (in `cgroup`, where there is one): its last line."""
    def join() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    unset = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    done = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True,
                          check=True, preexec_fn=join,
                          env={**{k: v for k, v in os.environ.items() if k not in unset}, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quota", type=float, default=None,
                        help="cores of the cgroup to make (needs root); default: none made")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"torch": [], "descgen": []}
    products: dict[int, list[dict]] = {threads: [] for threads in BLAS_THREADS}
    with quota_cgroup(args.quota) as cgroup:
        for _ in range(args.reps):
            for arm in runs:
                runs[arm].append(fresh(cgroup, ENCODE, arm, args.model, str(args.images)))
            for threads in products:
                products[threads].append(fresh(cgroup, PRODUCT,
                                               OPENBLAS_NUM_THREADS=str(threads)))
    affinity = len(os.sched_getaffinity(0))
    where = (f"a new cgroup of {args.quota:g} core{'' if args.quota == 1 else 's'}" if cgroup is not None
             else "this process's own cgroup")
    print(f"machine: {platform.machine()}, {affinity} cores in the affinity, {where};"
          f" python {platform.python_version()}; {time.strftime('%Y-%m-%d')}")
    print(f"{args.model}, random weights, fp32, {args.images} images of 224x224 in batches of 32,"
          f" median of {args.reps} fresh processes\n")
    print("| threads | usable cores | images/s |\n| --- | --- | --- |")
    rates = {}
    for arm, label in (("torch", "torch's own"), ("descgen", "descgen's")):
        rates[arm] = statistics.median(run["images_per_s"] for run in runs[arm])
        print(f"| {label}: {runs[arm][0]['threads']} | {runs[arm][0]['usable']} |"
              f" {rates[arm]:.1f} |")
    print(f"\ndescgen / torch's own: {rates['descgen'] / rates['torch']:.2f}x\n")
    print("NumPy (its BLAS), a 20,000x512 by 512x1,000 product, median of 5 in each process:\n")
    print("| OPENBLAS_NUM_THREADS | seconds |\n| --- | --- |")
    for threads, done in products.items():
        print(f"| {threads} | {statistics.median(run['seconds'] for run in done):.3f} |")


if __name__ == "__main__":
    main()
