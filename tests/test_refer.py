from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from descriptor_gen.cli import main
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.features import encode_texts, load_clip
from descriptor_gen.visual.markers import circle
from descriptor_gen.visual.refer import (
    Annotation,
    Variant,
    candidate_scores,
    convert_refcoco,
    encode_marked,
    evaluate_refer,
    iou,
    load_plain_pickle,
)


@pytest.fixture
def clip(tiny_clip: tuple[Path, Path]):  # noqa: ANN201
    config, checkpoint = tiny_clip
    return load_clip(str(config), str(checkpoint), "cpu")


def _scene(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scene.png"
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [([0, 0, 10, 10], [0, 0, 10, 10], 1.0), ([0, 0, 10, 10], [5, 0, 10, 10], 50 / 150),
     ([0, 0, 10, 10], [20, 20, 5, 5], 0.0), ([0, 0, 0, 10], [0, 0, 0, 10], 0.0)],
)
def test_iou(a: list[float], b: list[float], expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)


def test_scores_equal_direct_computation(clip, tmp_path: Path) -> None:  # noqa: ANN001
    path = _scene(tmp_path)
    boxes = [[5, 5, 30, 30], [50, 20, 40, 40]]
    variants = [Variant("circle"), Variant("grayscale_outside")]
    image = Image.open(path).convert("RGB")
    feats = encode_marked(clip, image, boxes, variants)
    text = encode_texts(clip, ["This is a dog"])[0]
    others = encode_texts(clip, ["This is a cat", "This is a car", "This is a tree"])
    got = candidate_scores(feats, text, others)
    for p, box in enumerate(boxes):
        direct = []
        for v in variants:
            single = encode_marked(clip, image, [box], [v])[0, 0]
            direct.append(single @ text - np.mean([single @ o for o in others]))
        assert got[p] == pytest.approx(np.mean(direct), abs=1e-5)
    assert np.allclose(encode_marked(clip, circle(image, boxes[0]), [[0, 0, 96, 64]], [Variant("crop")])[0, 0],
                       encode_marked(clip, image, [boxes[0]], [Variant("circle")])[0, 0], atol=1e-5)


class _ColourModel(torch.nn.Module):
    """A CLIP stand-in whose answers are known: an image's feature is its mean colour, and
    "This is a red/blue thing" is the red/blue direction."""

    TEXTS = ["This is a red thing", "This is a blue thing"]

    def encode_image(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=(2, 3))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.eye(3)[[0, 2]][tokens[:, 0]]


def _colour_clip():  # noqa: ANN202
    from descriptor_gen.score.features import ClipModel

    def preprocess(image: Image.Image) -> torch.Tensor:
        return torch.tensor(np.asarray(image.resize((8, 8)), np.float32) / 255).permute(2, 0, 1)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[_ColourModel.TEXTS.index(t)] for t in texts])

    return ClipModel(_ColourModel(), preprocess, tokenize, "cpu", "fp32", "colour-model")


def test_accuracy_against_a_known_answer(tmp_path: Path) -> None:
    """A red square and a blue square: the chosen box, IoU > 0.5 and the accuracy are known."""
    pixels = np.full((64, 96, 3), 128, np.uint8)
    pixels[5:35, 5:35] = (255, 0, 0)
    pixels[20:60, 50:90] = (0, 0, 255)
    (tmp_path / "images").mkdir()
    Image.fromarray(pixels).save(tmp_path / "images" / "scene.png")
    red, blue = [5, 5, 30, 30], [50, 20, 40, 40]
    cases = [  # (expression, target, chosen, correct)
        ("a red thing", red, 0, True),
        ("a blue thing", blue, 1, True),
        ("a red thing", [5, 5, 30, 12], 0, False),  # IoU with the red box 0.4
        ("a red thing", [5, 5, 30, 18], 0, True),  # IoU 0.6
        ("a blue thing", red, 1, False),
    ]
    anns = [Annotation(image="scene.png", expression=e, proposals=[red, blue], target=t)
            for e, t, _, _ in cases]
    assert iou(red, [5, 5, 30, 12]) == pytest.approx(0.4) and iou(red, [5, 5, 30, 18]) == pytest.approx(0.6)
    preds = tmp_path / "preds.jsonl"
    result = evaluate_refer(anns, tmp_path / "images", _colour_clip(), [Variant("crop")],
                            tmp_path / "cache", predictions=preds)
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [r["choice"] for r in rows] == [c for _, _, c, _ in cases]
    assert [r["correct"] for r in rows] == [ok for _, _, _, ok in cases]
    assert result.accuracy == pytest.approx(3 / 5) and result.crop_accuracy == pytest.approx(3 / 5)


def test_accuracy_and_crop_baseline(clip, tmp_path: Path) -> None:  # noqa: ANN001
    _scene(tmp_path / "images")
    target = [5, 5, 30, 30]
    anns = [Annotation(image="scene.png", expression=e, proposals=[target, [50, 20, 40, 40]],
                       target=target) for e in ("a dog", "a red ball", "the left thing")]
    preds = tmp_path / "preds.jsonl"
    result = evaluate_refer(anns, tmp_path / "images", clip, [Variant()], tmp_path / "cache",
                            subtract=2, predictions=preds, save_marked=tmp_path / "marked")
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert result.accuracy == pytest.approx(np.mean([r["choice"] == 0 for r in rows]))
    assert result.crop_accuracy == pytest.approx(np.mean([r["crop_choice"] == 0 for r in rows]))
    assert len(list((tmp_path / "marked").rglob("*.png"))) == 3 * 2
    again = evaluate_refer(anns, tmp_path / "images", clip, [Variant()], tmp_path / "cache", subtract=2)
    assert again == result


def _refs_and_instances(tmp_path: Path) -> tuple[Path, Path]:
    refs = [{"ref_id": 1, "image_id": 7, "ann_id": 70, "split": "val",
             "sentences": [{"sent": "man on the left"}, {"sent": "left guy"}]},
            {"ref_id": 2, "image_id": 7, "ann_id": 71, "split": "train",
             "sentences": [{"sent": "woman"}]}]
    refs_path = tmp_path / "refs(unc).p"
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    instances = {"images": [{"id": 7, "file_name": "COCO_train2014_000000000007.jpg"}],
                 "annotations": [{"id": 70, "image_id": 7, "bbox": [1, 2, 30, 40]},
                                 {"id": 71, "image_id": 7, "bbox": [40, 2, 30, 40]}]}
    instances_path = tmp_path / "instances.json"
    instances_path.write_text(json.dumps(instances))
    return refs_path, instances_path


def test_converter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs, instances = _refs_and_instances(tmp_path)
    anns = convert_refcoco(refs, instances, "val")
    assert [a.expression for a in anns] == ["man on the left", "left guy"]
    assert anns[0].proposals == [[1, 2, 30, 40], [40, 2, 30, 40]] and anns[0].target == [1, 2, 30, 40]
    assert len(convert_refcoco(refs, instances, None)) == 3
    out = tmp_path / "refs.jsonl"
    assert main(["refer-convert", "--refs", str(refs), "--instances", str(instances),
                 "--split", "val", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_restricted_unpickler_refuses_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([OrderedDict(a=1)]))
    with pytest.raises(DescgenError, match="refusing to load collections.OrderedDict"):
        load_plain_pickle(evil)
    payload = tmp_path / "payload.p"
    payload.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(DescgenError, match="refusing to load os.system"):
        load_plain_pickle(payload)
    _, instances = _refs_and_instances(tmp_path)
    code = main(["refer-convert", "--refs", str(payload), "--instances", str(instances),
                 "--out", str(tmp_path / "x.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to load os.system" in err and len(err.strip().splitlines()) == 1


def test_cli_refer(tiny_clip: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, checkpoint = tiny_clip
    _scene(tmp_path / "images")
    anns = tmp_path / "a.jsonl"
    anns.write_text(json.dumps({"image": "scene.png", "expression": "a dog",
                                "proposals": [[5, 5, 30, 30], [50, 20, 40, 40]],
                                "target": [5, 5, 30, 30]}) + "\n")
    base = ["refer", "--annotations", str(anns), "--images", str(tmp_path / "images"),
            "--model", str(config), "--pretrained", str(checkpoint), "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "r.json"
    assert main([*base, "--ensemble", "circle,blur_outside,grayscale_outside", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("accuracy ")
    result = json.loads(out.read_text())
    assert [m["marker"] for m in result["marker"]] == ["circle", "blur_outside", "grayscale_outside"]
    assert main([*base, "--marker", "star"]) == 2
    assert "unknown marker 'star'" in capsys.readouterr().err
    anns.write_text('{"image": "scene.png", "expression": "x", "proposals": [], "target": [1,1,1,1]}\n')
    assert main(base) == 2
    assert "a.jsonl:1: proposals" in capsys.readouterr().err
    assert torch.get_default_dtype() == torch.float32


def test_refer_sweep_and_report(tiny_clip: tuple[Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    config, checkpoint = tiny_clip
    _scene(tmp_path / "images")
    anns = tmp_path / "a.jsonl"
    anns.write_text("".join(json.dumps({"image": "scene.png", "expression": e,
                                        "proposals": [[5, 5, 30, 30], [50, 20, 40, 40]],
                                        "target": t}) + "\n"
                            for e, t in (("a dog", [5, 5, 30, 30]), ("a cat", [50, 20, 40, 40]))))
    spec = tmp_path / "markers.yaml"
    spec.write_text(f"name: m\nannotations: {anns}\nimages: {tmp_path / 'images'}\n"
                    f"clip: {{model: {config}, pretrained: {checkpoint}, device: cpu}}\n"
                    "grid: {marker: [circle, crop], color: [red, green]}\n")
    out = tmp_path / "out"
    args = ["refer-sweep", str(spec), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["setting"]["marker"], r["setting"]["color"]) for r in rows] == [
        ("circle", "red"), ("circle", "green"), ("crop", "red"), ("crop", "green")]
    assert main(args) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    assert "**(best)**" in (out / "report.md").read_text()
    assert (out / "markers_bars.png").read_bytes().startswith(b"\x89PNG")
    spec.write_text(spec.read_text().replace("grid:", "grdi:"))
    capsys.readouterr()
    assert main(args) == 2 and "grdi: unknown key" in capsys.readouterr().err
