"""CLIP_benchmark's ways, run as its users run them: result files in its shape for every
evaluation, several CLIPs in one command, `descgen models`, and `descgen build` to one CSV."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_image_folder, write_classes_and_store
from descriptor_gen.cli import main
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.model_list import COLLECTIONS, model_pairs

CLASSES = ["tench", "goldfish", "missile"]
DESCRIPTORS = {0: ["olive-green body", "a thick tail"], 1: ["bright orange scales"],
               2: ["a long, cylindrical body", "tail fins"]}


@pytest.fixture
def world(tmp_path: Path, tiny_clip: tuple[Path, Path]) -> dict:
    images = make_image_folder(tmp_path / "fish", {"tench": 3, "goldfish": 2, "missile": 2})
    classes, store = write_classes_and_store(tmp_path, CLASSES, DESCRIPTORS)
    config, checkpoint = tiny_clip
    return {"images": images, "classes": classes, "store": store, "config": config,
            "checkpoint": checkpoint, "cache": tmp_path / "cache", "tmp": tmp_path}


def _eval(w: dict, *extra: str) -> list[str]:
    return ["eval", "--dataset", str(w["images"]), "--classes", str(w["classes"]),
            "--descriptors", str(w["store"]), "--device", "cpu", "--workers", "0",
            "--cache-dir", str(w["cache"]), *extra]


def test_every_eval_writes_a_result_file_in_clip_benchmarks_shape(world: dict,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """No --out: results/eval/DATASET_MODEL_PRETRAINED_METHOD_STORE.json under the results
    folder, said on stdout, CLIP_benchmark's six fields first."""
    w = world
    assert main(_eval(w, "--model", str(w["config"]), "--pretrained", str(w["checkpoint"]))) == 0
    out = capsys.readouterr().out
    expected = (Path(os.environ["DESCRIPTOR_GEN_RESULTS"]) / "eval"
                / "fish_tiny-clip-test_tiny-clip-test.pt_descriptors_d.json")
    assert out.rstrip().endswith(f"result: {expected}")
    data = json.loads(expected.read_text())
    assert {k: data[k] for k in ("dataset", "model", "pretrained", "task", "language")} == {
        "dataset": str(w["images"]), "model": str(w["config"]), "pretrained": str(w["checkpoint"]),
        "task": "zeroshot_classification", "language": "en"}
    assert list(data["metrics"])[:3] == ["acc1", "acc5", "mean_per_class_recall"]
    assert data["method"] == "descriptors" and len(data["descriptor_file_sha256"]) == 64


def test_two_clips_in_one_command_two_result_files_and_one_csv(world: dict,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`--model M --pretrained A --pretrained B` runs (M, A) and (M, B), each loading once;
    `--out DIR` receives a file each; `descgen build DIR --output t.csv` makes the long table,
    beside a CLIP_benchmark result file and a descgen file of the old vintage (top1)."""
    from descriptor_gen.score.tiny import TINY_CLIP_CONFIG, write_clip_checkpoint

    w = world
    folder = w["tmp"] / "two"
    _, other = write_clip_checkpoint(w["tmp"] / "other", "tiny-clip-test", TINY_CLIP_CONFIG, seed=7)
    other = other.rename(other.with_name("seed7.pt"))
    code = main(_eval(w, "--model", str(w["config"]), "--pretrained", str(w["checkpoint"]),
                      "--pretrained", str(other), "--out", str(folder)))
    out = capsys.readouterr().out
    assert code == 0
    files = sorted(folder.glob("*.json"))
    assert [f.name for f in files] == ["fish_tiny-clip-test_seed7.pt_descriptors_d.json",
                                      "fish_tiny-clip-test_tiny-clip-test.pt_descriptors_d.json"]
    assert f"{w['config']} / {other}:" in out and out.count("result: ") == 2
    results = {json.loads(f.read_text())["pretrained"]: json.loads(f.read_text()) for f in files}
    # two CLIPs, two sets of features: the second file is not the first one's numbers
    assert results[str(other)]["metrics"]["mean_entropy"] != \
        results[str(w["checkpoint"])]["metrics"]["mean_entropy"]
    theirs = w["tmp"] / "cifar10_openai_ViT-B-32_en_zeroshot_classification.json"
    theirs.write_text(json.dumps({"dataset": "cifar10", "model": "ViT-B-32", "pretrained": "openai",
                                  "task": "zeroshot_classification",
                                  "metrics": {"acc1": 0.8983, "acc5": 0.9955,
                                              "mean_per_class_recall": 0.8983},
                                  "language": "en"}))
    old = w["tmp"] / "old.json"
    old.write_text(json.dumps({"dataset": "food101", "model": "ViT-B-32", "pretrained": "openai",
                               "method": "classname", "metrics": {"top1": 0.8, "top5": 0.95,
                               "mean_per_class_recall": 0.79, "n_images": 25250}}))
    table = w["tmp"] / "benchmark.csv"
    assert main(["build", str(folder), str(theirs), str(old), "--output", str(table)]) == 0
    assert f"4 rows: {table}" in capsys.readouterr().out
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0])[:10] == ["dataset", "model", "pretrained", "method", "setting", "seed",
                                  "n_images", "acc1", "acc5", "mean_per_class_recall"]
    assert [r["pretrained"] for r in rows[:2]] == [str(other), str(w["checkpoint"])]
    assert float(rows[1]["acc1"]) == pytest.approx(results[str(w["checkpoint"])]["metrics"]["acc1"])
    assert rows[1]["n_images"] == "7" and rows[1]["method"] == "descriptors"
    assert rows[2]["model_fullname"] == "ViT-B-32 openai" and rows[2]["method"] == "templates"
    assert (rows[3]["acc1"], rows[3]["acc5"], rows[3]["n_images"]) == ("0.8", "0.95", "25250")
    import pandas as pd

    frame = pd.read_csv(table)
    assert frame["acc1"].notna().all() and len(frame) == 4


def test_several_clips_refuse_what_takes_one(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    two = ["--model", str(w["config"]), "--pretrained", str(w["checkpoint"]), "--pretrained", "none"]
    assert main(_eval(w, *two, "--out", str(w["tmp"] / "r.json"))) == 2
    assert "names a folder" in capsys.readouterr().err
    assert main(_eval(w, *two, "--predictions", str(w["tmp"] / "p.jsonl"))) == 2
    assert "--predictions takes one CLIP" in capsys.readouterr().err
    assert not (w["tmp"] / "r.json").exists()


def test_model_pairs_pair_in_order_broadcast_one_and_expand_entries(tmp_path: Path) -> None:
    assert model_pairs(None, None, None) == [("ViT-B-32", "openai")]
    assert model_pairs(["A", "B"], ["x", "y"], None) == [("A", "x"), ("B", "y")]
    assert model_pairs(["A"], ["x", "y"], None) == [("A", "x"), ("A", "y")]
    assert model_pairs(["A", "B"], ["x"], None) == [("A", "x"), ("B", "x")]
    assert model_pairs(None, None, ["openai"]) == COLLECTIONS["openai"]
    listing = tmp_path / "models.txt"
    listing.write_text("# mine\nViT-B-32,openai\n\nViT-B-16, laion400m_e32\n")
    assert model_pairs(["A"], ["x"], [str(listing), "ViT-B-32,openai"]) == [
        ("A", "x"), ("ViT-B-32", "openai"), ("ViT-B-16", "laion400m_e32")]
    with pytest.raises(DescgenError, match="2 --model and 3 --pretrained"):
        model_pairs(["A", "B"], ["x", "y", "z"], None)
    listing.write_text("ViT-B-32 openai\n")
    with pytest.raises(DescgenError, match=r"models.txt:1: 'ViT-B-32 openai' is not MODEL,PRETRAINED"):
        model_pairs(None, None, [str(listing)])


def test_models_lists_open_clips_pairs_and_marks_those_on_this_machine(tmp_path: Path) -> None:
    """A Hugging Face cache holding ViT-B-32/openai's weights (a file where the hub puts it):
    `descgen models vit-b-32` marks it, `--here` lists only it, `--collections` names them."""
    snapshot = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc")
    (snapshot / "snapshots" / "abc").mkdir(parents=True)
    (snapshot / "snapshots" / "abc" / "open_clip_model.safetensors").write_bytes(b"0")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    descgen = str(Path(sys.executable).parent / "descgen")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([descgen, "models", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    listed = run("vit-b-32")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert "* ViT-B-32,openai" in lines and "  ViT-B-32,laion2b_s34b_b79k" in lines
    assert all("vit-b-32" in line.lower() for line in lines)
    # the quickgelu variant loads the same file
    assert run("vit-b-32", "--here").stdout.splitlines() == ["* ViT-B-32,openai",
                                                             "* ViT-B-32-quickgelu,openai"]
    assert "openclip_base: ViT-B-32-quickgelu,laion400m_e32" in run("--collections").stdout
    none = run("no-such-model")
    assert none.returncode == 2 and none.stderr.startswith("descgen: error: no open_clip pair")
