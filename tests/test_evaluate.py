from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_image_folder, write_classes_and_store
from descriptor_gen.cli import main
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.score.features import encode_texts, load_clip
from descriptor_gen.score.scoring import TextForms, make_recipe
from descriptor_gen.paths import CachePaths
from descriptor_gen.describe.store import DescriptorRecord, write_store

CLASSES = ["tench", "goldfish", "missile", "missile"]
DESCRIPTORS = {
    0: ["olive-green body", "a thick tail", "small red eyes"],
    1: ["bright orange scales", "long flowing fins"],
    2: ["a long, cylindrical body", "tail fins", "a pointed nose"],
    3: ["an object in motion", "a pointed end"],
}
PROMPTS = CachePaths.resolve().prompts_dir
DCLIP = make_recipe(TextForms.load(PROMPTS), "dclip")


def menon_sentence(class_name: str, descriptor: str) -> str:
    """The oracle, written out: Menon & Vondrick's "{c}, which (is/has/-) {d}"."""
    if descriptor.startswith(("a", "an", "used")):
        return f"{class_name}, which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"{class_name}, which {descriptor}"
    return f"{class_name}, which has {descriptor}"


@pytest.fixture
def setup(tmp_path: Path, tiny_clip: tuple[Path, Path]) -> dict:
    images = make_image_folder(tmp_path / "images", {"tench": 3, "goldfish": 2, "2": 2, "3": 1})
    classes, store = write_classes_and_store(tmp_path, CLASSES, DESCRIPTORS)
    config, checkpoint = tiny_clip
    return {"images": images, "classes": classes, "store": store, "config": config,
            "checkpoint": checkpoint, "cache": tmp_path / "cache"}


def _cfg(setup: dict, **kw) -> EvalConfig:
    base = {"dataset": str(setup["images"]), "descriptors": setup["store"],
            "model": str(setup["config"]), "pretrained": str(setup["checkpoint"]),
            "device": "cpu", "workers": 0, "batch_size": 3}
    return EvalConfig(**{**base, **kw})


def test_scores_equal_direct_per_descriptor_computation(setup: dict, tmp_path: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    result = evaluate(_cfg(setup, explain=2), CLASSES, setup["cache"], PROMPTS, predictions=preds)
    clip = load_clip(str(setup["config"]), str(setup["checkpoint"]), "cpu")
    from descriptor_gen.score.features import encode_images
    from descriptor_gen.data.datasets import load_image_folder

    data = load_image_folder(setup["images"], CLASSES)
    images = encode_images(clip, data.paths, batch_size=1, workers=0).features.astype(np.float32)
    direct = np.zeros((len(data.paths), len(CLASSES)))
    for c, descs in DESCRIPTORS.items():
        for d in descs:
            text = encode_texts(clip, [menon_sentence(CLASSES[c], d)])[0]
            direct[:, c] += images @ text / len(descs)
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["path"] for r in rows] == data.paths
    assert [r["pred"] for r in rows] == direct.argmax(axis=1).tolist()
    top1 = float(np.mean(direct.argmax(axis=1) == np.array(data.labels)))
    assert result.metrics["top1"] == pytest.approx(top1)
    for row, image in zip(rows, images):
        for item in row["explain_pred"]:
            c = row["pred"]
            text = encode_texts(clip, [menon_sentence(CLASSES[c], item["descriptor"])])[0]
            assert item["similarity"] == pytest.approx(float(image @ text), abs=1e-5)
        assert len(row["explain_pred"]) == 2 and len(row["top5"]) == 4
        assert ("explain_label" in row) == (row["pred"] != row["label"])


def test_score_matrix_matches_to_1e5(setup: dict) -> None:
    from descriptor_gen.score.methods import class_texts
    from descriptor_gen.score.scoring import class_vectors, scores

    clip = load_clip(str(setup["config"]), str(setup["checkpoint"]), "cpu")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 32)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    ct, _ = class_texts("descriptors", CLASSES, DESCRIPTORS, [], DCLIP)
    flat = encode_texts(clip, ct.flat())
    fast = scores(images, class_vectors(flat, ct))
    for c, descs in DESCRIPTORS.items():
        sims = [images @ encode_texts(clip, [menon_sentence(CLASSES[c], d)])[0] for d in descs]
        np.testing.assert_allclose(fast[:, c], np.mean(sims, axis=0), atol=1e-5)


def test_second_eval_with_other_descriptors_encodes_no_image(setup: dict, tmp_path: Path) -> None:
    first = evaluate(_cfg(setup), CLASSES, setup["cache"], PROMPTS)
    other = tmp_path / "other.jsonl"
    write_store(other, [DescriptorRecord(class_index=i, class_name=c, descriptors=["a shiny surface"],
                                         backend="test") for i, c in enumerate(CLASSES)])
    second = evaluate(_cfg(setup, descriptors=other), CLASSES, setup["cache"], PROMPTS)
    again = evaluate(_cfg(setup), CLASSES, setup["cache"], PROMPTS)
    assert first.images_encoded == 8 and second.images_encoded == 0 and again.images_encoded == 0
    assert again.texts_encoded == 0
    assert again.metrics == first.metrics
    uncached = evaluate(_cfg(setup), CLASSES, setup["cache"].with_name("fresh"), PROMPTS)
    assert uncached.metrics == pytest.approx(first.metrics)


def _direct_scores(setup: dict, method: str, classname_text: str = "a photo of a {}.") -> np.ndarray:
    """Scores computed the long way, one text at a time, from the formulas in the README."""
    from descriptor_gen.data.datasets import load_image_folder
    from descriptor_gen.score.features import encode_images

    clip = load_clip(str(setup["config"]), str(setup["checkpoint"]), "cpu")
    data = load_image_folder(setup["images"], CLASSES)
    images = encode_images(clip, data.paths, batch_size=1, workers=0).features.astype(np.float32)
    templates = (PROMPTS / "templates" / "imagenet80.txt").read_text().strip().split("\n")
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."
    out = np.zeros((len(images), len(CLASSES)))
    for c, name in enumerate(CLASSES):
        template_feats = encode_texts(clip, [t.format(name) for t in templates])
        template_vec = template_feats.mean(axis=0)
        s_templates = images @ (template_vec / np.linalg.norm(template_vec))
        s_desc = np.mean([images @ encode_texts(clip, [menon_sentence(name, d)])[0]
                          for d in DESCRIPTORS[c]], axis=0)
        s_name = images @ encode_texts(clip, [classname_text.format(name)])[0]
        out[:, c] = {"classname": s_name, "templates": s_templates,
                     "descriptors+templates": 0.5 * s_desc + 0.5 * s_templates}[method]
    return out


@pytest.mark.parametrize("method", ["classname", "templates", "descriptors+templates"])
def test_baselines_equal_their_formulas(setup: dict, tmp_path: Path, method: str) -> None:
    preds = tmp_path / "p.jsonl"
    result = evaluate(_cfg(setup, method=method), CLASSES, setup["cache"], PROMPTS, predictions=preds)
    direct = _direct_scores(setup, method)
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["pred"] for r in rows] == direct.argmax(axis=1).tolist()
    labels = np.array([r["label"] for r in rows])
    assert result.metrics["top1"] == pytest.approx(float(np.mean(direct.argmax(axis=1) == labels)))
    assert result.text.classname_text == "a photo of a {c}."
    from descriptor_gen.score.scoring import rescaled_entropy

    assert result.metrics["mean_entropy"] == pytest.approx(float(rescaled_entropy(direct).mean()),
                                                           abs=1e-4)


def test_classname_form_is_selectable_and_named(setup: dict) -> None:
    result = evaluate(_cfg(setup, method="classname", classname_template="bare"), CLASSES,
                      setup["cache"], PROMPTS)
    direct = _direct_scores(setup, "classname", "{}")
    from descriptor_gen.data.datasets import load_image_folder

    labels = np.array(load_image_folder(setup["images"], CLASSES).labels)
    assert result.metrics["top1"] == pytest.approx(float(np.mean(direct.argmax(axis=1) == labels)))
    assert (result.text.classname_template, result.text.classname_text) == ("bare", "{c}")


def test_top5_is_null_with_four_classes(setup: dict) -> None:
    assert evaluate(_cfg(setup), CLASSES, setup["cache"], PROMPTS).metrics["top5"] is None


def test_cupl_store_is_scored_as_cupl_scores_it(setup: dict, tmp_path: Path) -> None:
    """Sentences as written, a repeated sentence counted twice, the mean renormalised."""
    from descriptor_gen.data.datasets import load_image_folder
    from descriptor_gen.score.features import encode_images

    sentences = {0: ["A tench is green.", "A tench is green.", "Tench have red eyes."],
                 1: ["A goldfish is orange."], 2: ["A missile is long."], 3: ["A missile flies."]}
    store = tmp_path / "cupl.jsonl"
    write_store(store, [DescriptorRecord(class_index=i, class_name=CLASSES[i], descriptors=d,
                                         backend="import", params={"format": "cupl"})
                        for i, d in sentences.items()])
    preds = tmp_path / "p.jsonl"
    result = evaluate(_cfg(setup, descriptors=store), CLASSES, setup["cache"], PROMPTS,
                      predictions=preds)
    assert (result.text.descriptor_template, result.text.pooling) == ("sentence", "renormalised")
    clip = load_clip(str(setup["config"]), str(setup["checkpoint"]), "cpu")
    data = load_image_folder(setup["images"], CLASSES)
    images = encode_images(clip, data.paths, batch_size=1, workers=0).features.astype(np.float32)
    direct = np.zeros((len(images), len(CLASSES)))
    for c, texts in sentences.items():
        mean = encode_texts(clip, texts).mean(axis=0)
        direct[:, c] = images @ (mean / np.linalg.norm(mean))
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["pred"] for r in rows] == direct.argmax(axis=1).tolist()
    plain = evaluate(_cfg(setup, descriptors=store, pooling="mean", descriptor_template="dclip"),
                     CLASSES, setup["cache"], PROMPTS)
    assert (plain.text.descriptor_text, plain.text.pooling) == ("{c}, {which} {d}", "mean")


def test_corrupt_image_is_reported_and_counted(setup: dict) -> None:
    (setup["images"] / "tench" / "broken.png").write_bytes(b"not a png at all")
    messages: list[str] = []
    result = evaluate(_cfg(setup), CLASSES, setup["cache"], PROMPTS, log=messages.append)
    assert result.unreadable_images == [str(setup["images"] / "tench" / "broken.png")]
    assert result.metrics["n_images"] == 8
    assert any("unreadable image" in m and "broken.png" in m for m in messages)


@pytest.mark.parametrize(("method", "options"), [("descriptors", {}),
                                               ("autoclip", {"base": "descriptors"})])
def test_scores_in_blocks_of_a_few_images_give_the_same_result(
        setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str,
        options: dict) -> None:
    """An evaluation scores a block of images at a time (`score/blocks.py`); blocks of three
    images, an unreadable one among them, give the metrics, per-class recall, predictions
    and explanations of one block, for the pooled mean and for a method's own scores."""
    from descriptor_gen.score import blocks

    (setup["images"] / "goldfish" / "broken.png").write_bytes(b"not a png at all")
    monkeypatch.setattr(blocks, "PARALLEL_CELLS", 1)  # blocks of SCORE_CELLS on any machine
    runs = []
    for cells, align in ((blocks.SCORE_CELLS, blocks.ALIGN_ROWS), (3 * len(CLASSES), 1)):
        monkeypatch.setattr(blocks, "SCORE_CELLS", cells)
        monkeypatch.setattr(blocks, "ALIGN_ROWS", align)
        preds = tmp_path / f"p{align}.jsonl"
        result = evaluate(_cfg(setup, method=method, options=options, explain=2), CLASSES,
                          setup["cache"], PROMPTS, predictions=preds)
        runs.append((result, [json.loads(line) for line in preds.read_text().splitlines()]))
    (one, one_rows), (many, many_rows) = runs
    assert blocks.block_rows(len(CLASSES)) == 3 and len(many_rows) == 8
    assert many.metrics == pytest.approx(one.metrics, abs=1e-6)
    assert many.per_class_recall == one.per_class_recall
    for a, b in zip(one_rows, many_rows):
        assert {k: v for k, v in a.items() if not k.startswith(("score_", "explain_"))} == \
            {k: v for k, v in b.items() if not k.startswith(("score_", "explain_"))}
        assert [k for k in a if k.startswith("score_")] == [k for k in b if k.startswith("score_")]
        for key in (k for k in a if k.startswith("score_")):
            assert b[key] == pytest.approx(a[key], abs=2e-6)
            assert [e["descriptor"] for e in b[key.replace("score", "explain")]] == \
                [e["descriptor"] for e in a[key.replace("score", "explain")]]


def test_an_interrupted_predictions_file_leaves_the_one_it_found(
        setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The predictions file is written whole or not at all: Ctrl-C in its fourth line keeps
    the last run's file as it was, and no temp file beside it."""
    import descriptor_gen.score.evaluate as evaluate_module

    preds = tmp_path / "out" / "preds.jsonl"
    evaluate(_cfg(setup, explain=1), CLASSES, setup["cache"], PROMPTS, predictions=preds)
    before = preds.read_text()
    written = []
    real = evaluate_module._explain_line

    def interrupted(*args: object) -> None:
        written.append(1)
        if len(written) == 4:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(evaluate_module, "_explain_line", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(_cfg(setup, explain=2), CLASSES, setup["cache"], PROMPTS, predictions=preds)
    assert preds.read_text() == before and len(before.splitlines()) == 8
    assert [f.name for f in preds.parent.iterdir()] == ["preds.jsonl"]


def test_unknown_label_is_an_error(setup: dict) -> None:
    make_image_folder(setup["images"], {"carp": 1})
    with pytest.raises(DescgenError, match="folder 'carp'.*not in the class list"):
        evaluate(_cfg(setup), CLASSES, setup["cache"], PROMPTS)


def test_ambiguous_duplicate_name_needs_index(setup: dict) -> None:
    make_image_folder(setup["images"], {"missile": 1})
    with pytest.raises(DescgenError, match=r"names classes \[2, 3\]; use the index"):
        evaluate(_cfg(setup), CLASSES, setup["cache"], PROMPTS)


def test_csv_manifest_and_fallback(setup: dict, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nimages/tench/000.png,tench\nimages/goldfish/000.png,1\n")
    partial = tmp_path / "partial.jsonl"
    write_store(partial, [DescriptorRecord(class_index=0, class_name="tench", descriptors=["fins"],
                                           backend="t"),
                          DescriptorRecord(class_index=1, class_name="goldfish", descriptors=[],
                                           backend="t", error="none")])
    messages: list[str] = []
    result = evaluate(_cfg(setup, dataset=str(manifest), descriptors=partial), CLASSES,
                      setup["cache"], PROMPTS, log=messages.append)
    assert result.metrics["n_images"] == 2
    assert result.fallback_classes == ["goldfish", "missile", "missile"]
    assert any("no descriptors" in m and "1 goldfish" in m and "a photo of a {c}." in m
               for m in messages)
    with pytest.raises(DescgenError, match="--on-empty error"):
        evaluate(_cfg(setup, dataset=str(manifest), descriptors=partial, on_empty="error"), CLASSES,
                 setup["cache"], PROMPTS)
    messages.clear()
    evaluate(_cfg(setup, dataset=str(manifest), descriptors=partial, on_empty="blank"), CLASSES,
             setup["cache"], PROMPTS, log=messages.append)
    assert any("a blank descriptor ({c}, which has , as DCLIP does)" in m for m in messages)
    bad = tmp_path / "bad.csv"
    bad.write_text("images/tench/000.png,perch\n")
    with pytest.raises(DescgenError, match="bad.csv:1: label 'perch' is not in the class list"):
        evaluate(_cfg(setup, dataset=str(bad)), CLASSES, setup["cache"], PROMPTS)


def _cli_args(setup: dict, *extra: str) -> list[str]:
    """`descgen eval` on the test images with the tiny CLIP, then `extra`, the cache last."""
    return ["eval", "--dataset", str(setup["images"]), "--classes", str(setup["classes"]),
            "--descriptors", str(setup["store"]), "--model", str(setup["config"]),
            "--pretrained", str(setup["checkpoint"]), "--device", "cpu", "--workers", "0",
            *extra, "--cache-dir", str(setup["cache"])]


def test_cli_eval_end_to_end(setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    preds = tmp_path / "preds.jsonl"
    args = _cli_args(setup, "--out", str(out), "--predictions", str(preds), "--explain", "1")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("descriptors: top-1 ") and "top-5 n/a (< 5 classes)" in printed
    assert printed.rstrip().endswith(f"result: {out}")
    result = json.loads(out.read_text())
    # CLIP_benchmark's fields first, in its names; descgen's provenance beside them
    assert list(result)[:6] == ["dataset", "model", "pretrained", "task", "metrics", "language"]
    assert result["task"] == "zeroshot_classification" and result["language"] == "en"
    assert result["model"] == str(setup["config"]) and result["dataset"] == str(setup["images"])
    assert list(result["metrics"])[:3] == ["acc1", "acc5", "mean_per_class_recall"]
    assert result["metrics"]["acc5"] is None
    assert result["text"] == {"descriptor_template": "dclip", "descriptor_text": "{c}, {which} {d}",
                              "classname_template": "clip", "classname_text": "a photo of a {c}.",
                              "pooling": "mean", "on_empty": "classname", "concept": None}
    assert set(result["metrics"]) == {"acc1", "acc5", "mean_per_class_recall", "n_images", "mean_entropy"}
    assert result["counts"]["descriptors_per_class"] == {"mean": 2.5, "min": 2, "max": 3}
    assert len(result["descriptor_file_sha256"]) == 64
    assert len(preds.read_text().splitlines()) == 8
    code = main([a if a != str(setup["checkpoint"]) else "/no/such.pt" for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no such checkpoint file" in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--precision", "fp16"], "fp16 needs a GPU"), (["--method", "best"], "--method"),
     (["--descriptor-template", "{c} only"], "needs a {d} field"),
     (["--descriptor-template", "{c}, which {x}"], "field {x} is not allowed"),
     (["--descriptor-template", "{c} {0}"], "field {0} is not allowed"),
     (["--descriptor-template", "{c}, {d"], "expected '}'"),
     (["--descriptor-template", "dclip-imagenett"], "no text form named 'dclip-imagenett'"),
     (["--classname-template", "a {c} {d}"], "field {d} is not allowed"),
     (["--pooling", "max"], "--pooling"), (["--on-empty", "skip"], "--on-empty")],
)
def test_cli_eval_bad_input(setup: dict, capsys: pytest.CaptureFixture[str], extra: list[str],
                            needle: str) -> None:
    args = ["eval", "--dataset", str(setup["images"]), "--classes", str(setup["classes"]),
            "--descriptors", str(setup["store"]), "--model", str(setup["config"]),
            "--pretrained", "none", "--device", "cpu", "--cache-dir", str(setup["cache"]), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_random_weights_and_unknown_model(setup: dict) -> None:
    clip = load_clip(str(setup["config"]), "none", "cpu")
    assert clip.device == "cpu"
    with pytest.raises(DescgenError, match="unknown open_clip model"):
        load_clip("ViT-Nope", "none", "cpu")
    assert torch.get_default_dtype() == torch.float32


def test_cli_eval_draws_dclips_explanation_figure(setup: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`--explain-figure`: per image, the prediction's panel and the true class's (the runner-up's
    when right), each its class score then its K descriptors in 100 x cosine, read back from the
    drawn axes; the predictions carry names and scores; a bad figure path fails before the work."""
    from descriptor_gen.experiments.explanations import choose, explanation_figure, read_predictions

    preds, figure = tmp_path / "preds.jsonl", tmp_path / "why.png"
    args = _cli_args(setup, "--predictions", str(preds), "--explain-figure", str(figure),
                     "--explain-images", "4")
    assert main(args) == 0
    assert f"explanations of 4 images: {figure}" in capsys.readouterr().out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    for row in rows:
        assert row["pred_name"] == CLASSES[row["pred"]] and row["label_name"] == CLASSES[row["label"]]
        other = "label" if row["pred"] != row["label"] else "runner_up"
        assert len(row["explain_pred"]) == min(5, len(DESCRIPTORS[row["pred"]]))
        assert f"explain_{other}" in row and f"score_{other}" in row
        # the class score is the mean over all of the class's descriptors (s(c,x))
        assert row["score_pred"] >= min(b["similarity"] for b in row["explain_pred"]) - 1e-6
    lines = read_predictions(preds)
    chosen = choose(lines, 4)
    assert len(chosen) == 4 and [c.path for c in chosen] == [r.path for r in lines if r in chosen]
    right = sum(c.pred == c.label for c in chosen)
    wrong = sum(c.pred != c.label for c in lines)
    assert right == min(sum(c.pred == c.label for c in lines), max(4 - wrong, 2))
    fig = explanation_figure(chosen, "caption")
    axes = np.array(fig.axes).reshape(4, 3)
    for line, (image_ax, first, second) in zip(chosen, axes):
        assert len(image_ax.images) == 1
        assert first.get_title(loc="left").startswith(f"prediction: {line.pred_name} (")
        want = "true class" if line.pred != line.label else "runner-up"
        assert second.get_title(loc="left").startswith(f"{want}: ")
        for ax, (_, _, score, because) in zip((first, second), line.panels()):
            assert [t.get_text() for t in ax.get_yticklabels()] == \
                ["class score", *[b.descriptor for b in because]]
            ends = [p.get_x() + p.get_width() for p in ax.patches]
            assert ends == pytest.approx([100 * score, *[100 * b.similarity for b in because]],
                                         abs=1e-4)
        assert first.get_xlim() == second.get_xlim()
    code = main([*args[:-4], "--explain-figure", str(tmp_path / "why.jpg"),
                 "--cache-dir", str(setup["cache"])])
    assert code == 2 and "one of .png, .pdf, .svg" in capsys.readouterr().err
    no_preds = [a for a in args if a not in ("--predictions", str(preds))]
    assert main(no_preds) == 2 and "add --predictions" in capsys.readouterr().err


def test_a_model_whose_weights_are_loaded_draws_no_random_numbers(
        tiny_clip: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Built for a checkpoint, the model skips torch.nn.init (the weights replace it all) and
    ends up exactly as the ordinary build does; with random weights it draws as before."""
    import contextlib

    from torch.nn import init
    from torch.nn.modules import activation

    from descriptor_gen.score import features

    config, checkpoint = tiny_clip
    drawn: list[str] = []
    for name in ("normal_", "kaiming_uniform_"):
        original = getattr(init, name)
        monkeypatch.setattr(init, name, lambda t, *a, _o=original, _n=name, **k: (
            drawn.append(_n), _o(t, *a, **k))[1])
    fast = load_clip(str(config), str(checkpoint), "cpu")
    assert drawn == []  # nothing drawn for weights that are loaded
    assert init.xavier_uniform_ is activation.xavier_uniform_  # what was patched is put back
    monkeypatch.setattr(features, "weights_to_come", contextlib.nullcontext)
    plain = load_clip(str(config), str(checkpoint), "cpu")
    assert drawn  # the ordinary build draws
    a, b = fast.model.state_dict(), plain.model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert fast.identity == plain.identity
    monkeypatch.undo()
    random = load_clip(str(config), "none", "cpu")
    again = load_clip(str(config), "none", "cpu")
    assert all(torch.equal(x, y) for x, y in zip(random.model.state_dict().values(),
                                                  again.model.state_dict().values()))
    assert not any(torch.isnan(t).any() for t in random.model.state_dict().values()
                   if t.is_floating_point())


class _Planted:
    """Pickled into a checkpoint: unpickling it (loading the checkpoint as more than tensors)
    would create the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_is_loaded_as_tensors_only(tiny_clip: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    """A checkpoint that carries pickled code is refused, not run, whatever the open_clip."""
    config, checkpoint = tiny_clip
    marker = tmp_path / "ran"
    planted = tmp_path / "planted.pt"
    torch.save({"state_dict": torch.load(checkpoint, weights_only=True),
                "extra": _Planted(marker)}, planted)
    with pytest.raises(DescgenError, match="not a checkpoint open_clip can load"):
        load_clip(str(config), str(planted), "cpu")
    assert not marker.exists()
