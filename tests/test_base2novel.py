"""Base-to-novel generalisation (issue 22): CoCoOp's class halves on `learn` and `eval`, runs
that score classes they were not trained on, and the refusals around them."""

from __future__ import annotations

import json
import math
import random
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_image_folder
from descriptor_gen.cli import main
from descriptor_gen.data.datasets import load_image_folder
from descriptor_gen.data.subsample import class_range, subsample_images
from descriptor_gen.errors import DescgenError
from descriptor_gen.learn.run import LearnConfig, LearnedScorer, learn, load_tensors
from descriptor_gen.learn.shots import few_shot
from descriptor_gen.paths import CachePaths
from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.score.features import encode_images, load_clip

PROMPTS = CachePaths.resolve().prompts_dir
NAMES = ["tench", "goldfish", "shark", "eel", "ray"]  # 5 classes: base 3 (ceil), new 2

Datum = namedtuple("Datum", "impath label classname")


def reference_subsample(*args, subsample="all"):  # noqa: ANN001, ANN002, ANN201
    """CoCoOp's `subsample_classes` (KaiyangZhou/CoOp datasets/oxford_pets.py), verbatim but
    for the print and dassl's Datum."""
    assert subsample in ["all", "base", "new"]
    if subsample == "all":
        return args
    dataset = args[0]
    labels = set()
    for item in dataset:
        labels.add(item.label)
    labels = list(labels)
    labels.sort()
    n = len(labels)
    m = math.ceil(n / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {y: y_new for y_new, y in enumerate(selected)}
    output = []
    for dataset in args:
        dataset_new = []
        for item in dataset:
            if item.label not in selected:
                continue
            dataset_new.append(Datum(item.impath, relabeler[item.label], item.classname))
        output.append(dataset_new)
    return output


@pytest.mark.parametrize("n_classes", [2, 3, 5, 10, 47, 101])
@pytest.mark.parametrize("which", ["base", "new", "all"])
def test_halves_are_cocoops(n_classes: int, which: str) -> None:
    rng = random.Random(n_classes)
    labels = [rng.randrange(n_classes) for _ in range(6 * n_classes)] + list(range(n_classes))
    names = [f"class {i}" for i in range(n_classes)]
    data = [Datum(f"img{i}.jpg", y, names[y]) for i, y in enumerate(labels)]
    (expected,) = reference_subsample(data, subsample=which)
    from descriptor_gen.data.images import LabelledImages

    ours = subsample_images(LabelledImages("x", [d.impath for d in data], labels, names), names,
                            which)
    assert ours.paths == [d.impath for d in expected]
    assert ours.labels == [d.label for d in expected]
    assert ours.classes == [names[i] for i in class_range(n_classes, which)]
    assert [ours.classes[d.label] for d in expected] == [d.classname for d in expected]


def test_a_split_of_one_class_or_an_unknown_half_is_one_line() -> None:
    with pytest.raises(DescgenError, match="at least 2 classes"):
        class_range(1, "new")
    with pytest.raises(DescgenError, match="choose all, base, new"):
        class_range(4, "novel")


@pytest.fixture
def world(tmp_path: Path, tiny_clip: tuple[Path, Path]) -> dict:
    config, checkpoint = tiny_clip
    train = make_image_folder(tmp_path / "train", {n: 4 for n in NAMES}, seed=1)
    test = make_image_folder(tmp_path / "test", {n: 2 for n in NAMES}, seed=0)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(NAMES) + "\n")
    store = tmp_path / "d.jsonl"
    store.write_text("".join(json.dumps({"class_index": i, "class_name": n, "descriptors":
                                         [f"the fins of a {n}", "scales"], "backend": "t"}) + "\n"
                             for i, n in enumerate(NAMES)))
    return {"config": config, "checkpoint": checkpoint, "train": train, "test": test,
            "classes": classes, "store": store, "cache": tmp_path / "cache", "tmp": tmp_path,
            "clip": load_clip(str(config), str(checkpoint), "cpu")}


def test_base_shots_are_the_all_class_draws_first_half(world: dict) -> None:
    every, _ = few_shot(str(world["train"]), NAMES, 2, 3, world["cache"], None)
    base, data = few_shot(str(world["train"]), NAMES, 2, 3, world["cache"], None, "base")
    new, _ = few_shot(str(world["train"]), NAMES, 2, 3, world["cache"], None, "new")
    assert base.classes == NAMES[:3] and new.classes == NAMES[3:]
    assert [s.name for s in base.items] == [s.name for s in every.items if s.label < 3]
    assert [(s.name, s.label + 3) for s in new.items] == [(s.name, s.label) for s in every.items
                                                          if s.label >= 3]
    assert data.classes == NAMES[:3] and data.labels == [s.label for s in base.items]
    assert base.identity() != every.identity() != new.identity()
    assert "subsample" not in json.loads(every.model_dump_json(exclude={"subsample", "all_classes"}))


def _learn(world: dict, method: str, out: Path, **options: object) -> object:
    cfg = LearnConfig(method=method, dataset=str(world["train"]),
                      options={"shots": 2, **options}, classes=NAMES, descriptors=world["store"],
                      model=str(world["config"]), pretrained=str(world["checkpoint"]),
                      device="cpu", workers=0, subsample="base")
    return learn(cfg, out, world["cache"], PROMPTS, progress=False, clip=world["clip"],
                 log=lambda m: None)


def _eval(world: dict, which: str, run: Path | None = None, **extra: object) -> object:
    cfg = EvalConfig(dataset=str(world["test"]), model=str(world["config"]),
                     pretrained=str(world["checkpoint"]), device="cpu", workers=0, batch_size=4,
                     subsample=which, learned=run, **extra)
    return evaluate(cfg, NAMES, world["cache"], PROMPTS, clip=world["clip"], log=lambda m: None,
                    scorer=LearnedScorer(run) if run is not None else None)


def test_a_base_run_scores_new_classes_with_its_context(world: dict) -> None:
    """CoOp trained on the base half; on the new half its saved context goes into the new
    class names' prompts (the module rebuilt for them), scored as CoOp scores."""
    run = world["tmp"] / "coop"
    info = _learn(world, "coop", run, epochs=2, lr=0.5, n_ctx=2)
    assert info.classes == NAMES[:3] and info.subsample == "base"
    base = _eval(world, "base", run)
    new = _eval(world, "new", run)
    assert base.metrics["n_images"] == 6 and new.metrics["n_images"] == 4
    assert (base.subsample, new.subsample) == ("base", "new")
    ctx = load_tensors(run / "learned.safetensors")["prompt.ctx"]
    model, tokens = world["clip"].model, world["clip"].tokenizer([f"X X {n}." for n in NAMES[3:]])
    with torch.no_grad():
        embedded = model.token_embedding(tokens).float()
        embedded[:, 1:3] = ctx
        x = model.ln_final(model.transformer(embedded + model.positional_embedding,
                                             attn_mask=model.attn_mask))
        text = x[torch.arange(2), tokens.argmax(-1)] @ model.text_projection
        text = (text / text.norm(dim=-1, keepdim=True)).numpy()
    data = load_image_folder(world["test"], NAMES)
    feats = np.asarray(encode_images(world["clip"], data.paths, 4, 0).features, np.float32)[6:]
    expected = (feats @ text.T).argmax(1)
    assert new.metrics["top1"] == pytest.approx(float((expected == np.array([0, 0, 1, 1])).mean()))


def test_halves_reuse_the_full_datas_features_and_the_full_store(world: dict) -> None:
    every = _eval(world, "all", descriptors=world["store"])
    base = _eval(world, "base", descriptors=world["store"])
    new = _eval(world, "new", descriptors=world["store"])
    assert every.images_encoded == 10 and base.images_encoded == 0 and new.images_encoded == 0
    assert (base.metrics["n_images"], new.metrics["n_images"]) == (6, 4)
    assert base.counts["classes"] == 3 and new.counts["classes"] == 2


@pytest.mark.parametrize(("method", "options", "transfers"), [
    ("cocoop", {"epochs": 1, "lr": 0.1}, True),
    ("kgcoop", {"epochs": 1, "lr": 0.1}, True),
    ("padding", {"epochs": 1, "lr": 1.0, "pad": 4, "warmup": 0}, True),
    ("coop", {"epochs": 1, "csc": True, "n_ctx": 2}, False),
    ("tip-adapter", {}, False),
])
def test_what_a_method_learned_decides_whether_it_scores_new_classes(
        world: dict, method: str, options: dict, transfers: bool) -> None:
    run = world["tmp"] / method
    _learn(world, method, run, **options)
    if transfers:
        result = _eval(world, "new", run)
        assert result.metrics["n_images"] == 4
    else:
        with pytest.raises(DescgenError, match="cannot score other classes"):
            _eval(world, "new", run)


def test_the_flags_on_the_command_line(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    run = world["tmp"] / "cli-run"
    common = ["--model", str(world["config"]), "--pretrained", str(world["checkpoint"]),
              "--device", "cpu", "--workers", "0", "--cache-dir", str(world["cache"])]
    code = main(["learn", "coop", "--dataset", str(world["train"]), "--classes",
                 str(world["classes"]), "--out", str(run), "--shots", "2", "--epochs", "1",
                 "--subsample", "base", "--no-progress", *common])
    assert code == 0, capsys.readouterr().err
    assert json.loads((run / "split.json").read_text())["subsample"] == "base"
    capsys.readouterr()
    code = main(["eval", "--dataset", str(world["test"]), "--classes", str(world["classes"]),
                 "--learned", str(run), "--subsample", "new", *common])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "images 4" in out and "(new classes: 2)" in out
    code = main(["eval", "--dataset", str(world["test"]), "--classes", str(world["classes"]),
                 "--subsample", "novel", *common])
    assert code == 2


def test_one_class_data_cannot_be_halved(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    one = make_image_folder(world["tmp"] / "one", {"tench": 2})
    names = world["tmp"] / "one.txt"
    names.write_text("tench\n")
    code = main(["eval", "--dataset", str(one), "--classes", str(names), "--subsample", "new",
                 "--method", "classname",
                 "--model", str(world["config"]), "--pretrained", str(world["checkpoint"]),
                 "--device", "cpu", "--workers", "0", "--cache-dir", str(world["cache"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "at least 2 classes" in err[0]


# -- the protocol as an experiment -----------------------------------------------------------


def _spec(world: dict, **extra: object) -> object:
    from descriptor_gen.experiments.base2novel import B2NSpec

    return B2NSpec.model_validate({
        "name": "b2n-test",
        "datasets": [{"name": "fish", "train": str(world["train"]), "test": str(world["test"]),
                      "classes": str(world["classes"]), "descriptors": str(world["store"])}],
        "clip": {"model": str(world["config"]), "pretrained": str(world["checkpoint"]),
                 "device": "cpu", "workers": 0, "batch_size": 4},
        "shots": 2, "seeds": [1, 2],
        "columns": {"clip": {"method": "classname"}, "descriptors": {"method": "descriptors"},
                    "coop": {"learned": "coop", "options": {"epochs": 1, "n_ctx": 2}},
                    "coop+descriptors": {"learned": "kgcoop", "beside": "coop",
                                         "options": {"epochs": 1, "guide": "descriptors"}},
                    "maple": {"learned": "maple", "options": {"epochs": 1, "depth": 2}}},
        **extra})


def test_the_protocol_runs_resumes_and_reports(world: dict) -> None:
    from descriptor_gen.experiments.base2novel import harmonic, run_base2novel, write_base2novel_report

    out = world["tmp"] / "b2n"
    lines: list[str] = []
    rows = run_base2novel(_spec(world), out, world["cache"], PROMPTS, log=lines.append)
    # 2 zero-shot columns x 2 halves + 3 learned columns x 2 seeds x 2 halves
    assert len(rows) == 4 + 12
    assert {(r["column"], r["half"]) for r in rows if r["seed"] is None} == {
        (c, h) for c in ("clip", "descriptors") for h in ("base", "new")}
    assert all(r["classes"] == (3 if r["half"] == "base" else 2) for r in rows)
    assert run_base2novel(_spec(world), out, world["cache"], PROMPTS, log=lines.append) == []
    report = write_base2novel_report(out, _spec(world)).read_text()
    coop = [r for r in rows if r["column"] == "coop"]
    base = 100 * np.mean([r["metrics"]["top1"] for r in coop if r["half"] == "base"])
    new = 100 * np.mean([r["metrics"]["top1"] for r in coop if r["half"] == "new"])
    line = next(x for x in report.splitlines() if x.startswith("| coop |"))
    assert f"| {harmonic(base, new):.2f} |" in line and f"{base:.2f} ±" in line
    for section in ("## fish", "## Average over datasets (1)", "82.28 | 75.14 | 78.55",
                    "## Do descriptors help on new classes?", "| coop+descriptors | coop |"):
        assert section in report, section
    # a changed store: the columns that read it run again (a new run folder), the others not
    world["store"].write_text(world["store"].read_text().replace("scales", "gills"))
    again = run_base2novel(_spec(world), out, world["cache"], PROMPTS, log=lines.append)
    assert sorted({r["column"] for r in again}) == ["coop+descriptors", "descriptors"]
    assert len(again) == 2 + 4


def test_a_spec_with_a_bad_column_is_refused_at_load(world: dict) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="n_ctx"):
        _spec(world, columns={"coop": {"learned": "coop", "options": {"n_ctx": 0}}})
    with pytest.raises(ValidationError, match="either learned"):
        _spec(world, columns={"x": {"learned": "coop", "method": "classname"}})
    with pytest.raises(ValidationError, match="no column 'coop'"):
        _spec(world, columns={"g": {"learned": "kgcoop", "beside": "coop"}})


@pytest.mark.parametrize("spec", ["data/experiments/base2novel.yaml",
                                  "data/experiments/base2novel_demo.yaml"])
def test_the_shipped_specs_load(spec: str) -> None:
    from descriptor_gen.experiments.base2novel import B2NSpec
    from descriptor_gen.experiments.specs import load_yaml_model

    loaded = load_yaml_model(Path(__file__).parent.parent / spec, B2NSpec)
    assert loaded.columns


def test_the_anchors_are_internally_consistent() -> None:
    """Each published HM is the harmonic mean of its base and new (to the table's rounding)."""
    from descriptor_gen.experiments.base2novel import ANCHORS, harmonic

    for name, (base, new, hm) in ANCHORS.items():
        assert harmonic(base, new) == pytest.approx(hm, abs=0.011), name


def test_the_command_runs_a_spec_and_prints_its_report(world: dict,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    spec = world["tmp"] / "b2n.yaml"
    spec.write_text(yaml.safe_dump(_spec(world, columns={
        "clip": {"method": "classname"},
        "coop": {"learned": "coop", "options": {"epochs": 1, "n_ctx": 2}}}).model_dump(mode="json")))
    out = world["tmp"] / "b2n-cli"
    code = main(["base2novel", str(spec), "--out", str(out), "--cache-dir", str(world["cache"])])
    printed = capsys.readouterr().out.strip()
    assert code == 0 and printed.split("\n") == [str(out / "report.md"), str(out / "results.csv")]
    assert "| coop |" in (out / "report.md").read_text()
    import csv

    table = list(csv.DictReader((out / "results.csv").open()))  # a row per dataset, column, half
    assert {(r["method"], r["setting"]) for r in table} >= {("coop", "half=base"), ("coop", "half=new")}


def test_make_runs_the_shipped_spec() -> None:
    """`make exp-base2novel` is the command on the shipped spec (what the tests above run on
    fixtures), and its demo variant the demo's runner."""
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    target = makefile[makefile.index("exp-base2novel: install"):].split("\n\n")[0]
    assert "$(DESCGEN) base2novel data/experiments/base2novel.yaml" in target
    assert "descriptor_gen.experiments.demo base2novel" in makefile
