from __future__ import annotations

import json
from pathlib import Path

import pytest

from descriptor_gen.classes import load_classes
from descriptor_gen.errors import DescgenError
from descriptor_gen.published import import_published

REPO = Path(__file__).resolve().parent.parent
IMAGENET = load_classes(REPO / "data" / "classes" / "imagenet.txt")


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


def test_cupl_imagenet_cleans_and_shares_duplicates(shared_data: Path) -> None:
    path = shared_data / "cupl" / "imagenet_prompts_base.json"
    records, report = import_published(path, "cupl", IMAGENET)
    assert report.matched == 1000 and not report.missing_in_file and not report.unused_in_file
    assert records[657].descriptors == records[744].descriptors
    for record in records:
        assert all(d == " ".join(d.split()) for d in record.descriptors)
        assert len({d.casefold() for d in record.descriptors}) == len(record.descriptors)
        assert record.params["format"] == "cupl" and len(record.params["source_sha256"]) == 64
    raw_lengths = [len(r.raw) for r in records]
    assert max(raw_lengths) >= 30


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


def test_loose_name_matching(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"Great_White_Shark": ["big teeth"], "tench": ["a fish", " a  fish "]}))
    records, report = import_published(path, "dclip", ["great white shark", "tench"])
    assert [r.descriptors for r in records] == [["big teeth"], ["a fish"]]
    assert report.matched == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is not json", "not a JSON file"),
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
