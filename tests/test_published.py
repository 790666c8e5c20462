from __future__ import annotations

import json
from pathlib import Path

import pytest

from descriptor_gen.describe.classes import load_classes
from descriptor_gen.errors import DescgenError
from descriptor_gen.describe.published import import_published

REPO = Path(__file__).resolve().parent.parent
IMAGENET = load_classes(REPO / "data" / "classes" / "imagenet.txt")
IMAGENET_DCLIP = load_classes(REPO / "data" / "classes" / "imagenet_dclip.txt")


def dclip_loader_strings(source: dict[str, list[str]]) -> list[str]:
    """The texts Menon & Vondrick's load.py encodes on ImageNet, written out from its settings
    (category_name_inclusion 'prepend', before_text '', between_text ', ', after_text '.',
    apply_descriptor_modification, an empty list read as ['']), for every key in file order."""
    def which(d: str) -> str:
        if d.startswith("a") or d.startswith("an"):
            return f"which is {d}"
        if d.startswith(("has", "often", "typically", "may", "can")):
            return f"which {d}"
        if d.startswith("used"):
            return f"which is {d}"
        return f"which has {d}"

    return [f"{key.replace('_', ' ')}, {which(d)}." for key, ds in source.items() for d in (ds or [""])]


def test_dclip_imagenet_class_list_is_dclips_own(shared_data: Path) -> None:
    source = json.loads((shared_data / "dclip" / "descriptors_imagenet.json").read_text())
    assert IMAGENET_DCLIP == list(source)
    renamed = {i: (a, b) for i, (a, b) in enumerate(zip(IMAGENET, IMAGENET_DCLIP)) if a != b}
    assert renamed == {27: ("newt", "eft"), 638: ("tights", "maillot"),
                       744: ("missile", "projectile"), 836: ("sunglasses", "sunglass")}


def test_imported_dclip_imagenet_yields_the_texts_dclip_encodes(shared_data: Path) -> None:
    from descriptor_gen.score.methods import class_texts
    from descriptor_gen.score.scoring import TextForms, make_recipe
    from descriptor_gen.paths import CachePaths

    path = shared_data / "dclip" / "descriptors_imagenet.json"
    source = json.loads(path.read_text())
    records, report = import_published(path, "dclip", IMAGENET_DCLIP)
    assert report.matched == 1000 and not report.renamed
    recipe = make_recipe(TextForms.load(CachePaths.resolve().prompts_dir), "dclip-imagenet",
                         on_empty="blank")
    ct, _ = class_texts("descriptors", IMAGENET_DCLIP, {r.class_index: r.descriptors for r in records},
                        [], recipe)
    ours = ct.flat()
    expected = dclip_loader_strings(source)
    assert len(ours) == len(expected) == 5800
    assert ours == expected
    assert "dishcloth, which is used for cleaning dishes, countertops, etc.." in ours
    assert ours[0].startswith("tench, which") and any(t.startswith("eft, which") for t in ours)


def test_dclip_imagenet_by_name(shared_data: Path) -> None:
    records, report = import_published(shared_data / "dclip" / "descriptors_imagenet.json", "dclip", IMAGENET)
    assert len(records) == 1000 and report.matched == 998
    assert report.missing_in_file == ["newt", "tights"]
    assert set(report.unused_in_file) == {"eft", "maillot", "projectile", "sunglass"}
    assert records[0].descriptors[:2] == ["a freshwater fish", "olive green or brown in color"]
    assert records[27].error and "no entry" in records[27].error
    assert records[657].descriptors == records[744].descriptors


def test_dclip_imagenet_by_order_keeps_duplicate_names_apart(shared_data: Path) -> None:
    path = shared_data / "dclip" / "descriptors_imagenet.json"
    records, report = import_published(path, "dclip", IMAGENET, match="order")
    source = json.loads(path.read_text())
    assert report.matched == 1000 and len(report.renamed) == 4
    assert records[744].class_name == "missile" and records[744].descriptors == source["projectile"]
    assert records[657].descriptors == source["missile"]
    assert all(r.error is None for r in records)
    mean = sum(len(r.descriptors) for r in records) / 1000
    assert 5.5 < mean < 6.1


def test_cupl_imagenet_keeps_the_sentences_cupl_averages(shared_data: Path) -> None:
    """CuPL's script takes each class's list as it is: repeats weigh twice, whitespace stays
    (CLIP's tokenizer collapses it)."""
    path = shared_data / "cupl" / "imagenet_prompts_base.json"
    source = json.loads(path.read_text())
    records, report = import_published(path, "cupl", IMAGENET)
    assert report.matched == 1000 and not report.missing_in_file and not report.unused_in_file
    assert records[657].descriptors == records[744].descriptors
    for record in records:
        assert record.descriptors == source[record.class_name] == record.raw
        assert record.params["format"] == "cupl" and len(record.params["source_sha256"]) == 64
    repeats = sum(len(r.descriptors) - len(set(r.descriptors)) for r in records)
    assert repeats >= 1693  # the file's own repeats (the two shared keys count twice here)


def test_cupl_cifar10(shared_data: Path) -> None:
    classes = load_classes(REPO / "data" / "classes" / "cifar10.txt")
    records, report = import_published(shared_data / "cupl" / "cifar10_prompts_base.json", "cupl", classes)
    assert report.matched == 10 and all(r.descriptors for r in records)


def test_waffleclip_empty_lists_are_recorded_with_an_error(shared_data: Path) -> None:
    path = shared_data / "waffleclip" / "descriptors_cars.json"
    classes = list(json.loads(path.read_text()))
    records, report = import_published(path, "dclip", classes)
    assert len(report.empty_in_file) == 14
    errors = [r.error for r in records if not r.descriptors]
    assert errors.count("empty list in descriptors_cars.json") == 13
    assert errors.count("only blank texts in descriptors_cars.json") == 1


def test_loose_name_matching_keeps_texts_as_published(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"Great_White_Shark": ["big teeth"],
                                "tench": ["a fish", " a  fish ", "a fish", "  "]}))
    records, report = import_published(path, "dclip", ["great white shark", "tench"])
    assert [r.descriptors for r in records] == [["big teeth"], ["a fish", " a  fish ", "a fish"]]
    assert report.matched == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is not json", r"bad.json:1: not valid JSON"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"tench": "a fish"}', "entry 'tench' is not a list of strings"),
        ('{"tench": [1, 2]}', "entry 'tench' is not a list of strings"),
    ],
)
def test_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DescgenError, match=message):
        import_published(path, "cupl", ["tench"])


def test_order_needs_equal_sizes(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"a": ["x"]}')
    with pytest.raises(DescgenError, match="1 entries but 2 classes"):
        import_published(path, "dclip", ["a", "b"], match="order")


DCLIP_FILES = ["cub", "dtd", "eurosat", "food101", "pets", "places365"]
WAFFLE_FILES = ["cars", "fgvcaircraft", "flowers102"]


@pytest.mark.parametrize("name", DCLIP_FILES + WAFFLE_FILES)
def test_every_published_descriptor_file_yields_the_references_texts(shared_data: Path,
                                                                     name: str) -> None:
    """DCLIP's load.py on its other datasets (no period) and WaffleCLIP's gpt_descriptions mode
    ("A photo of a {c}, which ... .") on its three, as the references build the texts."""
    from descriptor_gen.score.methods import class_texts
    from descriptor_gen.score.scoring import TextForms, make_recipe
    from descriptor_gen.paths import CachePaths

    folder = "dclip" if name in DCLIP_FILES else "waffleclip"
    path = shared_data / folder / f"descriptors_{name}.json"
    source = json.loads(path.read_text())
    classes = list(source)
    records, _ = import_published(path, "dclip", classes)
    form = "dclip" if folder == "dclip" else "waffle"
    recipe = make_recipe(TextForms.load(CachePaths.resolve().prompts_dir), form, on_empty="blank")
    ct, _ = class_texts("descriptors", classes, {r.class_index: r.descriptors for r in records}, [],
                        recipe)
    for index, (key, texts) in enumerate(source.items()):
        expected = dclip_loader_strings({key: texts})
        if folder == "dclip":
            expected = [t[:-1] for t in expected]
        else:
            expected = [f"A photo of a {t}" for t in expected]
        if texts and not any(t.strip() for t in texts):
            # a list of blank strings: the reference encodes one identical text per blank, we
            # encode it once (the same class vector); the tokenizer sees the same words
            expected = [" ".join(t.split()) for t in dict.fromkeys(expected)]
            assert [" ".join(t.split()) for t in ct.texts(index)] == expected
            continue
        assert ct.texts(index) == expected, key
