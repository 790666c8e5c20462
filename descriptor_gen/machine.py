"""What this machine lends the process: its usable CPU cores, and what follows from them
when a run names nothing: torch's CPU threads and the DataLoader workers (defaults that suit a
2-core laptop and a 16-core GPU box alike)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")  # "ID:CONTROLLERS:PATH" lines: the process's cgroups

GPU_LOADER_WORKERS = 16
"""Most DataLoader workers a GPU run starts unasked: each decodes (PIL) or reads (`--decode
torch`) its batches, and every one is a fork of the parent, started before the first batch."""

CPU_LOADER_WORKERS = 2
"""DataLoader workers of a CPU run unasked: the encoder needs the cores more than decoding."""


def usable_cores(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP) -> int:
    """The cores this process may use: its CPU affinity (taskset, a batch system's cpuset),
    lowered to the smallest CPU quota on its cgroup's path (`docker --cpus 4`, a systemd slice's
    CPUQuota), which the affinity does not show."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, _quota_cores(_quota_readers(root, membership))))


def _quota_readers(root: Path, membership: Path) -> list[Callable[[], str]]:
    """Readers of "QUOTA PERIOD" for the process's cgroup and each one above it, in cgroup v2
    (`cpu.max`) and v1 (`cpu.cfs_quota_us`, `cpu.cfs_period_us`). The mount's root is always
    read: in a container the mount is the container's own cgroup, whatever the path says."""
    v2, v1 = "/", "/"
    try:
        for line in membership.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if not controllers:
                v2 = path
            elif "cpu" in controllers.split(","):
                v1 = path
    except (OSError, ValueError):
        pass
    readers: list[Callable[[], str]] = []
    for folder in _up_from(root, v2):
        readers.append((folder / "cpu.max").read_text)
    for mount in (root / "cpu", root / "cpu,cpuacct"):
        for folder in _up_from(mount, v1):
            readers.append(lambda f=folder: " ".join(
                (f / name).read_text() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us")))
    return readers


def _up_from(mount: Path, path: str) -> list[Path]:
    """`mount/path` and each folder above it, up to `mount` itself."""
    parts = [part for part in path.split("/") if part and part not in (".", "..")]
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _quota_cores(readers: list[Callable[[], str]]) -> int | float:
    """The smallest CPU quota the readers give ("QUOTA PERIOD"), in whole cores (rounded up);
    infinity when none gives one (no file, "max" or -1: no quota, an odd file)."""
    cores: int | float = math.inf
    for read in readers:
        try:
            quota, period = read().split()[:2]
            if int(quota) > 0:
                cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return cores


def cpu_threads(current: int) -> int:
    """torch's intra-op threads for this process: as many as it has (its `OMP_NUM_THREADS` or
    torch's own count), at most one a usable core (torch counts the affinity, not a container's
    CPU quota, and more threads than a quota allows stall each other)."""
    return max(1, min(current, usable_cores()))


def fit_torch_threads(torch: Any) -> int:
    """Lower torch's intra-op threads to `cpu_threads` (before a model runs on the CPU: the
    CLIP's encoder, a local language model); the count it runs with."""
    threads = cpu_threads(torch.get_num_threads())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


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
