from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import dataset_layouts as layouts
from descriptor_gen.cli import main
from descriptor_gen.data.cards import load_cards
from descriptor_gen.data.datasets import load_dataset
from descriptor_gen.data.loaders import cub_name
from descriptor_gen.data.wordnet import imagenet_wnids
from descriptor_gen.errors import DescgenError

CARDS = load_cards()


@pytest.fixture(autouse=True)
def _no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the md5 of a few downloaded files; these fixtures are not those bytes."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.flowers102 as flowers
    import torchvision.datasets.places365 as places

    for module in (cifar, flowers, places):
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_every_card_has_a_layout_fixture_and_valid_data() -> None:
    assert set(CARDS) == set(layouts.LAYOUTS)
    for name, card in CARDS.items():
        assert card.template_list() and all("{}" in t for t in card.template_list()), name
        if card.classes:
            assert len(card.class_file_names() or []) > 1
    assert len(CARDS["imagenet1k"].template_list()) == 80


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_each_card_reads_its_real_layout(tmp_path: Path, name: str) -> None:
    expected = layouts.LAYOUTS[name](tmp_path)
    data = load_dataset(name, None, tmp_path / "cache", tmp_path)
    got = [(Path(p.split("#")[0]).name + (f"#{p.split('#')[1]}" if "#" in p else ""), y)
           for p, y in zip(data.paths, data.labels or [])]
    assert Counter(got) == Counter(expected)
    assert data.classes
    card = CARDS[name]
    if card.classes:
        assert data.classes == card.class_file_names()
    assert all(0 <= y < len(data.classes) for y in data.labels or [])


def test_imagenet_folders_map_by_canonical_wordnet_order(tmp_path: Path) -> None:
    """A loader that numbered the folders present by their sorted order would give 0, 1, 2."""
    layouts.imagenet1k(tmp_path)
    data = load_dataset("imagenet1k", None, tmp_path / "c", tmp_path)
    assert sorted(set(data.labels or [])) == [2, 407, 999]
    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert wnids[0] == "n01440764" and data.classes[0] == "tench" and data.classes[407] == "ambulance"


@pytest.mark.parametrize(("folder", "expected"), [
    ("001.Black_footed_Albatross", "Black-footed Albatross"),
    ("200.Common_Yellowthroat", "Common Yellowthroat"),
    ("036.Northern_Flicker", "Northern Flicker"),
    ("010.Red_winged_Blackbird", "Red-winged Blackbird"),
])
def test_cub_names_follow_dclip(folder: str, expected: str) -> None:
    assert cub_name(folder) == expected


def test_names_the_cards_derive(tmp_path: Path) -> None:
    for name in ("food101", "places365", "sun397", "cifar100"):
        layouts.LAYOUTS[name](tmp_path / name)
    names = {n: load_dataset(n, None, tmp_path / "c", tmp_path / n).classes for n in
             ("food101", "places365", "sun397", "cifar100")}
    assert names["food101"] == ["apple pie", "baby back ribs", "waffles"]
    assert names["places365"] == ["airfield", "apartment building-outdoor", "bathroom"]
    assert names["sun397"] == ["abbey", "airplane cabin", "bakery shop"]
    assert names["cifar100"] == ["apple", "aquarium_fish", "baby"]  # as CLIP_benchmark keeps them


def test_published_descriptor_files_match_the_card_names(shared_data: Path, tmp_path: Path) -> None:
    """The references' files pair with the cards' classes by name (case and spacing aside)."""
    from descriptor_gen.describe.classes import name_key

    layouts.eurosat(tmp_path)
    eurosat = load_dataset("eurosat", None, tmp_path / "c", tmp_path).classes
    keys = json.loads((shared_data / "dclip" / "descriptors_eurosat.json").read_text())
    assert [name_key(k) for k in keys] == [name_key(c) for c in eurosat]
    pets = CARDS["pets"].class_file_names()
    keys = json.loads((shared_data / "dclip" / "descriptors_pets.json").read_text())
    assert sorted(name_key(k) for k in keys) == sorted(name_key(c) for c in pets)
    # WaffleCLIP's flowers file is in label order but words one name its own way
    # in three places (WaffleCLIP's "lotus lotus", "ball moss" for CLIP's "lotus", "air
    # plant"): pair it by order
    from descriptor_gen.describe.published import import_published

    flowers = CARDS["flowers"].class_file_names()
    path = shared_data / "waffleclip" / "descriptors_flowers102.json"
    keys = json.loads(path.read_text())
    differ = [(k, c) for k, c in zip(keys, flowers) if name_key(k) != name_key(c)]
    assert len(keys) == len(flowers) == 102 and differ == [
        ("pink-yellow dahlia", "pink and yellow dahlia"), ("lotus lotus", "lotus"),
        ("ball moss", "air plant")]
    records, report = import_published(path, "dclip", flowers, match="order")
    index = flowers.index("air plant")
    assert report.matched == 102 and records[index].descriptors == keys["ball moss"]


@pytest.mark.parametrize(("name", "damage", "message"), [
    ("cub", lambda r: (r / "CUB_200_2011" / "train_test_split.txt").unlink(), "train_test_split.txt"),
    ("food101", lambda r: (r / "food-101" / "meta" / "test.json").unlink(), "food101: not found"),
    ("imagenet1k", lambda r: (r / "val" / "n99999999").mkdir(), "not an ImageNet-1k WordNet id"),
    ("imagenetv2", lambda r: (r / "imagenetv2-matched-frequency-format-val" / "1000").mkdir(), "class index 0..999"),
    ("eurosat", lambda r: __import__("shutil").rmtree(r / "eurosat" / "2750" / "Forest"), "9 classes where the card has 10"),
    ("caltech101", lambda r: (r / "caltech101" / "101_ObjectCategories" / "c050").rmdir(), "101 classes where the card has 102"),
    ("cub", lambda r: (r / "CUB_200_2011" / "image_class_labels.txt").write_text("1 1\n2 1\n3 57\n4 201\n5 200\n"), "class 201, beyond the 200 classes"),
    ("pets", lambda r: (r / "oxford-iiit-pet" / "annotations" / "test.txt").write_text("Abyssinian_100 38 1 1\n"), "label 37 is beyond its 37 classes"),
])
def test_a_broken_layout_is_one_line(tmp_path: Path, name: str, damage, message: str,  # noqa: ANN001
                                     capsys: pytest.CaptureFixture[str]) -> None:
    layouts.LAYOUTS[name](tmp_path)
    damage(tmp_path)
    if CARDS[name].classes is None:  # its names come from the data, so listing them fails too
        assert main(["datasets", name, "--data-root", str(tmp_path)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(DescgenError, match=message):
        load_dataset(name, None, tmp_path / "c", tmp_path)


def test_a_missing_dataset_names_the_layout_and_where_to_get_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "food101", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "food-101/{images,meta}" in err and "data.vision.ee.ethz.ch" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["datasets", "food101"]) == 2
    assert "give --data-root" in capsys.readouterr().err


def test_datasets_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layouts.food101(tmp_path)
    layouts.dtd(tmp_path)
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    found = {line.split()[0] for line in lines[1:] if "found (" in line}
    assert found == {"food101", "dtd"} and len(lines) == len(CARDS) + 1
    assert main(["datasets", "pets"]) == 0  # a card with its own list needs no data
    assert capsys.readouterr().out.splitlines()[:2] == ["Abyssinian", "American Bulldog"]
    assert main(["datasets", "food101", "--data-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "apple pie\nbaby back ribs\nwaffles\n"


def test_webdataset_folder(tmp_path: Path, tiny_clip, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    folder = tmp_path / "wds_food"
    samples = layouts.webdataset_folder(folder, [[("s0000", 2), ("s0001", 0), ("s0002", 1)],
                                                 [("s0003", 1), ("s0004", 2)]], ["pie", "ribs", "waffle"])
    assert main(["datasets", f"wds:{folder}"]) == 0
    assert capsys.readouterr().out == "pie\nribs\nwaffle\n"
    config, checkpoint = tiny_clip
    preds = tmp_path / "p.jsonl"
    args = ["eval", "--dataset", f"wds:{folder}", "--method", "templates", "--model", str(config),
            "--pretrained", str(checkpoint), "--device", "cpu", "--workers", "2", "--batch-size", "2",
            "--cache-dir", str(tmp_path / "cache"), "--predictions", str(preds),
            "--out", str(tmp_path / "r.json")]
    assert main(args) == 0
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [r["label"] for r in rows] == [y for _, y in samples]  # shard order, both workers
    assert [r["path"].rsplit("#", 1)[1] for r in rows] == [k for k, _ in samples]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["images_encoded"] == 5 and "zeroshot_classification_templates" in result["templates"]
    assert main(args) == 0
    again = json.loads((tmp_path / "r.json").read_text())
    assert again["images_encoded"] == 0 and again["metrics"] == result["metrics"]
    assert [json.loads(x)["label"] for x in preds.read_text().splitlines()] == [y for _, y in samples]


def test_webdataset_bad_folders(tmp_path: Path, tiny_clip, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    folder = tmp_path / "w"
    layouts.webdataset_folder(folder, [[("a", 0)], []], ["x", "y"])
    config, checkpoint = tiny_clip
    base = ["eval", "--method", "classname", "--model", str(config), "--pretrained", str(checkpoint),
            "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "cache")]
    assert main([*base, "--dataset", f"wds:{folder}"]) == 0  # an empty shard adds nothing
    (folder / "test" / "1.tar").unlink()
    assert main([*base, "--dataset", f"wds:{folder}"]) == 2
    assert "1.tar is missing" in capsys.readouterr().err
    assert main([*base, "--dataset", f"wds:{folder}:train"]) == 2
    assert "split 'train'" in capsys.readouterr().err
    assert main([*base, "--dataset", f"wds:{tmp_path / 'none'}"]) == 2


def test_hf_datasets_saved_and_imagefolder(tmp_path: Path, tiny_clip) -> None:  # noqa: ANN001
    """The real `datasets` library on data built here: save_to_disk, and the imagefolder builder."""
    import datasets
    from PIL import Image

    from descriptor_gen.score.evaluate import EvalConfig, evaluate
    from descriptor_gen.paths import CachePaths

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)) for _ in range(5)]
    labels = [2, 0, 1, 1, 0]
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["cat", "dog", "fish"])})
    data = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    data.save_to_disk(str(tmp_path / "saved"))
    loaded = load_dataset(f"hf:{tmp_path / 'saved'}", None, tmp_path / "c")
    assert loaded.labels == labels and loaded.classes == ["cat", "dog", "fish"]
    named = load_dataset(f"hf:{tmp_path / 'saved'}", ["fish", "cat", "dog"], tmp_path / "c")
    assert named.labels == [0, 1, 2, 2, 1]  # mapped by name onto the list given
    for name, label in (("cat", 0), ("dog", 1)):
        (tmp_path / "folder" / name).mkdir(parents=True)
        images[label].save(tmp_path / "folder" / name / "a.png")
    folder = load_dataset(f"hf:{tmp_path / 'folder'}", None, tmp_path / "c")
    assert sorted(folder.labels or []) == [0, 1] and folder.classes == ["cat", "dog"]
    config, checkpoint = tiny_clip
    cfg = EvalConfig(dataset=f"hf:{tmp_path / 'saved'}", method="classname", model=str(config),
                     pretrained=str(checkpoint), device="cpu", workers=1)
    result = evaluate(cfg, None, tmp_path / "cache", CachePaths.resolve().prompts_dir)
    assert result.metrics["n_images"] == 5 and result.images_encoded == 5


def test_eval_on_a_card_without_a_class_list(tmp_path: Path, tiny_clip,  # noqa: ANN001
                                             capsys: pytest.CaptureFixture[str]) -> None:
    layouts.food101(tmp_path / "root")
    (tmp_path / "root" / "food-101" / "images" / "waffles" / "1001.jpg").write_bytes(b"broken")
    config, checkpoint = tiny_clip
    out = tmp_path / "r.json"
    assert main(["eval", "--dataset", "food101", "--data-root", str(tmp_path / "root"),
                 "--method", "templates", "--model", str(config), "--pretrained", str(checkpoint),
                 "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "c"),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["templates"] == "card food101" and result["metrics"]["n_images"] == 2
    assert len(result["unreadable_images"]) == 1
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("a\nb\n")
    assert main(["eval", "--dataset", "food101", "--data-root", str(tmp_path / "root"),
                 "--classes", str(wrong), "--method", "classname", "--model", str(config),
                 "--pretrained", "none", "--device", "cpu", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "class list has 2 classes but the dataset has 3" in capsys.readouterr().err


def test_suite_end_to_end(tmp_path: Path, tiny_clip, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    """Three datasets in their real layouts (one absent), four methods: published files from a
    descriptor folder, descriptors generated on the dev server, published numbers beside ours."""
    import yaml

    from descriptor_gen.generation.devserver import DevServer

    root = tmp_path / "root"
    for name in ("food101", "dtd", "pets"):
        layouts.LAYOUTS[name](root)
    pets = CARDS["pets"].class_file_names() or []
    descriptors = tmp_path / "descriptors"
    descriptors.mkdir()
    (descriptors / "descriptors_food101.json").write_text(json.dumps(
        {"apple pie": ["a golden crust"], "baby back ribs": ["glazed meat"], "waffles": []}))
    (descriptors / "descriptors_pets.json").write_text(json.dumps(  # DCLIP's case-sensitive order
        {n: [f"the look of {n}"] for n in sorted(pets)}))
    config, checkpoint = tiny_clip
    spec = tmp_path / "suite.yaml"
    suite = yaml.safe_load((Path(__file__).parent.parent / "data" / "experiments" / "suite_dclip.yaml").read_text())
    suite.update(datasets=["food101", "dtd", "pets", "cub"], descriptor_dir=str(descriptors),
                 clip={"model": str(config), "pretrained": str(checkpoint), "precision": "fp32",
                       "device": "cpu", "workers": 0})
    out = tmp_path / "out"
    with DevServer() as server:
        suite["generation"]["base_url"] = server.base_url
        spec.write_text(yaml.safe_dump(suite))
        args = ["suite", str(spec), "--data-root", str(root), "--out", str(out),
                "--cache-dir", str(tmp_path / "cache")]
        assert main(args) == 0
        err = capsys.readouterr().err
        assert server.count("/completions") == 3 + 3 + 37  # one request a class, DCLIP's way
    assert "cub: skipped" in err and "dtd: no published dclip descriptors" not in err
    assert "dtd: dclip descriptors skipped: no" in err  # the folder has no DTD file
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    cells = {(r["dataset"], r["column"]) for r in rows}
    assert cells == {(d, c) for d in ("food101", "dtd", "pets") for c in ("clip", "templates", "ours")} | {
        ("food101", "dclip"), ("pets", "dclip")}
    assert sum(r["images_encoded"] for r in rows) == 3 + 3 + 3  # once per dataset, shared
    by = {(r["dataset"], r["column"]): r for r in rows}
    # a tiny random CLIP is not ViT-B/32 (model_key): ViT-B/32's published numbers are withheld,
    # in words, not set beside its scores (issue 23); the lookup itself is the card's
    from descriptor_gen.experiments.suite import _published

    assert all(r["published"] is None for r in rows)
    assert "published numbers withheld: they are ViT-B-32's (model_key)" in err
    assert _published(CARDS["food101"], "ViT-B-32", "clip") == pytest.approx(0.8259)
    assert _published(CARDS["pets"], "ViT-B-32", "dclip") == pytest.approx(0.8654)
    assert _published(CARDS["dtd"], "ViT-B-32", "templates") is None
    assert by[("pets", "dclip")]["text"]["descriptor_text"] == "A photo of a {c}, {which} {d}."
    store = [json.loads(x) for x in Path(by[("pets", "dclip")]["descriptor_file"]).read_text().splitlines()]
    assert [r["descriptors"] for r in store] == [[f"the look of {n}"] for n in pets]  # paired by name
    report = (out / "report.md").read_text()
    line = next(x for x in report.split("\n") if x.startswith("| food101 (3) |"))
    ours = 100 * by[("food101", "clip")]["metrics"]["top1"]
    assert f"| {ours:.2f} | - | - |" in line
    assert f"CLIP: {config} / {checkpoint} (fp32)." in report
    assert "**Published numbers withheld: they are ViT-B-32's (model_key)" in report
    assert "- not run: dtd / dclip: dclip descriptors skipped: no " in report  # kept, with why
    assert "- not run: cub / every column: cub: " in report
    assert "**average (3)**" in report and (out / "reproduce-dclip_suite.png").exists()
    assert main(args) == 0  # everything done: nothing new
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    assert main(["report", str(out)]) == 0 and "Benchmark suite" in (out / "report.md").read_text()


def test_suite_of_methods_with_options(tmp_path: Path, tiny_clip, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    """WaffleCLIP's columns over the published descriptors (seeded: mean ± std over repeats,
    WaffleCLIP's published numbers beside), and comparative descriptors generated in the suite."""
    import yaml

    from descriptor_gen.generation.devserver import DevServer

    root = tmp_path / "root"
    layouts.LAYOUTS["food101"](root)
    descriptors = tmp_path / "descriptors"
    descriptors.mkdir()
    (descriptors / "descriptors_food101.json").write_text(json.dumps(
        {"apple pie": ["a golden crust", "apple slices"], "baby back ribs": ["glazed meat"],
         "waffles": ["a grid pattern"]}))
    config, checkpoint = tiny_clip
    suite = yaml.safe_load((Path(__file__).parent.parent / "data" / "experiments" / "suite_waffle.yaml").read_text())
    suite["methods"]["waffle"]["options"]["repeats"] = 2
    suite["methods"]["swapped"]["options"]["repeats"] = 3
    del suite["methods"]["ours"], suite["methods"]["waffle+dclip"]
    suite["methods"]["comparative"] = {"method": "comparative", "descriptors": "generated-comparative",
                                       "neighbours": 1, "published": "comparative"}
    suite.update(datasets=["food101"], descriptor_dir=str(descriptors),
                 clip={"model": str(config), "pretrained": str(checkpoint), "precision": "fp32",
                       "device": "cpu", "workers": 0})
    out = tmp_path / "out"
    spec = tmp_path / "suite.yaml"
    with DevServer() as server:
        suite["generation"]["base_url"] = server.base_url
        spec.write_text(yaml.safe_dump(suite))
        assert main(["suite", str(spec), "--data-root", str(root), "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache")]) == 0
        assert server.count("/completions") == 3  # one comparative pair a class
    by = {r["column"]: r for r in (json.loads(x) for x in (out / "results.jsonl").read_text().splitlines())}
    assert set(by) == {"clip", "templates", "dclip", "waffle", "swapped", "comparative"}
    assert len(by["waffle"]["repeats"]) == 2 and len(by["swapped"]["repeats"]) == 3
    from descriptor_gen.experiments.suite import _published  # withheld beside a tiny CLIP

    assert by["swapped"]["published"] is None and by["comparative"]["published"] is None
    assert _published(CARDS["food101"], "ViT-B-32", by["swapped"]["identity"]["method"]["published"]) == pytest.approx(0.8171)
    assert _published(CARDS["food101"], "ViT-B-32", "comparative") == pytest.approx(0.8381)
    assert by["waffle"]["options"]["characters"] == "descriptors"
    line = next(x for x in (out / "report.md").read_text().split("\n") if x.startswith("| food101 (3) |"))
    assert " ± " in line


@pytest.mark.parametrize("name", ["suite_dclip", "suite_waffle", "suite_comparative",
                                  "suite_robustness"])
def test_shipped_suites_are_valid(name: str) -> None:
    from descriptor_gen.experiments.suite import SuiteSpec
    from descriptor_gen.experiments.specs import load_yaml_model

    spec = load_yaml_model(Path(__file__).parent.parent / "data" / "experiments" / f"{name}.yaml", SuiteSpec)
    spec.checked(CARDS)
    eight = {"imagenet1k", "imagenetv2", "cub", "eurosat", "places365", "food101", "pets", "dtd"}
    for dataset in spec.datasets:
        for column, method in spec.methods.items():
            if method.published and dataset in eight:  # WaffleCLIP's results cover these eight
                assert method.published in CARDS[dataset].published["ViT-B-32"], (dataset, column)
            if method.descriptors in ("dclip", "cupl") and (name, dataset) not in (
                    ("suite_comparative", "cifar100"), ("suite_robustness", "objectnet")):
                # DCLIP published no CIFAR-100 or ObjectNet file: those columns are skipped with a
                # line; ImageNet-A and -R take ImageNet's (their parent's)
                card = CARDS[dataset]
                owner = CARDS[card.subset.of] if card.subset is not None else card
                assert method.descriptors in owner.descriptors, (dataset, column)


def test_image_files_under_lists_as_sorted_rglob_does(tmp_path: Path) -> None:
    """The fast listing (one read and one sort for a flat folder, parts-wise order for nested
    ones) gives `sorted(rglob)`'s order and suffix rules, `a-b/` before or after `a/` alike."""
    import os

    from descriptor_gen.data.images import IMAGE_SUFFIXES, _suffix, image_files_under

    for name in ["a.jpg", ".jpg", "..jpg", ".a.jpg", "a.JPEG", "noext", "a.", "a.b.png", "...",
                 ".a.", "a..jpg", "x.Tif"]:
        assert _suffix(name) == os.path.splitext(name)[1].lower(), name
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ["b.JPG", "a.png", ".hidden.jpg", ".jpg", "notes.txt", "a10.jpg", "a9.jpg"]:
        (flat / name).write_bytes(b"x")
    nested = tmp_path / "nested"
    for rel in ["a/x.jpg", "a-b/x.jpg", "a/b/y.png", "z.jpg", "a.jpg", "a b/c.jpeg", "a/q.txt"]:
        (nested / rel).parent.mkdir(parents=True, exist_ok=True)
        (nested / rel).write_bytes(b"x")
    for root in (flat, nested):
        expected = [str(p) for p in sorted(root.rglob("*"))
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        assert image_files_under(root) == expected


def test_class_labels_by_lookup_keep_the_rules_of_the_scan() -> None:
    from descriptor_gen.data.images import ClassLabels

    labels = ClassLabels(["tench", "Great White Shark", "crane", "crane", "3d printer"])
    assert labels("1", "x") == 1 and labels(" tench ", "x") == 0
    assert labels("great white shark", "x") == 1  # by the name's key when no exact match
    with pytest.raises(DescgenError, match="names classes \\[2, 3\\]"):
        labels("crane", "here")
    with pytest.raises(DescgenError, match="beyond the 5 classes"):
        labels("7", "here")
    with pytest.raises(DescgenError, match="here: label 'goldfish' is not in the class list"):
        labels("goldfish", "here")
