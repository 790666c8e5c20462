from __future__ import annotations

import json
from pathlib import Path

import pytest

from descriptor_gen.describe.classes import load_classes
from descriptor_gen.errors import DescgenError
from descriptor_gen.describe.prompts import PromptOptions
from descriptor_gen.describe.store import (
    DescriptorRecord,
    check_against_classes,
    read_store,
    select_records,
    summarize_store,
    write_store,
)

REPO = Path(__file__).resolve().parent.parent


def _record(index: int, name: str, descriptors: list[str], **extra) -> DescriptorRecord:
    return DescriptorRecord(
        class_index=index, class_name=name, descriptors=descriptors, backend="openai",
        model="gpt-3.5-turbo-instruct", options=PromptOptions(per_example=4),
        prompt_sha256="ab" * 32, params={"temperature": 0.7}, raw=["- x"], **extra,
    )


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    records = [
        _record(657, "missile", ["a long, cylindrical body"]),
        _record(744, "missile", ["a pointed end"]),
        _record(3, "tiger shark", [], error="no descriptors after 3 attempts"),
    ]
    path = tmp_path / "d.jsonl"
    write_store(path, records)
    back = read_store(path)
    assert [r.class_index for r in back] == [3, 657, 744]
    assert back == sorted(records, key=lambda r: r.class_index)
    assert [r.class_name for r in back].count("missile") == 2
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "d.jsonl:2: not valid JSON"),
        ('{"class_index": 1, "class_name": "x", "descriptors": ["a"]}', "d.jsonl:2: .*backend"),
        ('{"class_index": -1, "class_name": "x", "descriptors": ["a"], "backend": "b"}',
         "d.jsonl:2: .*class_index"),
        ('{"class_index": 1, "class_name": "x", "descriptors": [], "backend": "b"}',
         "d.jsonl:2: .*must say why"),
        ('{"class_index": 1, "class_name": "x", "descriptors": [" "], "backend": "b"}',
         "d.jsonl:2: .*non-empty"),
        ('{"class_index": 1, "class_name": "x", "descriptors": ["a"], "backend": "b", "extra": 1}',
         "d.jsonl:2: .*extra"),
        ('{"class_index": 0, "class_name": "x", "descriptors": ["a"], "backend": "b"}',
         "d.jsonl:2: class index 0 .* already given on line 1"),
    ],
)
def test_malformed_records_are_refused_with_line_number(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "d.jsonl"
    good = '{"class_index": 0, "class_name": "x", "descriptors": ["a"], "backend": "b"}'
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(DescgenError, match=message):
        read_store(path)


def test_missing_store_file(tmp_path: Path) -> None:
    with pytest.raises(DescgenError, match="absent.jsonl: no such descriptor store"):
        read_store(tmp_path / "absent.jsonl")


def test_check_against_classes() -> None:
    records = [_record(0, "tench", ["a"]), _record(1, "goldfish", ["b"])]
    check_against_classes(records, ["tench", "goldfish"], "d.jsonl")
    with pytest.raises(DescgenError, match="class index 1 is 'goldfish' in the store but 'carp'"):
        check_against_classes(records, ["tench", "carp"], "d.jsonl")
    with pytest.raises(DescgenError, match="beyond the class list's 1 classes"):
        check_against_classes(records, ["tench"], "d.jsonl")


def test_select_and_summarize() -> None:
    records = [_record(657, "missile", ["a", "b"]), _record(744, "missile", ["c"]),
               _record(1, "goldfish", [], error="empty")]
    assert [r.class_index for r in select_records(records, "missile")] == [657, 744]
    assert [r.class_index for r in select_records(records, "744")] == [744]
    with pytest.raises(DescgenError, match="no class 'carp'"):
        select_records(records, "carp")
    summary = summarize_store(records)
    assert summary[:3] == ["classes: 3", "descriptors per class: mean 1.00, min 0, max 2",
                           "classes without descriptors: 1"]
    assert summary[3] == "  1 goldfish: empty"


def test_imagenet_class_list_keeps_duplicates() -> None:
    names = load_classes(REPO / "data" / "classes" / "imagenet.txt")
    assert len(names) == 1000
    assert [i for i, n in enumerate(names) if n == "missile"] == [657, 744]
    assert [i for i, n in enumerate(names) if n == "sunglasses"] == [836, 837]
    assert names[0] == "tench" and names[-1] == "toilet paper"
    assert len(load_classes(REPO / "data" / "classes" / "cifar10.txt")) == 10
    assert len(load_classes(REPO / "data" / "classes" / "cifar100.txt")) == 100


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "class list is empty"), ("\n\n", "class list is empty"), ("a\n\nb\n", ":2: empty class name")],
)
def test_bad_class_lists(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(DescgenError, match=message):
        load_classes(path)


def test_class_list_trailing_blank_lines_and_spacing(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("great  white shark \ntench\n\n")
    assert load_classes(path) == ["great white shark", "tench"]


def test_records_serialise_options_as_json(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    write_store(path, [_record(0, "tench", ["a"])])
    data = json.loads(path.read_text())
    assert data["options"] == {"per_example": 4, "detailed": False, "instruction": "none",
                               "examples": 2, "bank": "default"}
    assert data["error"] is None and data["created_at"].endswith("Z") or "+00:00" in data["created_at"]
