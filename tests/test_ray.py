"""The Ray engine against the local one on a local Ray of 2 CPUs: same features, same
predictions, one shared cache, and a killed or failing worker never leaves a broken entry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import dataset_layouts as layouts
from conftest import assert_same_metrics, interrupt_encoding_at, make_image_folder, write_classes_and_store
from descriptor_gen.cli import main
from descriptor_gen.score.engines import FAULT_ENV

pytest.importorskip("ray")  # the test extras install it; CI runs these

CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def world(tmp_path: Path, tiny_clip) -> dict[str, object]:  # noqa: ANN001
    folder = make_image_folder(tmp_path / "images", {c: 4 for c in CLASSES})
    classes, store = write_classes_and_store(tmp_path, CLASSES,
                                             {i: [f"{c} things", f"{c} colour"] for i, c in enumerate(CLASSES)})
    config, checkpoint = tiny_clip
    return {"tmp": tmp_path, "folder": folder, "classes": classes, "store": store,
            "config": config, "checkpoint": checkpoint,
            "common": ["--classes", str(classes), "--descriptors", str(store), "--model", str(config),
                       "--pretrained", str(checkpoint), "--device", "cpu", "--workers", "0",
                       "--batch-size", "4"]}


RAY = ["--engine", "ray", "--ray-actors", "2", "--ray-actor-cpus", "0.5"]


def run_eval(world: dict, name: str, cache: str, *extra: str, dataset: str | None = None) -> tuple[int, dict, list]:
    tmp: Path = world["tmp"]  # type: ignore[assignment]
    out, preds = tmp / f"{name}.json", tmp / f"{name}.jsonl"
    code = main(["eval", *world["common"], "--dataset", dataset or str(world["folder"]),  # type: ignore[list-item]
                 "--cache-dir", str(tmp / cache), "--out", str(out), "--predictions", str(preds), *extra])
    if code != 0:
        return code, {}, []
    return code, json.loads(out.read_text()), [json.loads(x) for x in preds.read_text().splitlines()]


def cached_features(cache: Path) -> np.ndarray:
    files = sorted((cache / "image_features").glob("*.npy"))
    feature_files = [f for f in files if np.load(f, allow_pickle=False).ndim == 2]
    assert len(feature_files) == 1, files
    return np.load(feature_files[0], allow_pickle=False)


def test_ray_gives_the_local_predictions_and_shares_the_cache(local_ray, world: dict,  # noqa: ANN001
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, local, local_rows = run_eval(world, "local", "c-local", "--progress")
    assert code == 0 and local["images_encoded"] == 12
    assert "images: 100%" in capsys.readouterr().err  # the same bar, counted in images
    code, ray_result, ray_rows = run_eval(world, "ray", "c-ray", *RAY, "--progress")
    assert code == 0 and ray_result["images_encoded"] == 12
    bar = capsys.readouterr().err
    assert "images (ray): 100%" in bar and "12/12" in bar
    assert ray_rows == local_rows
    assert_same_metrics(ray_result["metrics"], local["metrics"])
    assert "ray_startup" in ray_result["timings"] and "ray_startup" not in local["timings"]
    tmp: Path = world["tmp"]
    a, b = cached_features(tmp / "c-local"), cached_features(tmp / "c-ray")
    # an fp32 run keeps fp32 features on both engines (issue 19)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (12, 32)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # each engine reads what the other wrote: nothing encoded the second time
    code, again, rows = run_eval(world, "ray-on-local-cache", "c-local", *RAY)
    assert code == 0 and again["images_encoded"] == 0 and rows == local_rows
    assert "ray_startup" not in again["timings"]  # a cache hit starts no Ray work
    code, again, rows = run_eval(world, "local-on-ray-cache", "c-ray")
    assert code == 0 and again["images_encoded"] == 0 and rows == ray_rows


def test_ray_reads_webdataset_shards_in_order(local_ray, world: dict, tmp_path: Path,  # noqa: ANN001
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "wds"
    samples = layouts.webdataset_folder(folder, [[("s0000", 2), ("s0001", 0), ("s0002", 1)],
                                                 [("s0003", 1), ("s0004", 2)]], CLASSES)
    monkeypatch.chdir(tmp_path)  # a relative source: the workers read it, the names stay as given
    _, local, local_rows = run_eval(world, "wl", "cw-local", dataset="wds:wds")
    code, result, rows = run_eval(world, "wr", "cw-ray", *RAY, dataset="wds:wds")
    assert code == 0 and result["images_encoded"] == 5
    assert [r["label"] for r in rows] == [y for _, y in samples]
    assert [r["path"].rsplit("#", 1)[1] for r in rows] == [k for k, _ in samples]
    assert rows == local_rows  # fp32 features within 1e-5: the same predictions
    assert_same_metrics(result["metrics"], local["metrics"])


def test_a_killed_worker_is_replaced_and_the_cache_is_whole(local_ray, world: dict, tmp_path: Path,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    code, result, rows = run_eval(world, "killed", "c-killed", *RAY)
    assert marker.exists()  # an encoder process died mid-run ...
    assert code == 0 and result["images_encoded"] == 12  # ... and its batch was redone
    monkeypatch.delenv(FAULT_ENV)
    _, _, local_rows = run_eval(world, "local", "c-local")
    assert rows == local_rows
    code, again, _ = run_eval(world, "killed-again", "c-killed")
    assert code == 0 and again["images_encoded"] == 0
    assert cached_features(tmp_path / "c-killed").shape == (12, 32)


def test_a_failing_encoder_caches_nothing(local_ray, world: dict, tmp_path: Path,  # noqa: ANN001
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(FAULT_ENV, "raise")
    code, _, _ = run_eval(world, "failing", "c-fail", *RAY)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nothing was cached" in err
    assert "injected encoder failure" in err
    assert not list((tmp_path / "c-fail" / "image_features").glob("*"))
    monkeypatch.delenv(FAULT_ENV)
    code, result, _ = run_eval(world, "failing", "c-fail", *RAY)
    assert code == 0 and result["images_encoded"] == 12


def test_an_actor_pool_larger_than_the_local_ray_is_refused(local_ray, world: dict,  # noqa: ANN001
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_eval(world, "big", "c-big", "--engine", "ray", "--ray-actors", "4")
    err = capsys.readouterr().err
    assert code == 2 and "need 4.5 CPUs; the local Ray has 2" in err


def test_a_sweep_spec_runs_on_ray(local_ray, world: dict, tmp_path: Path,  # noqa: ANN001
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from descriptor_gen.generation.devserver import DevServer

    spec = {"name": "on-ray", "dataset": str(world["folder"]), "classes": str(world["classes"]),
            "generation": {"backend": "openai", "model": "dev", "base_url": "http://127.0.0.1:9/v1",
                           "api": "completions", "temperature": 0.0, "max_tokens": 100},
            "clip": {"model": str(world["config"]), "pretrained": str(world["checkpoint"]), "device": "cpu", "workers": 0,
                     "batch_size": 4},
            "grid": {"per_example": [1, 3]}, "methods": ["descriptors", "classname"]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    ray_set = ["--set", "clip.engine=ray", "--set", "clip.ray_actors=2", "--set", "clip.ray_actor_cpus=0.5"]

    def rows(folder: Path) -> list[tuple]:
        return sorted((r["cell"], json.dumps(r["metrics"], sort_keys=True), r["images_encoded"])
                      for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines()))

    with DevServer() as server:
        base = ["--set", f"generation.base_url={server.base_url}"]
        assert main(["sweep", str(path), *base, "--out", str(tmp_path / "local"),
                     "--cache-dir", str(tmp_path / "cl")]) == 0
        assert main(["sweep", str(path), *base, *ray_set, "--out", str(tmp_path / "ray"),
                     "--cache-dir", str(tmp_path / "cr")]) == 0
        assert rows(tmp_path / "ray") == rows(tmp_path / "local")
        assert sum(r[2] for r in rows(tmp_path / "ray")) == 12  # one encoding, shared by the cells
        capsys.readouterr()
        # the engine is not part of a cell's identity: the local results count as done
        assert main(["sweep", str(path), *base, *ray_set, "--out", str(tmp_path / "local"),
                     "--cache-dir", str(tmp_path / "cl"), "--dry-run"]) == 0
        assert "3 cells, 3 already done" in capsys.readouterr().out


def test_without_ray_the_engine_is_one_line(world: dict, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, _ = run_eval(world, "noray", "c-noray", "--engine", "ray")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "pip install -e '.[ray]'" in err


def test_a_local_ray_gets_the_usable_cores_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray alone counts every core of the machine (a batch system's affinity of 4 of 64 cores
    made 64 CPUs); a Ray started here gets the usable cores, `--ray-cpus`, and a cluster's
    address gets no CPU count at all."""
    from descriptor_gen.score import ray_engine
    from descriptor_gen.score.engine_options import EngineOptions

    monkeypatch.setattr(ray_engine, "usable_cores", lambda: 3)
    assert ray_engine.init_arguments(EngineOptions(engine="ray"), None)["num_cpus"] == 3
    assert ray_engine.init_arguments(EngineOptions(engine="ray", ray_cpus=5), None)["num_cpus"] == 5
    attach = ray_engine.init_arguments(EngineOptions(engine="ray"), "10.0.0.1:6379")
    assert "num_cpus" not in attach and attach["address"] == "10.0.0.1:6379"


def test_an_unreachable_cluster_fails_fast(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    code, _, _ = run_eval(world, "far", "c-far", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}")
    assert code == 2 and time.monotonic() - started < 30
    assert f"nothing answers at 127.0.0.1:{port}" in capsys.readouterr().err


def test_fp16_needs_gpu_actors(world: dict) -> None:
    """A GPU driver asking fp16 of CPU actors is refused before any Ray work."""
    from descriptor_gen.data.datasets import load_dataset
    from descriptor_gen.errors import DescgenError
    from descriptor_gen.score.engines import EngineOptions
    from descriptor_gen.score.features import load_clip
    from descriptor_gen.score.ray_engine import encode_ray

    clip = load_clip(str(world["config"]), str(world["checkpoint"]), "cpu")
    data = load_dataset(str(world["folder"]), CLASSES, world["tmp"] / "c")  # type: ignore[operator]
    with pytest.raises(DescgenError, match="fp16 needs GPU actors"):
        encode_ray(EngineOptions(engine="ray"), clip,
                   (str(world["config"]), str(world["checkpoint"]), "fp16", "cuda"), data, 4)


def test_ray_resumes_an_interrupted_encoding_and_checkpoints_in_order(
        local_ray, world: dict, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import descriptor_gen.score.evaluate as evaluate_module
    import descriptor_gen.score.features as features

    monkeypatch.setattr(evaluate_module, "CHECKPOINT_ROWS", 4)
    monkeypatch.setattr(features.PartialFeatures, "clear", lambda self: None)  # keep the chunks
    real = features.encode_batch
    interrupt_encoding_at(monkeypatch, 3)
    code, _, _ = run_eval(world, "cut", "c-cut")
    assert code == 130
    monkeypatch.setattr(features, "encode_batch", real)
    _, _, local_rows = run_eval(world, "local", "c-local")
    code, result, rows = run_eval(world, "ray-resumed", "c-cut", *RAY)
    assert code == 0 and result["images_encoded"] == 4 and rows == local_rows
    tmp: Path = world["tmp"]
    whole = cached_features(tmp / "c-cut")
    chunks = sorted((tmp / "c-cut").rglob("partial/*/*.npy"), key=lambda p: int(p.stem))
    assert [p.stem for p in chunks] == ["0", "1", "2"]  # the third written by the Ray run
    for i, chunk in enumerate(chunks):
        np.testing.assert_array_equal(np.load(chunk), whole[4 * i: 4 * i + 4])
