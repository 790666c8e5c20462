"""What this machine lends the process: its usable CPU cores, and the DataLoader workers a
run gets when it names none (defaults that suit a 2-core laptop and a 16-core GPU box alike)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1: cpu.cfs_quota_us (-1: none), cpu.cfs_period_us

GPU_LOADER_WORKERS = 16
"""Most DataLoader workers a GPU run starts unasked: each decodes (PIL) or reads (`--decode
torch`) its batches, and every one is a fork of the parent, started before the first batch."""

CPU_LOADER_WORKERS = 2
"""DataLoader workers of a CPU run unasked: the encoder needs the cores more than decoding."""


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX, v1: Path = CGROUP_V1_CPU) -> int:
    """The cores this process may use: its CPU affinity (taskset, a batch system's share),
    lowered to a container's CPU quota (`docker --cpus 4`), which the affinity does not show
    (cgroup v2's `cpu.max`, else v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _quota_cores(cpu_max.read_text, lambda: " ".join(
        (v1 / name).read_text() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us")))
    return max(1, min(cores or 1, quota))


def _quota_cores(*readers: Callable[[], str]) -> int | float:
    """The first CPU quota a reader gives ("QUOTA PERIOD"), in whole cores (rounded up);
    infinity when none gives one (no cgroup file, "max" or -1: no quota, an odd file)."""
    for read in readers:
        try:
            quota, period = read().split()[:2]
            if int(quota) > 0:
                return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return math.inf


def loader_workers(workers: int | None, device: str, images: int | None = None,
                   batch_size: int = 1) -> int:
    """DataLoader worker processes: as asked, or (None) on a GPU one a usable core, at most
    `GPU_LOADER_WORKERS` (the GPU encodes faster than a core decodes), on a CPU
    `CPU_LOADER_WORKERS`; unasked, no more than the batches `images` make (a worker reads whole
    batches, and each is a fork the first batch waits for; None: a stream of unknown length)."""
    if workers is not None:
        return workers
    if device.startswith("cuda"):
        count = max(CPU_LOADER_WORKERS, min(usable_cores(), GPU_LOADER_WORKERS))
    else:
        count = CPU_LOADER_WORKERS
    return count if images is None else min(count, math.ceil(images / batch_size))
