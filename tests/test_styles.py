"""Prompt styles (issue 13): CuPL's questions and comparative pairs as released, generated through
the same cache, concurrency, resume and Batch API as the few-shot prompt; WaffleCLIP's concept;
and a sweep that compares every method on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_image_folder
from descriptor_gen.cli import main
from descriptor_gen.describe.classes import load_classes
from descriptor_gen.describe.parse import parse_cupl
from descriptor_gen.describe.store import read_store
from descriptor_gen.describe.styles import (
    ComparativeStyle,
    CuplStyle,
    comparative_prompts,
    concept_from_answer,
    concept_prompt,
    cupl_prompts,
    nearest_classes,
)
from descriptor_gen.generation.devserver import DevServer, ServerConfig
from descriptor_gen.score.features import encode_texts, load_clip
from descriptor_gen.paths import CachePaths

PROMPTS = CachePaths.resolve().prompts_dir
REPO = Path(__file__).resolve().parent.parent


def test_cupl_questions_are_the_released_ones() -> None:
    # sarahpratt/CuPL generate_image_prompts.py: "an" only before a capital vowel
    assert [p.text for p in cupl_prompts("axolotl", CuplStyle(), PROMPTS)] == [
        "Describe what a axolotl looks like", "How can you identify a axolotl?",
        "What does a axolotl look like?", "Describe an image from the internet of a axolotl",
        "A caption of an image of a axolotl:"]
    assert cupl_prompts("Afghan Hound", CuplStyle(), PROMPTS)[0].text == \
        "Describe what an Afghan Hound looks like"
    assert cupl_prompts("axolotl", CuplStyle(article="vowel"), PROMPTS)[0].text == \
        "Describe what an axolotl looks like"
    pets = cupl_prompts("Bengal", CuplStyle(questions="pets"), PROMPTS)
    assert [p.text for p in pets] == ["Describe what a Bengal pet looks like",
                                      "Visually describe a Bengal, a type of pet"]
    assert all(p.messages == [{"role": "user", "content": p.text}] for p in pets)
    assert parse_cupl(" It has a long body\n\nand fins") == [" It has a long bodyand fins."]


# Comparative-CLIP's generate_comparative_prompt (commit 1cef50fa) after random.seed(42), for
# classes [tench, goldfish, great white shark, tiger shark, Afghan Hound] with neighbours
# [[1, 2], [0, 3], [3, 0], [2, 1], [0, 1]]: the last prompt.
RELEASED_LAST_PROMPT = (
    "Q: What are useful features for distinguishing a Ford model T from a golf cart in the photo?"
    " Give the list of features, each beginning with a hyphen (-).\nA: There are several useful"
    " visual features to tell the photo is a Ford model T, not a golf cart.\n- metal body panels\n"
    "- doors\n- convertible roof\n- larger, rubber tires\n- Ford logo\n\nQ: What are useful"
    " features for distinguishing a apple pie from a waffle in the photo? Give the list of"
    " features, each beginning with a hyphen (-).\nA: There are several useful visual features to"
    " tell the photo is a apple pie, not a waffle.\n- a golden-brown, flaky crust\n- apple pieces\n"
    "- spiced apple mixture\n- round and deep shape\n- light to deep brown color\n\nQ: What are"
    " useful features for distinguishing a Afghan Hound from a goldfish in the photo? Give the list"
    " of features, each beginning with a hyphen (-).\nA: There are several useful visual features"
    " to tell the photo is a Afghan Hound, not a goldfish.\n")


def test_comparative_prompts_are_the_released_ones() -> None:
    classes = ["tench", "goldfish", "great white shark", "tiger shark", "Afghan Hound"]
    prompts = comparative_prompts(classes, [[1, 2], [0, 3], [3, 0], [2, 1], [0, 1]],
                                  ComparativeStyle(), PROMPTS)
    assert prompts[4][1].text == RELEASED_LAST_PROMPT
    assert prompts[4][1].messages == [{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": RELEASED_LAST_PROMPT}]
    assert [len(p) for p in prompts] == [2] * 5
    again = comparative_prompts(classes, [[1, 2], [0, 3], [3, 0], [2, 1], [0, 1]],
                                ComparativeStyle(), PROMPTS)
    assert [p.text for ps in again for p in ps] == [p.text for ps in prompts for p in ps]


def test_nearest_classes_by_text_similarity(tiny_clip: tuple[Path, Path]) -> None:
    config, checkpoint = tiny_clip
    clip = load_clip(str(config), str(checkpoint), "cpu")
    classes = ["tench", "goldfish", "shark", "eel", "carp", "trout"]
    found = nearest_classes(classes, 3, lambda t: encode_texts(clip, t))
    feats = encode_texts(clip, classes)
    for i, row in enumerate(found):
        sims = feats @ feats[i]
        sims[i] = -1
        assert row == np.argsort(sims)[-3:].tolist() and i not in row
    with pytest.raises(Exception, match="fewer than the 6 classes"):
        nearest_classes(classes, 6, lambda t: encode_texts(clip, t))


def test_concept_question_is_waffleclips() -> None:
    # WaffleCLIP generate_concepts.py: np.random.seed(0), 25 of the ImageNet keys
    prompt = concept_prompt(load_classes(REPO / "data/classes/imagenet_dclip.txt"), PROMPTS)
    assert prompt.text.startswith("Q: Tell me in five words or less what gyromitra, toaster,"
                                  " mongoose, filing cabinet, tent, bubble, eft, collie,")
    assert prompt.text.endswith(" have in common. It may be nothing. A: They are all ")
    assert concept_from_answer("Birds.\n") == "bird"
    assert concept_from_answer(" types of food?") == "types of food"


def _classes(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def test_generate_cupl_style(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = _classes(tmp_path, ["axolotl", "Afghan Hound"])
    out = tmp_path / "cupl.jsonl"
    with DevServer() as server:
        args = ["generate", "--preset", "cupl", "--classes", str(classes), "--out", str(out),
                "--base-url", server.base_url, "--cache-dir", str(tmp_path / "cache"),
                "--no-progress", "--concurrency", "8"]
        assert main(args) == 0
        assert server.count() == 2 * 5  # one request a question, 10 answers each
        bodies = [r["body"] for r in server.requests]
        assert {b["prompt"] for b in bodies} >= {"Describe what a axolotl looks like",
                                                 "A caption of an image of an Afghan Hound:"}
        assert all(b["n"] == 10 and b["stop"] == ["."] and b["max_tokens"] == 50
                   and b["temperature"] == 0.99 for b in bodies)
        records = read_store(out)
        assert [len(r.descriptors) for r in records] == [50, 50]
        assert all(d.endswith(".") and d.count(".") == 1 for r in records for d in r.descriptors)
        assert records[0].style == {"name": "cupl", "questions": "imagenet", "article": "cupl"}
        assert records[0].options is None and records[0].params["parser"] == "cupl"
        capsys.readouterr()
        out.unlink()
        assert main(args) == 0  # every answer cached: no request, the same store
        assert server.count() == 10
        assert "requests sent: 0; cache hits: 100" in capsys.readouterr().err


def test_a_question_asked_twice_draws_other_answers(tmp_path: Path) -> None:
    classes = _classes(tmp_path, ["A320"])
    out = tmp_path / "aircraft.jsonl"
    with DevServer() as server:
        assert main(["generate", "--preset", "cupl", "--questions", "fgvc_aircraft", "--seed", "0",
                     "--samples", "2", "--classes", str(classes), "--out", str(out),
                     "--base-url", server.base_url, "--cache-dir", str(tmp_path / "c"),
                     "--no-progress"]) == 0
        assert server.count() == 2
        assert sorted(r["body"]["seed"] for r in server.requests) == [0, 10_000]
    (record,) = read_store(out)
    assert len(record.descriptors) == 4 and len(set(record.descriptors)) == 4


def test_generate_comparative_style_live_resume_and_batch(tmp_path: Path,
                                                          tiny_clip: tuple[Path, Path]) -> None:
    config, checkpoint = tiny_clip
    names = ["tench", "goldfish", "shark", "eel"]
    classes = _classes(tmp_path, names)
    cache = tmp_path / "cache"
    clip_flags = ["--clip-model", str(config), "--clip-pretrained", str(checkpoint),
                  "--clip-device", "cpu"]
    with DevServer(ServerConfig(latency=0.02)) as server:
        out = tmp_path / "cmp.jsonl"
        args = ["generate", "--preset", "comparative", "--neighbours", "2", "--classes",
                str(classes), "--out", str(out), "--base-url", server.base_url, "--cache-dir",
                str(cache), "--no-progress", "--concurrency", "8", *clip_flags]
        assert main(args) == 0
        assert server.count("/chat/completions") == 4 * 2
        records = read_store(out)
        for record in records:
            others = record.style["neighbours"]
            assert len(others) == 2 and record.class_name not in others
            assert record.style["n"] == 2 and record.style["clip"]["model"]
            assert len(record.descriptors) == 2 * 3  # three bullets a pair, joined per class
            assert all(f"of {record.class_name}, unlike" in d for d in record.descriptors)
        clip = load_clip(str(config), str(checkpoint), "cpu")
        neighbours = nearest_classes(names, 2, lambda t: encode_texts(clip, t))
        expected = comparative_prompts(names, neighbours, ComparativeStyle(), PROMPTS)
        asked = {r["body"]["messages"][-1]["content"] for r in server.requests}
        assert asked == {p.text for ps in expected for p in ps}
        assert main(args) == 0  # resumed: every class is in the store
        assert server.count() == 8
        batch = tmp_path / "batch.jsonl"
        assert main([*args[:-len(clip_flags)], *clip_flags, "--out", str(batch), "--batch-api",
                     "--poll-seconds", "0", "--cache-dir", str(tmp_path / "other-cache")]) == 0
        ordered = sorted(read_store(batch), key=lambda r: r.class_index)
        assert [r.descriptors for r in ordered] == [
            r.descriptors for r in sorted(records, key=lambda r: r.class_index)]


def test_concept_command_asks_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = _classes(tmp_path, ["red circle", "blue square"])
    with DevServer() as server:
        args = ["concept", "--classes", str(classes), "--base-url", server.base_url,
                "--cache-dir", str(tmp_path / "c")]
        assert main(args) == 0
        assert capsys.readouterr().out.strip() == "shape"
        body = server.requests[0]["body"]
        assert body["temperature"] == 0 and body["max_tokens"] == 300
        assert main(args) == 0 and server.count() == 1


def _methods_spec(tmp_path: Path, tiny_clip: tuple[Path, Path], methods: list) -> Path:
    names = ["tench", "goldfish", "shark"]
    images = make_image_folder(tmp_path / "test", {n: 2 for n in names}, seed=0)
    train = make_image_folder(tmp_path / "train", {n: 2 for n in names}, seed=1)
    config, checkpoint = tiny_clip
    spec = {"name": "methods", "classes": str(_classes(tmp_path, names)), "dataset": str(images),
            "generation": {"backend": "openai", "model": "dev", "base_url": "http://127.0.0.1:9/v1",
                           "api": "completions", "temperature": 0.7, "max_tokens": 100,
                           "concurrency": 8},
            "clip": {"model": str(config), "pretrained": str(checkpoint), "device": "cpu",
                     "workers": 0},
            "grid": {"per_example": 1},
            "methods": [m if not isinstance(m, dict) else {k: (v.format(train=train) if isinstance(v, str) else v)
                                                          for k, v in m.items()} for m in methods]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_one_sweep_compares_every_method(tmp_path: Path, tiny_clip: tuple[Path, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    spec = _methods_spec(tmp_path, tiny_clip, [
        "classname", "descriptors", {"method": "waffle", "count": 2, "repeats": 2},
        {"method": "swapped", "repeats": 2}, "no-name", "cupl",
        {"method": "comparative", "neighbours": 1},
        {"method": "filtered", "style": "comparative", "neighbours": 1, "source": "{train}",
         "shots": 1, "keep": 3, "repeats": 2, "label": "comparative + filtering"},
        {"method": "autoclip", "base": "templates", "beta": 0.85}])
    out, cache = tmp_path / "results", tmp_path / "cache"
    with DevServer() as server:
        base = ["--set", f"generation.base_url={server.base_url}", "--cache-dir", str(cache),
                "--out", str(out)]
        assert main(["sweep", str(spec), *base, "--dry-run"]) == 0
        printed = capsys.readouterr().out
        # 3 few-shot + 3 x 5 CuPL questions + at most 3 x 1 comparative pairs
        assert "9 methods: 9 cells, 0 already done; LLM requests to send: 21" in printed
        assert main(["sweep", str(spec), *base]) == 0
        sent = server.count()
        assert sent == 3 + 15 + 3  # the comparative store is made once for both its methods
        rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        by = {r["method"]: r for r in rows}
        assert set(by) == {"classname", "descriptors", "waffle (count=2, repeats=2)",
                           "swapped (repeats=2)", "no-name", "cupl", "comparative",
                           "comparative + filtering", "autoclip (base=templates, beta=0.85)"}
        assert by["waffle (count=2, repeats=2)"]["llm_requests"] == 0
        assert len(by["swapped (repeats=2)"]["repeats"]) == 2
        assert by["swapped (repeats=2)"]["metrics_std"]["top1"] is not None
        assert by["cupl"]["llm_requests"] == 15 and by["cupl"]["setting"] == {"style": "cupl"}
        assert by["cupl"]["text"]["pooling"] == "renormalised"
        assert by["comparative"]["text"]["descriptor_text"] == "A photo of a {c}, {which} {d}."
        assert by["comparative + filtering"]["descriptor_file"] == by["comparative"]["descriptor_file"]
        assert sum(r["images_encoded"] for r in rows) == 6 + 6  # the test images, then the shots
        assert main(["sweep", str(spec), *base]) == 0
        assert server.count() == sent and len((out / "results.jsonl").read_text().splitlines()) == 9
        data = yaml.safe_load(spec.read_text())
        data["methods"][2]["repeats"] = 3
        spec.write_text(yaml.safe_dump(data))
        assert main(["sweep", str(spec), *base]) == 0
        new = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()][9:]
        assert [r["method"] for r in new] == ["waffle (count=2, repeats=3)"]
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| style: cupl | cupl |" in report and " ± " in report
    assert report.count("## methods") == 1 and "### run" not in report


def test_sweep_asks_the_concept_once(tmp_path: Path, tiny_clip: tuple[Path, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = _methods_spec(tmp_path, tiny_clip, ["classname"])
    data = yaml.safe_load(spec.read_text())
    data["clip"]["concept"] = "auto"
    spec.write_text(yaml.safe_dump(data))
    out, cache = tmp_path / "results", tmp_path / "cache"
    with DevServer() as server:
        base = ["--set", f"generation.base_url={server.base_url}", "--cache-dir", str(cache),
                "--out", str(out)]
        assert main(["sweep", str(spec), *base, "--dry-run"]) == 0
        assert "LLM requests to send: 1" in capsys.readouterr().out
        assert server.count() == 0
        assert main(["sweep", str(spec), *base]) == 0
        assert main(["sweep", str(spec), *base]) == 0
        assert server.count() == 1
    (row,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert row["concept"] == "shape" and row["identity"]["text"]["concept"]["auto"] == "shape"
    assert row["text"]["classname_text"] == "a photo of a {c}."
