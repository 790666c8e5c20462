"""Learned prompts and the few-shot harness (issue 14): each method trains on a tiny fixture with
the random-weights CLIP (the loss falls), a saved run reloads to the same predictions and to a
direct computation of the method's formula, Ctrl-C and --resume give the run an uninterrupted
one would, and nothing but safetensors is ever read back."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import dataset_layouts as layouts
from conftest import make_image_folder
from descriptor_gen.cli import main
from descriptor_gen.data.datasets import load_dataset, load_image_folder
from descriptor_gen.errors import DescgenError
from descriptor_gen.learn import train as train_module
from descriptor_gen.learn.learners import Learner, Padding
from descriptor_gen.learn.run import LearnConfig, learn, learned_scores, load_tensors
from descriptor_gen.learn.shots import few_shot
from descriptor_gen.score.features import clip_identity, encode_images, encode_texts, load_clip
from descriptor_gen.paths import CachePaths

PROMPTS = CachePaths.resolve().prompts_dir
NAMES = ["tench", "goldfish", "shark"]


@pytest.fixture
def world(tmp_path: Path, tiny_clip: tuple[Path, Path]) -> dict:
    config, checkpoint = tiny_clip
    train = make_image_folder(tmp_path / "train", {n: 5 for n in NAMES}, seed=1)
    test = make_image_folder(tmp_path / "test", {n: 3 for n in NAMES}, seed=0)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(NAMES) + "\n")
    store = tmp_path / "d.jsonl"
    store.write_text("".join(json.dumps({"class_index": i, "class_name": n, "descriptors":
                                         [f"the fins of a {n}", "scales"], "backend": "t"}) + "\n"
                             for i, n in enumerate(NAMES)))
    clip = load_clip(str(config), str(checkpoint), "cpu")
    return {"config": config, "checkpoint": checkpoint, "train": train, "test": test,
            "classes": classes, "store": store, "cache": tmp_path / "cache", "tmp": tmp_path,
            "clip": clip}


def _learn(world: dict, method: str, out: Path, keep: list | None = None, **options) -> object:
    cfg = LearnConfig(method=method, dataset=str(world["train"]), options={"shots": 3, **options},
                      classes=NAMES, descriptors=world["store"], model=str(world["config"]),
                      pretrained=str(world["checkpoint"]), device="cpu", workers=0)
    return learn(cfg, out, world["cache"], PROMPTS, progress=False, clip=world["clip"],
                 log=lambda m: None, on_done=(keep.append if keep is not None else None))


def _scores(world: dict, run: Path) -> np.ndarray:
    data = load_image_folder(world["test"], NAMES)
    feats = encode_images(world["clip"], data.paths, batch_size=4, workers=0).features
    score, _ = learned_scores(run, world["clip"], clip_identity(str(world["config"]),
                                                                  str(world["checkpoint"]), "fp32"),
                              NAMES, data, np.asarray(feats, np.float32), world["cache"], PROMPTS,
                              4, 0)
    return score


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("method", "options"), [
    ("coop", {"epochs": 12, "lr": 0.5, "n_ctx": 4}),
    ("coop", {"epochs": 12, "lr": 0.5, "n_ctx": 4, "csc": True, "position": "middle"}),
    ("coop", {"epochs": 12, "lr": 0.5, "ctx_init": "a photo of a", "position": "front"}),
    ("kgcoop", {"epochs": 12, "lr": 0.05}),
    ("cocoop", {"epochs": 4, "lr": 0.2}),
    ("padding", {"epochs": 12, "lr": 1.0, "pad": 4, "warmup": 0, "batch_size": 9}),
    ("tip-adapter-f", {"epochs": 12, "lr": 0.05, "views": 2}),
])
def test_each_method_trains_and_reloads_to_the_same_predictions(world: dict, method: str,
                                                                 options: dict) -> None:
    out = world["tmp"] / "run"
    kept: list[Learner] = []
    info = _learn(world, method, out, kept, **options)
    losses = _losses(out)
    assert info.finished and len(losses) == options["epochs"]
    assert losses[-1] < losses[0] - 1e-3, losses
    assert {p.name for p in out.iterdir()} >= {"run.json", "split.json", "log.jsonl",
                                               "learned.safetensors", "checkpoint.json",
                                               f"checkpoint-{options['epochs']}.safetensors"}
    trained = kept[0]
    data = load_image_folder(world["test"], NAMES)
    feats = torch.from_numpy(np.asarray(encode_images(world["clip"], data.paths, 4, 0).features,
                                        np.float32))
    with torch.no_grad():
        if isinstance(trained, Padding):
            from descriptor_gen.score.features import ImageFiles, image_size

            images = torch.stack([ImageFiles(data.paths, world["clip"].preprocess,
                                          image_size(world["clip"].preprocess))[i][0]
                                  for i in range(len(data.paths))])
            expected = trained.logits(trained.encode(images)).numpy()
        else:
            expected = trained.logits(feats).numpy()
    np.testing.assert_allclose(_scores(world, out), expected, rtol=1e-4, atol=1e-3)


def test_coop_scores_are_its_formula(world: dict) -> None:
    """The saved context in the class prompts' X positions, encoded, scaled cosines."""
    out = world["tmp"] / "coop"
    _learn(world, "coop", out, epochs=3, lr=0.5, n_ctx=2)
    ctx = load_tensors(out / "learned.safetensors")["prompt.ctx"]
    model = world["clip"].model
    tokens = world["clip"].tokenizer([f"X X {n}." for n in NAMES])
    with torch.no_grad():
        embedded = model.token_embedding(tokens).float()
        embedded[:, 1:3] = ctx
        x = embedded + model.positional_embedding
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        text = x[torch.arange(3), tokens.argmax(-1)] @ model.text_projection
        text = text / text.norm(dim=-1, keepdim=True)
    data = load_image_folder(world["test"], NAMES)
    feats = np.asarray(encode_images(world["clip"], data.paths, 4, 0).features, np.float32)
    expected = model.logit_scale.exp().item() * feats @ text.numpy().T
    np.testing.assert_allclose(_scores(world, out), expected, rtol=1e-4, atol=1e-3)


def test_tip_adapter_is_its_formula(world: dict) -> None:
    out = world["tmp"] / "tip"
    info = _learn(world, "tip-adapter", out, alpha=2.0, beta=3.0)
    assert info.epochs_done == 0 and not (out / "log.jsonl").read_text()
    split = json.loads((out / "split.json").read_text())
    shots = [s["name"] for s in split["items"]]
    keys = np.asarray(encode_images(world["clip"], shots, 4, 0).features, np.float32)
    values = np.eye(3)[[s["label"] for s in split["items"]]]
    weights = encode_texts(world["clip"], [f"a photo of a {n}." for n in NAMES])
    data = load_image_folder(world["test"], NAMES)
    feats = np.asarray(encode_images(world["clip"], data.paths, 4, 0).features, np.float32)
    expected = 100 * feats @ weights.T + 2.0 * np.exp(-(3.0 - 3.0 * feats @ keys.T)) @ values
    np.testing.assert_allclose(_scores(world, out), expected, rtol=1e-3, atol=1e-2)


def test_shots_are_drawn_reproducibly_and_checked(world: dict) -> None:
    split, data = few_shot(str(world["train"]), NAMES, 2, 7, world["cache"], None)
    again, _ = few_shot(str(world["train"]), NAMES, 2, 7, world["cache"], None)
    other, _ = few_shot(str(world["train"]), NAMES, 2, 8, world["cache"], None)
    assert split == again and split != other
    assert [s.label for s in split.items] == [0, 0, 1, 1, 2, 2] and len(data.paths) == 6
    assert all(Path(s.name).parent.name == NAMES[s.label] for s in split.items)
    with pytest.raises(DescgenError, match=r"class 0 \('tench'\) has 5 training images, fewer than --shots 6"):
        few_shot(str(world["train"]), NAMES, 6, 0, world["cache"], None)
    with pytest.raises(DescgenError, match=r"class 3 \('eel'\) has no training images"):
        few_shot(str(world["train"]), [*NAMES, "eel"], 1, 0, world["cache"], None)


def test_cards_have_their_train_splits(tmp_path: Path) -> None:
    root = tmp_path / "root"
    layouts.LAYOUTS["cub"](root)
    data = load_dataset("cub:train", None, tmp_path, root)
    assert data.labels == [0, 199] and data.spec == "cub:train"
    layouts.LAYOUTS["food101"](root)
    for c in ("apple_pie", "baby_back_ribs", "waffles"):
        layouts.image(root / "food-101" / "images" / c / "90.jpg", 3)
    data = load_dataset("food101:train", None, tmp_path, root)
    assert sorted(data.labels) == [0, 1, 2] and all("/90.jpg" in p for p in data.paths)
    with pytest.raises(DescgenError, match=r"no file .*split_zhou_EuroSAT.json.*CoOp's split file"):
        load_dataset("eurosat:train", None, tmp_path, root)
    with pytest.raises(DescgenError, match="the splits test"):
        load_dataset("cub:val", None, tmp_path, root)


def test_ctrl_c_keeps_the_last_epoch_and_resume_finishes_the_same_run(world: dict,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    whole = world["tmp"] / "whole"
    _learn(world, "coop", whole, epochs=6, lr=0.5, n_ctx=4)
    cut = world["tmp"] / "cut"
    real = train_module.Schedule.at

    def interrupted(self: train_module.Schedule, epoch: int, step: int) -> float:
        if epoch == 3:
            raise KeyboardInterrupt
        return real(self, epoch, step)

    monkeypatch.setattr(train_module.Schedule, "at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _learn(world, "coop", cut, epochs=6, lr=0.5, n_ctx=4)
    monkeypatch.setattr(train_module.Schedule, "at", real)
    assert json.loads((cut / "run.json").read_text())["epochs_done"] == 3
    assert not (cut / "learned.safetensors").exists() and len(_losses(cut)) == 3
    common = ["--model", str(world["config"]), "--pretrained", str(world["checkpoint"]),
              "--device", "cpu", "--workers", "0", "--cache-dir", str(world["cache"])]
    assert main(["eval", "--dataset", str(world["test"]), "--classes", str(world["classes"]),
                 "--learned", str(cut), *common]) == 2
    assert "training stopped after 3 of 6 epochs" in capsys.readouterr().err
    args = ["learn", "coop", "--dataset", str(world["train"]), "--classes", str(world["classes"]),
            "--shots", "3", "--epochs", "6", "--lr", "0.5", "--option", "n_ctx=4", "--out", str(cut),
            "--no-progress", *common]
    assert main(args) == 2
    assert "give --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert _losses(cut) == pytest.approx(_losses(whole))
    for name, tensor in load_tensors(whole / "learned.safetensors").items():
        assert torch.equal(tensor, load_tensors(cut / "learned.safetensors")[name])
    assert main([*args, "--resume"]) == 0  # finished: nothing to do


def test_eval_reads_nothing_but_safetensors(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out = world["tmp"] / "run"
    _learn(world, "tip-adapter", out)
    marker = world["tmp"] / "pwned"

    class Payload:
        def __reduce__(self):  # noqa: ANN204 - a hostile pickle
            import os

            return (os.system, (f"touch {marker}",))

    (out / "learned.safetensors").write_bytes(pickle.dumps(Payload()))
    args = ["eval", "--dataset", str(world["test"]), "--classes", str(world["classes"]),
            "--learned", str(out), "--model", str(world["config"]), "--pretrained",
            str(world["checkpoint"]), "--device", "cpu", "--workers", "0", "--cache-dir",
            str(world["cache"])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.split("\n")) == 1 and "not a safetensors file" in err and "never unpickled" in err
    assert not marker.exists()


def test_a_run_is_never_scored_on_its_own_training_images(world: dict,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = world["tmp"] / "run"
    _learn(world, "tip-adapter", out)
    args = ["eval", "--classes", str(world["classes"]), "--learned", str(out), "--model",
            str(world["config"]), "--pretrained", str(world["checkpoint"]), "--device", "cpu",
            "--workers", "0", "--cache-dir", str(world["cache"])]
    assert main([*args, "--dataset", str(world["train"])]) == 2
    assert "the evaluated data itself" in capsys.readouterr().err
    other = [a if a != str(world["checkpoint"]) else "none" for a in args]
    assert main([*other, "--dataset", str(world["test"])]) == 2
    assert "give the run's --model and --pretrained" in capsys.readouterr().err
    assert main([*args, "--dataset", str(world["test"]), "--pretrained", "none"]) == 2
    assert "give at most one --model and one --pretrained" in capsys.readouterr().err


def test_a_sweep_compares_learned_and_zero_shot_methods(world: dict,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from descriptor_gen.generation.devserver import DevServer

    spec = world["tmp"] / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "fewshot", "classes": str(world["classes"]), "dataset": str(world["test"]),
        "generation": {"backend": "openai", "model": "dev", "base_url": "http://127.0.0.1:9/v1"},
        "clip": {"model": str(world["config"]), "pretrained": str(world["checkpoint"]),
                 "device": "cpu", "workers": 0},
        "grid": {"per_example": 1},
        "methods": ["classname", "descriptors",
                    {"method": "coop", "shots": [1, 2], "epochs": 2, "train": str(world["train"])},
                    {"method": "tip-adapter", "shots": [1, 2], "train": str(world["train"])},
                    {"method": "kgcoop", "shots": 1, "epochs": 2, "train": str(world["train"])}]}))
    out = world["tmp"] / "results"
    with DevServer() as server:
        base = ["--set", f"generation.base_url={server.base_url}", "--cache-dir",
                str(world["cache"]), "--out", str(out)]
        assert main(["sweep", str(spec), *base, "--dry-run"]) == 0
        assert "7 cells, 0 already done" in capsys.readouterr().out
        assert main(["sweep", str(spec), *base]) == 0
        rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert sorted(r["method"] for r in rows) == sorted([
            "classname", "descriptors", "coop (epochs=2, shots=1)", "coop (epochs=2, shots=2)",
            "tip-adapter (shots=1)", "tip-adapter (shots=2)", "kgcoop (epochs=2, shots=1)"])
        by = {r["method"]: r for r in rows}
        assert by["coop (epochs=2, shots=2)"]["setting"] == {"shots": 2}
        assert by["kgcoop (epochs=2, shots=1)"]["setting"]["per_example"] == 1  # on the grid's store
        assert by["kgcoop (epochs=2, shots=1)"]["setting"]["shots"] == 1
        assert by["coop (epochs=2, shots=1)"]["identity"]["train"]["spec"] == str(world["train"])
        assert main(["sweep", str(spec), *base]) == 0
        assert len((out / "results.jsonl").read_text().splitlines()) == 7
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| 2 shots | coop (epochs=2, shots=2) |" in report
    assert (out / "fewshot_shots.png").read_bytes().startswith(b"\x89PNG")


def test_training_from_cached_features_equals_reencoding(world: dict) -> None:
    """One view, no augmentation: the cache changes the cost, not the loss curve."""
    from descriptor_gen.learn.methods import learned
    from descriptor_gen.learn.run import RunInfo, build_learner, reencoding_batches, shot_features, training_batches
    from descriptor_gen.learn.train import make_optimiser, train

    _, data = few_shot(str(world["train"]), NAMES, 4, 1, world["cache"], None)
    labels = list(data.labels)
    curves = []
    for cached in (True, False):
        options = learned("coop").parse({"shots": 4, "epochs": 4, "lr": 0.5, "n_ctx": 4, "batch_size": 5})
        info = RunInfo(method="coop", options=options.model_dump(), recipe={}, dataset="x",
                       source_identity="", split="", classes=NAMES, clip={})
        features = shot_features(world["clip"], data, 1, 1, world["cache"], 4, 0)
        learner = build_learner(info, world["clip"], world["cache"], PROMPTS, features, labels)
        optimiser = make_optimiser(learned("coop").recipe, [learner.prompt.ctx], 0.5)
        batches = (training_batches("coop", world["clip"], data, features, labels, 1) if cached
                   else reencoding_batches(world["clip"], data, labels))
        logs = train(learner, batches, learned("coop").recipe, 0.5, 4, 5, 1, 0, optimiser,
                     lambda done, logs: None, progress=False)
        curves.append([entry.loss for entry in logs])
    assert curves[0] == pytest.approx(curves[1], abs=1e-5)


# -- issue 19: the references' splits, templates, recipes and schedules ---------------------------


def _coop_eurosat(root: Path) -> dict:
    """EuroSAT as CoOp reads it: ROOT/eurosat/2750/<folder>/ and split_zhou_EuroSAT.json with
    [path relative to 2750, label, classname] lists (CoOp datasets/eurosat.py, read_split)."""
    from dataset_layouts import EUROSAT

    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, folder in enumerate(EUROSAT):
        for part, count in (("train", 2), ("val", 1), ("test", 1)):
            for k in range(count):
                rel = f"{folder}/{folder}_{part}{k}.jpg"
                layouts.image(root / "eurosat" / "2750" / rel, label * 10 + k + len(part))
                split[part].append([rel, label, folder])
    (root / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    return split


def test_coop_split_files_give_train_val_and_test(tmp_path: Path) -> None:
    root = tmp_path / "root"
    split = _coop_eurosat(root)
    train = load_dataset("eurosat:train", None, tmp_path, root)
    assert train.paths == [str(root / "eurosat" / "2750" / p) for p, _, _ in split["train"]]
    assert train.labels == [y for _, y, _ in split["train"]]
    assert train.classes[0] == "annual crop land"  # the card's names, CoOp's labels
    assert len(load_dataset("eurosat:val", None, tmp_path, root).paths) == 10
    test = load_dataset("eurosat:test-coop", None, tmp_path, root)
    assert not set(test.paths) & set(train.paths)
    from descriptor_gen.data.catalog import card_table

    assert any(line.startswith("eurosat ") and "found (40 images) + CoOp split" in line
               for line in card_table(root))
    broken = json.loads((root / "eurosat" / "split_zhou_EuroSAT.json").read_text())
    broken["train"][3] = ["x.jpg", "1", "Forest"]
    (root / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(broken))
    with pytest.raises(DescgenError, match=r"train\[3\] is not \[path, label, classname\]"):
        load_dataset("eurosat:train", None, tmp_path, root)


def test_an_empty_train_list_says_so_where_the_dataset_is_found(tmp_path: Path) -> None:
    """Issue 23: a root whose test split is there but whose train list is empty: not "not
    found", but which split has no images."""
    root = tmp_path / "root"
    split = _coop_eurosat(root)
    (root / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps({**split, "train": []}))
    with pytest.raises(DescgenError, match=r"eurosat:train: its train split lists no images under"):
        load_dataset("eurosat:train", None, tmp_path, root)
    assert load_dataset("eurosat:test-coop", None, tmp_path, root).paths


def test_food101_train_prefers_coops_split_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    layouts.LAYOUTS["food101"](root)
    for c in ("apple_pie", "baby_back_ribs", "waffles"):
        layouts.image(root / "food-101" / "images" / c / "90.jpg", 3)
    assert all("/90.jpg" in p for p in load_dataset("food101:train", None, tmp_path, root).paths)
    (root / "food-101" / "split_zhou_Food101.json").write_text(json.dumps(
        {"train": [["waffles/1001.jpg", 2, "waffles"], ["apple_pie/2001.jpg", 0, "apple_pie"],
                   ["baby_back_ribs/90.jpg", 1, "baby_back_ribs"]], "val": [], "test": []}))
    data = load_dataset("food101:train", None, tmp_path, root)
    assert data.labels == [2, 0, 1] and data.classes == ["apple pie", "baby back ribs", "waffles"]
    own = load_dataset("food101:train-own", None, tmp_path, root)
    assert all("/90.jpg" in p for p in own.paths)


def test_kgcoop_classname_guide_is_kgcoops_template_per_card(tmp_path: Path,
                                                              tiny_clip: tuple[Path, Path]) -> None:
    """KgCoOp trainers/kgcoop.py: CUSTOM_TEMPLATES[cfg.DATASET.NAME].format(c.replace("_", " "))."""
    from descriptor_gen.data.cards import load_cards
    from descriptor_gen.learn.learners import CoOp

    root = tmp_path / "root"
    _coop_eurosat(root)
    config, checkpoint = tiny_clip
    clip = load_clip(str(config), str(checkpoint), "cpu")
    kept: list = []
    cfg = LearnConfig(method="kgcoop", dataset="eurosat:train", data_root=root,
                      options={"shots": 2, "epochs": 1, "guide": "classname", "n_ctx": 2},
                      model=str(config), pretrained=str(checkpoint), device="cpu", workers=0)
    learn(cfg, tmp_path / "run", tmp_path / "cache", PROMPTS, progress=False, clip=clip,
          log=lambda m: None, on_done=kept.append)
    learner = kept[0]
    assert isinstance(learner, CoOp)
    names = load_cards()["eurosat"].class_file_names()
    expected = encode_texts(clip, [f"a centered satellite photo of {n}." for n in names])
    np.testing.assert_allclose(learner.guide.numpy(), expected, rtol=1e-5, atol=1e-6)
    templates = {n: c.coop.template for n, c in load_cards().items() if c.coop}
    assert templates["pets"] == "a photo of a {}, a type of pet."
    assert templates["food101"] == "a photo of {}, a type of food."
    assert templates["dtd"] == "a photo of a {}, a type of texture."
    from descriptor_gen.data.cards import coop_template

    # CoOp trainers/zsclip.py CUSTOM_TEMPLATES, the zero-shot row beside a learned run
    assert coop_template("dtd:test-coop", zero_shot=True) == "{} texture."
    assert coop_template("eurosat", zero_shot=True) == "a centered satellite photo of {}."
    assert coop_template("/a/folder", zero_shot=True) == "a photo of a {}."


def test_tip_adapter_f_trains_its_configs_epochs() -> None:
    """Tip-Adapter configs/eurosat.yaml train_epoch 100, the others 20."""
    from descriptor_gen.learn.methods import learned
    from descriptor_gen.learn.run import _recipe

    options = learned("tip-adapter-f").parse({})
    assert _recipe("tip-adapter-f", options, "eurosat:train")["epochs"] == 100
    assert _recipe("tip-adapter-f", options, "dtd:train")["epochs"] == 20
    assert _recipe("tip-adapter-f", options, "/some/folder")["epochs"] == 20


def test_logged_learning_rates_are_dassls(world: dict) -> None:
    """dassl ConstantWarmupScheduler + CosineAnnealingLR, WARMUP_RECOUNT: epoch e >= 1 at
    lr/2 (1 + cos(pi (e - 1) / T)) (see test_reference_numbers for dassl's own output)."""
    import math

    out = world["tmp"] / "lr"
    _learn(world, "coop", out, epochs=4, lr=0.002, n_ctx=2)
    logged = [json.loads(x)["lr"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([1e-5, 0.002, 0.001 * (1 + math.cos(math.pi / 4)),
                                    0.001 * (1 + math.cos(2 * math.pi / 4))])


def test_a_run_names_its_clip_and_eval_uses_it(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's `descgen eval --learned RUN --dataset ...`: the run's model and weights,
    flags that contradict them refused naming them, text flags refused, zero-shot beside."""
    out = world["tmp"] / "run"
    assert main(["learn", "coop", "--dataset", str(world["train"]), "--classes", str(world["classes"]),
                 "--shots", "3", "--epochs", "2", "--lr", "0.5", "--option", "n_ctx=2", "--out", str(out),
                 "--model", str(world["config"]), "--pretrained", str(world["checkpoint"]),
                 "--device", "cpu", "--workers", "0", "--cache-dir", str(world["cache"]),
                 "--no-progress"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["model"] == str(world["config"].resolve())
    assert info["pretrained"] == str(world["checkpoint"].resolve())
    capsys.readouterr()
    base = ["eval", "--dataset", str(world["test"]), "--classes", str(world["classes"]),
            "--learned", str(out), "--device", "cpu", "--workers", "0", "--cache-dir",
            str(world["cache"])]
    result = world["tmp"] / "result.json"
    assert main([*base, "--out", str(result)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("learned:coop: top-1")
    assert "zero-shot CLIP ('a photo of a {}.', same classes and model): top-1" in printed
    saved = json.loads(result.read_text())
    assert saved["model"] == str(world["config"].resolve()) and saved["zero_shot"]["text"] == "a photo of a {}."
    clip = world["clip"]
    data = load_image_folder(world["test"], NAMES)
    feats = np.asarray(encode_images(clip, data.paths, 4, 0).features, np.float32)
    direct = feats @ encode_texts(clip, [f"a photo of a {n}." for n in NAMES]).T
    assert saved["zero_shot"]["top1"] == pytest.approx(float(np.mean(direct.argmax(1) == np.array(data.labels))))
    assert main([*base, "--pretrained", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.split("\n")) == 1
    assert f"trained with --model {world['config'].resolve()} --pretrained {world['checkpoint'].resolve()}" in err
    for extra, flag in ((["--method", "classname"], "--method"), (["--option", "repeats=2"], "--option"),
                        (["--descriptors", str(world["store"])], "--descriptors"),
                        (["--concept", "fish"], "--concept")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.split("\n")) == 1 and f"{flag} would be ignored" in err


def test_seed_lists_run_each_seed_and_report_mean_and_std(world: dict,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`seed: [1, 2, 3]` (refused before): one run per seed, the report's row their mean ± std
    (numpy's std, as CoOp's parse_test_res.py); a seeded zero-shot method takes the list too."""
    spec = world["tmp"] / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "seeds", "classes": str(world["classes"]), "dataset": str(world["test"]),
        "clip": {"model": str(world["config"]), "pretrained": str(world["checkpoint"]),
                 "device": "cpu", "workers": 0},
        "methods": [{"method": "coop", "shots": 2, "epochs": 2, "lr": 0.5, "n_ctx": 2,
                     "seed": [1, 2, 3], "train": str(world["train"])},
                    {"method": "waffle", "count": 2, "seed": [4, 9]}]}))
    out = world["tmp"] / "results"
    base = ["--cache-dir", str(world["cache"]), "--out", str(out)]
    assert main(["sweep", str(spec), *base, "--dry-run"]) == 0
    assert "4 cells, 0 already done" in capsys.readouterr().out
    assert main(["sweep", str(spec), *base]) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    coop = [r for r in rows if r["method_name"] == "coop"]
    assert [r["options"]["seed"] for r in coop] == [1, 2, 3]
    assert {r["seed_group"] for r in coop} == {"coop (epochs=2, lr=0.5, n_ctx=2, shots=2)"}
    waffle = next(r for r in rows if r["method_name"] == "waffle")
    assert [r["seed"] for r in waffle["repeats"]] == [4, 9]
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    tops = [100 * r["metrics"]["top1"] for r in coop]
    shown = f"{np.mean(tops):.2f} ± {np.std(tops):.2f}"
    assert f"| coop (epochs=2, lr=0.5, n_ctx=2, shots=2) (seeds 1, 2, 3) | {shown} |" in report
