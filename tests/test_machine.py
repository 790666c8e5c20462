"""The machine's share of cores and the DataLoader workers a run starts when it names none."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from PIL import Image

from conftest import write_classes_and_store
from descriptor_gen import machine
from descriptor_gen.machine import GPU_LOADER_WORKERS, loader_workers, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cpu_max", "v1", "expected"), [
    ("max 100000\n", None, AFFINITY),              # cgroup v2, no quota
    ("100000 100000\n", None, 1),                  # docker --cpus 1
    ("150000 100000\n", None, min(AFFINITY, 2)),   # --cpus 1.5: the half core rounds up
    ("50000 100000\n", None, 1),                   # less than a core is still one
    ("not a quota", None, AFFINITY),
    (None, None, AFFINITY),                        # no cgroup file (this CI machine, most laptops)
    (None, ("100000", "100000"), 1),               # cgroup v1 with a quota
    (None, ("-1", "100000"), AFFINITY),            # cgroup v1 without one
    ("max 100000\n", ("100000", "100000"), 1),     # v2 says none: v1's, where a host has both
])
def test_usable_cores_is_the_affinity_lowered_to_a_containers_quota(
        tmp_path: Path, cpu_max: str | None, v1: tuple[str, str] | None, expected: int) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    if v1 is not None:
        (tmp_path / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (tmp_path / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    assert usable_cores(path, tmp_path) == expected


def test_workers_unasked_follow_the_device_and_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, on_gpu in ((1, 2), (2, 2), (8, 8), (16, 16), (64, GPU_LOADER_WORKERS)):
        monkeypatch.setattr(machine, "usable_cores", lambda cores=cores: cores)
        assert loader_workers(None, "cuda") == loader_workers(None, "cuda:1") == on_gpu
        assert loader_workers(None, "cpu") == 2  # the encoder keeps the cores
    assert loader_workers(0, "cuda") == 0 and loader_workers(5, "cpu") == 5  # asked: as asked
    assert loader_workers(None, "cuda", images=9, batch_size=4) == 3  # 3 batches
    assert loader_workers(None, "cpu", images=1, batch_size=4) == 1
    assert loader_workers(7, "cuda", images=9, batch_size=4) == 7  # asked for more: as asked


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
