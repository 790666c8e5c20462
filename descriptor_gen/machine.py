"""What this machine lends the process: its usable CPU cores, and the DataLoader workers a
run gets when it names none (defaults that suit a 2-core laptop and a 16-core GPU box alike)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"

GPU_LOADER_WORKERS = 16
"""Most DataLoader workers a GPU run starts unasked: each decodes (PIL) or reads (`--decode
torch`) its batches, and every one is a fork of the parent, started before the first batch."""

CPU_LOADER_WORKERS = 2
"""DataLoader workers of a CPU run unasked: the encoder needs the cores more than decoding."""


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity (taskset, a batch system's share),
    lowered to a container's CPU quota (`docker --cpus 4`), which the affinity does not show."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, _quota_cores(cpu_max)))


def _quota_cores(cpu_max: Path) -> int | float:
    """The cgroup v2 CPU quota in whole cores (rounded up), or infinity when there is none or it
    cannot be read."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):  # "max", no cgroup v2, an odd file
        return math.inf


def loader_workers(workers: int | None, device: str, batches: int | None = None) -> int:
    """DataLoader worker processes: as asked, or (None) on a GPU one a usable core, at most
    `GPU_LOADER_WORKERS` (the GPU encodes faster than a core decodes), on a CPU
    `CPU_LOADER_WORKERS`; unasked, no more than the `batches` there are (a worker reads whole
    batches, and each is a fork the first batch waits for)."""
    if workers is not None:
        return workers
    if device.startswith("cuda"):
        count = max(CPU_LOADER_WORKERS, min(usable_cores(), GPU_LOADER_WORKERS))
    else:
        count = CPU_LOADER_WORKERS
    return count if batches is None else min(count, batches)
