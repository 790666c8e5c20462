"""The machine's share of cores and the DataLoader workers a run starts when it names none."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import write_classes_and_store
from descriptor_gen import machine
from descriptor_gen.machine import GPU_LOADER_WORKERS, cpu_threads, loader_workers, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cpu_max", "v1", "expected"), [
    ("max 100000\n", None, AFFINITY),              # cgroup v2, no quota
    ("100000 100000\n", None, 1),                  # docker --cpus 1
    ("150000 100000\n", None, min(AFFINITY, 2)),   # --cpus 1.5: the half core rounds up
    ("50000 100000\n", None, 1),                   # less than a core is still one
    ("not a quota", None, AFFINITY),
    (None, None, AFFINITY),                        # no cgroup file (most laptops)
    (None, ("100000", "100000"), 1),               # cgroup v1 with a quota
    (None, ("-1", "100000"), AFFINITY),            # cgroup v1 without one (this CI machine)
    ("max 100000\n", ("100000", "100000"), 1),     # v2 says none: v1's, where a host has both
])
def test_usable_cores_is_the_affinity_lowered_to_a_containers_quota(
        tmp_path: Path, cpu_max: str | None, v1: tuple[str, str] | None, expected: int) -> None:
    """A container: its cgroup is the mount's root, whatever /proc/self/cgroup says."""
    if cpu_max is not None:
        (tmp_path / "cpu.max").write_text(cpu_max)
    if v1 is not None:
        _v1_quota(tmp_path / "cpu", *v1)
    membership = tmp_path / "cgroup"
    membership.write_text("1:cpu:/docker/0123abcd\n0::/docker/0123abcd\n")
    assert usable_cores(tmp_path, membership) == expected
    assert usable_cores(tmp_path, tmp_path / "no such file") == expected


def _v1_quota(folder: Path, quota: str, period: str = "100000") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (folder / "cpu.cfs_period_us").write_text(period + "\n")


@pytest.mark.parametrize(("layout", "expected"), [
    ({"job/step/cpu.max": "100000 100000"}, 1),                        # v2, on its own cgroup
    ({"job/cpu.max": "100000 100000", "job/step/cpu.max": "max 100000"}, 1),  # on one above
    ({"other/cpu.max": "100000 100000"}, AFFINITY),                    # another cgroup's
    ({"cpu/job/step": ("100000",)}, 1),                                 # v1, on its own cgroup
    ({"cpu,cpuacct/job": ("100000",), "cpu,cpuacct/job/step": ("-1",)}, 1),  # v1 joined mounts
])
def test_usable_cores_reads_the_quotas_on_the_processs_cgroup_path(
        tmp_path: Path, layout: dict[str, str | tuple[str]], expected: int) -> None:
    """A host or batch system (systemd slices, a job's steps): the process's cgroup is nested
    below the mount; the smallest quota from it up to the mount's root counts. The quotas here
    are one core; the affinity is the machine's."""
    for where, quota in layout.items():
        if isinstance(quota, tuple):
            _v1_quota(tmp_path / where, quota[0])
        else:
            (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / where).write_text(quota + "\n")
    membership = tmp_path / "cgroup"
    membership.write_text("12:memory:/job/step\n4:cpu,cpuacct:/job/step\n0::/job/step\n")
    assert usable_cores(tmp_path, membership) == expected


def test_usable_cores_in_a_real_cgroup_with_a_quota(tmp_path: Path) -> None:
    """A cgroup made on this machine (where it is root and cgroup v1's `cpu` is writable), a
    process moved into it: the quota it reads is its own, not the mount root's."""
    folder = Path("/sys/fs/cgroup/cpu") / f"descgen-test-{os.getpid()}"
    try:
        folder.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here ({exc})")
    try:
        script = "from descriptor_gen.machine import usable_cores; print(usable_cores())"
        try:
            (folder / "cpu.cfs_quota_us").write_text("100000")
            done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                  preexec_fn=lambda: (folder / "cgroup.procs")
                                  .write_text(str(os.getpid())))
        except (OSError, subprocess.SubprocessError) as exc:  # the write, or the preexec's
            pytest.skip(f"cannot limit a cgroup or join it here ({exc})")
        assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr
    finally:
        folder.rmdir()


def test_workers_unasked_follow_the_device_and_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, on_gpu in ((1, 2), (2, 2), (8, 8), (16, 16), (64, GPU_LOADER_WORKERS)):
        monkeypatch.setattr(machine, "usable_cores", lambda cores=cores: cores)
        assert loader_workers(None, "cuda") == loader_workers(None, "cuda:1") == on_gpu
        assert loader_workers(None, "cpu") == 2  # the encoder keeps the cores
    assert loader_workers(0, "cuda") == 0 and loader_workers(5, "cpu") == 5  # asked: as asked
    assert loader_workers(None, "cuda", images=9, batch_size=4) == 3  # 3 batches
    assert loader_workers(None, "cpu", images=1, batch_size=4) == 1
    assert loader_workers(7, "cuda", images=9, batch_size=4) == 7  # asked for more: as asked


def test_torch_threads_are_at_most_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, current, expected in ((2, 16, 2), (16, 16, 16), (16, 4, 4), (1, 1, 1)):
        monkeypatch.setattr(machine, "usable_cores", lambda cores=cores: cores)
        assert cpu_threads(current) == expected  # OMP_NUM_THREADS=4 on 16 cores: 4


@pytest.mark.parametrize("model", ["clip", "hf language model"])
def test_loading_a_model_in_a_quota_limited_container_lowers_torchs_threads(
        monkeypatch: pytest.MonkeyPatch, tiny_clip: tuple[Path, Path], tiny_lm: Path,
        model: str) -> None:
    """torch counts the affinity; with `docker --cpus 1` the CLIP encodes, and a local language
    model generates, on one thread."""
    import torch

    from descriptor_gen.generation.backends import GenerationParams, make_backend
    from descriptor_gen.score.features import load_clip

    before = torch.get_num_threads()
    monkeypatch.setattr(machine, "usable_cores", lambda: 1)
    try:
        if model == "clip":
            load_clip(str(tiny_clip[0]), str(tiny_clip[1]), "cpu", "fp32")
        else:
            make_backend(GenerationParams(backend="hf", model=str(tiny_lm), device="cpu"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 12 on this 2-core machine
def test_the_loader_of_a_run_on_a_gpu_gets_a_worker_a_core(
        monkeypatch: pytest.MonkeyPatch, tiny_clip: tuple[Path, Path]) -> None:
    """`image_loader` (every decoder) sizes its DataLoader for the device the CLIP is on; a
    CLIP on a GPU is faked (building a DataLoader touches no device)."""
    from descriptor_gen.score.caches import CLIP_VIEW
    from descriptor_gen.score.features import image_loader, load_clip

    monkeypatch.setattr(machine, "usable_cores", lambda: 12)
    clip = load_clip(str(tiny_clip[0]), str(tiny_clip[1]), "cpu", "fp32")
    on_gpu = dataclasses.replace(clip, device="cuda")
    paths = [f"{i}.jpg" for i in range(100)]  # 25 batches of 4
    for decode in ("pil", "torch", "pil-draft"):
        assert image_loader(on_gpu, paths, 4, None, None, CLIP_VIEW, decode)[0].num_workers == 12
        assert image_loader(clip, paths, 4, None, None, CLIP_VIEW, decode)[0].num_workers == 2
        assert image_loader(on_gpu, paths, 4, 3, None, CLIP_VIEW, decode)[0].num_workers == 3
        assert image_loader(on_gpu, paths[:9], 4, None, None, CLIP_VIEW, decode)[0].num_workers == 3


def test_an_eval_that_names_no_workers_gets_the_devices_default(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_clip: tuple[Path, Path]) -> None:
    """From `EvalConfig`'s default (None) to the DataLoader an evaluation builds."""
    from descriptor_gen.paths import CachePaths
    from descriptor_gen.score import features
    from descriptor_gen.score.evaluate import EvalConfig, evaluate

    asked: list[int] = []
    real = features.DataLoader

    def loader(*args: object, **kwargs: object) -> object:
        asked.append(kwargs["num_workers"])  # type: ignore[arg-type]
        return real(*args, **{**kwargs, "num_workers": 0})  # the test forks nothing

    monkeypatch.setattr(features, "DataLoader", loader)
    for c in range(2):
        (tmp_path / "images" / str(c)).mkdir(parents=True)
        Image.new("RGB", (20, 16), (90 * c, 40, 200)).save(tmp_path / "images" / str(c) / "x.jpg")
    _, store = write_classes_and_store(tmp_path, ["sky", "sand"], {0: ["blue"], 1: ["pale"]})
    cfg = EvalConfig(dataset=str(tmp_path / "images"), descriptors=store, model=str(tiny_clip[0]),
                     pretrained=str(tiny_clip[1]), device="cpu", batch_size=1)  # 2 batches
    assert cfg.workers is None
    evaluate(cfg, ["sky", "sand"], tmp_path / "cache", CachePaths.resolve().prompts_dir,
             log=lambda m: None)
    assert asked == [2]
