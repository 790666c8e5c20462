from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import make_image_folder
from descriptor_gen.cli import main
from descriptor_gen.generation.devserver import DevServer
from descriptor_gen.errors import DescgenError
from descriptor_gen.experiments.plan import expand_grid
from descriptor_gen.experiments.specs import load_spec
from descriptor_gen.describe.prompts import PromptLibrary
from descriptor_gen.paths import CachePaths

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"
LIBRARY = PromptLibrary(CachePaths.resolve().prompts_dir)


@pytest.fixture
def spec_file(tmp_path: Path, tiny_clip: tuple[Path, Path]) -> Path:
    images = make_image_folder(tmp_path / "images", {"tench": 2, "goldfish": 2, "axolotl": 2})
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\naxolotl\n")
    config, checkpoint = tiny_clip
    spec = {
        "name": "two-by-two", "classes": str(classes), "dataset": str(images),
        "generation": {"backend": "openai", "model": "dev", "base_url": "http://127.0.0.1:9/v1",
                       "api": "completions", "temperature": 0.7, "max_tokens": 100},
        "clip": {"model": str(config), "pretrained": str(checkpoint), "precision": "fp32",
                 "device": "cpu", "workers": 0},
        "grid": {"per_example": [1, 3], "detailed": [False, True]},
        "methods": ["descriptors", "classname", "descriptors+templates"],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_report_and_rerun(spec_file: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    cache = tmp_path / "cache"
    with DevServer() as server:
        base = ["--set", f"generation.base_url={server.base_url}", "--cache-dir", str(cache),
                "--out", str(out)]
        assert main(["sweep", str(spec_file), *base, "--dry-run"]) == 0
        assert ("4 settings x 3 methods: 9 cells, 0 already done; LLM requests to send: 12"
                in capsys.readouterr().out)
        assert main(["sweep", str(spec_file), *base]) == 0
        sent = server.count()
        rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert sent == 4 * 3
        assert len(rows) == 4 * 2 + 1  # classname does not depend on the prompt: one row
        assert sum(r["images_encoded"] for r in rows) == 6
        assert {r["method"] for r in rows} == {"descriptors", "classname", "descriptors+templates"}
        assert all(r["llm_requests"] in (0, 3) for r in rows)
        assert main(["sweep", str(spec_file), *base, "--dry-run"]) == 0
        assert "9 cells, 9 already done; LLM requests to send: 0" in capsys.readouterr().out
        assert main(["sweep", str(spec_file), *base]) == 0
        assert server.count() == sent
        assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## two-by-two" in report and "**(best)**" in report
    for figure in ("two-by-two_fig1_top1.png", "two-by-two_fig2_entropy.png"):
        assert (out / figure).read_bytes().startswith(PNG)
    _check_rows_and_figures(spec_file, rows, report, tmp_path)


def _check_rows_and_figures(spec_file: Path, rows: list[dict], report: str, tmp_path: Path) -> None:
    """Each row is the evaluation of its own cell, recomputed here from its descriptor file
    and recorded provenance; the report's tables and figures show exactly those numbers."""
    from descriptor_gen.score.evaluate import EvalConfig, evaluate
    from descriptor_gen.experiments.report import line_series
    from descriptor_gen.describe.store import read_store

    spec = yaml.safe_load(spec_file.read_text())
    classes = Path(spec["classes"]).read_text().split()
    for row in rows:
        cfg = EvalConfig(dataset=spec["dataset"], descriptors=row["descriptor_file"],
                         method=row["method"], model=spec["clip"]["model"],
                         pretrained=spec["clip"]["pretrained"], device="cpu", workers=0)
        again = evaluate(cfg, classes, tmp_path / "fresh-cache", CachePaths.resolve().prompts_dir)
        assert again.metrics == pytest.approx(row["metrics"]), row["method"]
        if row["descriptor_file"]:
            records = read_store(row["descriptor_file"])
            assert all(r.options.model_dump() == row["setting"] for r in records)
            assert all(r.model == row["identity"]["generation"]["model"] for r in records)
        top1 = f"{100 * row['metrics']['top1']:.2f}"
        assert any(f"| {row['method']} | {top1} |" in line for line in report.split("\n"))
    described = [r for r in rows if r["method"] == "descriptors"]
    series = line_series(rows, "top1")
    assert set(series) == {"short phrases", "detailed"}
    for label, points in series.items():
        mine = sorted((r["setting"]["per_example"], 100 * r["metrics"]["top1"]) for r in described
                      if r["setting"]["detailed"] == (label == "detailed"))
        assert points == mine


def test_only_filters_the_grid(spec_file: Path) -> None:
    spec = load_spec(spec_file)
    assert len(expand_grid(spec, LIBRARY)) == 4
    assert [s.per_example for s in expand_grid(spec, LIBRARY, ["detailed=true"])] == [1, 3]
    assert len(expand_grid(spec, LIBRARY, ["per_example=3", "detailed=false"])) == 1
    with pytest.raises(DescgenError, match="--only 'colour=red'"):
        expand_grid(spec, LIBRARY, ["colour=red"])


def test_grid_defaults_come_from_the_bank(spec_file: Path) -> None:
    spec = load_spec(spec_file, ["grid.per_example=null", "grid.detailed=null", "grid.bank=[default, dclip]"])
    settings = expand_grid(spec, LIBRARY)
    assert [(s.bank, s.per_example, s.examples) for s in settings] == [("default", 7, 2), ("dclip", "all", 2)]


@pytest.mark.parametrize(
    ("patch", "needle"),
    [({"grid": {"per_exmaple": [1]}}, "grid.per_exmaple: unknown key"),
     ({"clip": {"modle": "x"}}, "clip.modle: unknown key"),
     ({"method": ["descriptors"]}, "method: unknown key"),
     ({"methods": ["best"]}, "unknown method 'best'")],
)
def test_spec_typos_name_the_key(spec_file: Path, patch: dict, needle: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(spec_file.read_text())
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    spec_file.write_text(yaml.safe_dump(data))
    assert main(["sweep", str(spec_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["count", "instruction", "examples", "baselines"])
def test_shipped_specs_are_valid(name: str) -> None:
    spec = load_spec(REPO / "data" / "experiments" / f"{name}.yaml")
    grid = expand_grid(spec, LIBRARY)
    expected = {"count": 14, "instruction": 4, "examples": 6, "baselines": 1}[name]
    assert len(grid) == expected


def test_report_without_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _another_checkpoint(tiny_clip: tuple[Path, Path], path: Path) -> Path:
    import open_clip
    import torch

    torch.manual_seed(1)
    model = open_clip.create_model("tiny-clip-test", pretrained=None)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


CHANGES = {
    # change -> (descriptor cells run again, baseline cell runs again)
    "generation.model": (["--set", "generation.model=other-model"], True, False),
    "generation.temperature": (["--set", "generation.temperature=0.2"], True, False),
    "generation.max_tokens": (["--set", "generation.max_tokens=300"], True, False),
    "generation.seed": (["--set", "generation.seed=5"], True, False),
    "generation.samples": (["--set", "generation.samples=2"], True, False),
    "generation.parser": (["--set", "generation.parser=dclip"], True, False),
    "generation.api": (["--set", "generation.api=chat"], True, False),
    "clip.precision": (["--set", "clip.precision=bf16"], True, True),
    "clip.descriptor_template": (["--set", "clip.descriptor_template=dclip-imagenet"], True, True),
    "clip.classname_template": (["--set", "clip.classname_template=bare"], True, True),
    "clip.pooling": (["--set", "clip.pooling=renormalised"], True, True),
    "clip.on_empty": (["--set", "clip.on_empty=blank"], True, True),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_rerun_with_any_other_input_runs_again(spec_file: Path, tmp_path: Path, change: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The stale-result bug: a cell is done only when every input that can change it matches."""
    args, descriptors_again, baseline_again = CHANGES[change]
    out, cache = tmp_path / "results", tmp_path / "cache"
    with DevServer() as server:
        base = ["--set", f"generation.base_url={server.base_url}", "--cache-dir", str(cache),
                "--out", str(out), "--only", "per_example=1", "--only", "detailed=false",
                "--set", "methods=[descriptors, classname]"]
        assert main(["sweep", str(spec_file), *base]) == 0
        first = _rows(out)
        assert main(["sweep", str(spec_file), *base, *args]) == 0
    capsys.readouterr()
    new = _rows(out)[len(first):]
    assert sorted(r["method"] for r in new) == sorted(
        (["descriptors"] if descriptors_again else []) + (["classname"] if baseline_again else []))
    assert _rows(out)[: len(first)] == first  # nothing overwritten
    for row in new:
        assert row["cell"] not in {r["cell"] for r in first}


@pytest.mark.parametrize("what", ["weights", "dataset", "classes", "bank"])
def test_changed_files_behind_the_same_paths_run_again(spec_file: Path, tmp_path: Path,
                                                       tiny_clip: tuple[Path, Path], what: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint, an image folder, a class list or an example bank edited in place."""
    import shutil

    checkpoint = shutil.copy(tiny_clip[1], tmp_path / "weights.pt")
    bank = tmp_path / "bank.yaml"
    bank.write_text("name: b\nobjects:\n  - {name: kite, short: [diamond shape]}\n")
    out, cache = tmp_path / "results", tmp_path / "cache"
    data = yaml.safe_load(spec_file.read_text())
    with DevServer() as server:
        base = ["--set", f"generation.base_url={server.base_url}", "--cache-dir", str(cache),
                "--out", str(out), "--set", f"clip.pretrained={checkpoint}",
                "--set", f"grid={{per_example: 1, examples: 1, bank: {bank}}}",
                "--set", "methods=[descriptors, classname]"]
        assert main(["sweep", str(spec_file), *base]) == 0
        first = _rows(out)
        assert main(["sweep", str(spec_file), *base]) == 0
        assert len(_rows(out)) == len(first) == 2
        if what == "weights":
            _another_checkpoint(tiny_clip, Path(checkpoint))
        elif what == "dataset":
            make_image_folder(Path(data["dataset"]), {"tench": 3}, seed=5)
        elif what == "classes":
            Path(data["classes"]).write_text("Tench\ngoldfish\naxolotl\n")
            (Path(data["dataset"]) / "tench").rename(Path(data["dataset"]) / "Tench")
        else:
            bank.write_text("name: b\nobjects:\n  - {name: kite, short: [paper sail]}\n")
        assert main(["sweep", str(spec_file), *base]) == 0
    capsys.readouterr()
    new = _rows(out)[len(first):]
    expected = ["descriptors"] if what == "bank" else ["classname", "descriptors"]
    assert sorted(r["method"] for r in new) == expected


def test_rows_record_their_identity_and_reports_keep_runs_apart(spec_file: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out, cache = tmp_path / "results", tmp_path / "cache"
    with DevServer() as server:
        base = ["--set", f"generation.base_url={server.base_url}", "--cache-dir", str(cache),
                "--out", str(out), "--only", "detailed=false", "--set", "methods=[descriptors, classname]"]
        assert main(["sweep", str(spec_file), *base]) == 0
        assert main(["sweep", str(spec_file), *base, "--set", "generation.model=second"]) == 0
    rows = _rows(out)
    assert len(rows) == 2 + 1 + 2  # two settings x two models, and one class-name row
    described = [r for r in rows if r["method"] == "descriptors"]
    assert [r["identity"]["generation"]["model"] for r in described] == ["dev", "dev", "second", "second"]
    for row in rows:
        identity = row["identity"]
        assert identity["clip"]["weights"].startswith("file:") and identity["clip"]["precision"] == "fp32"
        assert len(identity["classes"]) == 64 and len(identity["data"]["files"]) == 64
        assert row["text"]["classname_text"] == "a photo of a {c}."
        assert (identity["generation"] is None) == (row["method"] == "classname")
    stores = {r["descriptor_file"] for r in described}
    assert len(stores) == 4  # each model's descriptors in files of their own
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert report.count("### run ") == 2
    assert "### run 1: generation.model=dev" in report and "### run 2: generation.model=second" in report
    first, second = report.split("### run 2")
    for part in (first, second):
        assert part.count("| descriptors |") == 2 and part.count("| classname |") == 1
    for figure in ("two-by-two_run1_fig1_top1.png", "two-by-two_run2_fig1_top1.png"):
        assert (out / figure).read_bytes().startswith(PNG)


def test_a_cells_identity_names_the_pixels_it_was_scored_on(spec_file: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`clip.decode: torch` cells name what made their pixels (the decoding library, the device
    kind, the resize's passes), as the feature cache does, so a cell scored on other pixels
    (before this resize, on another device, by another library) is scored again, not skipped."""
    from descriptor_gen.experiments.plan import SweepIdentity
    from descriptor_gen.score import jpeg
    from descriptor_gen.score.decode import pass_order

    prompts = CachePaths.resolve().prompts_dir

    def evaluation(*overrides: str) -> dict:
        spec = load_spec(spec_file, list(overrides))
        return SweepIdentity.of(spec, tmp_path / "cache", prompts, ask=False).evaluation

    from descriptor_gen.score import decode

    with monkeypatch.context() as pillow:
        pillow.setattr(decode, "pass_order", lambda: "pillow-13")
        assert "decode" not in evaluation()  # pil under Pillow 13: the identities cells always had
        assert evaluation("clip.decode=pil-draft")["decode"] == "decode:pil-draft"
        pillow.setattr(decode, "pass_order", lambda: "horizontal-first")  # Pillow 12's order
        assert evaluation()["decode"] == "resize:horizontal-first"
        assert evaluation("clip.decode=pil-draft")["decode"] == "decode:pil-draft resize:horizontal-first"
    by_torchvision = evaluation("clip.decode=torch")["decode"]
    assert by_torchvision.startswith("decode:torch-cpu") and by_torchvision.endswith(pass_order())
    monkeypatch.setattr(jpeg, "defines_decode_jpeg", lambda d: d.name == "torchcodec")
    jpeg.jpeg_decoder.cache_clear()
    try:
        assert evaluation("clip.decode=torch")["decode"] != by_torchvision
    finally:
        jpeg.jpeg_decoder.cache_clear()


def test_reproduce_dclip_spec_end_to_end(tmp_path: Path, tiny_clip: tuple[Path, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped spec, pointed at a tiny CLIP, a few classes and the dev server: the preset's
    requests, DCLIP's text forms, and a published file scored in the same table."""
    from test_prompts import dclip_generate_prompt

    names = ["tench", "eft", "sunglass"]
    images = make_image_folder(tmp_path / "images", {n: 2 for n in names})
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(names) + "\n")
    published = tmp_path / "descriptors_imagenet.json"
    published.write_text(json.dumps({"tench": ["a freshwater fish"], "eft": [],
                                     "sunglass": ["dark lenses", "used for shade"]}))
    config, checkpoint = tiny_clip
    out = tmp_path / "out"
    with DevServer() as server:
        code = main(["sweep", str(REPO / "data" / "experiments" / "dclip_imagenet.yaml"),
                     "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                     "--set", f"classes={classes}", "--set", f"dataset={images}",
                     "--set", f"generation.base_url={server.base_url}",
                     "--set", f"clip.model={config}", "--set", f"clip.pretrained={checkpoint}",
                     "--set", "clip.precision=fp32", "--set", "clip.device=cpu",
                     "--set", "clip.workers=0",
                     "--set", f"stores={{published: {{path: {published}, format: dclip}}}}"])
        bodies = [r["body"] for r in server.requests]
    assert code == 0, capsys.readouterr().err
    assert sorted(b["prompt"] for b in bodies) == sorted(dclip_generate_prompt(n) for n in names)
    assert all(b["temperature"] == 0.0 and b["max_tokens"] == 100 and "stop" not in b for b in bodies)
    rows = _rows(out)
    assert [(r["method"], r["setting"].get("store", r["setting"].get("bank"))) for r in rows] == [
        ("classname", None), ("descriptors", "dclip"), ("descriptors", "published")]
    for row in rows:
        assert row["text"]["descriptor_text"] == "{c}, {which} {d}."
        assert row["text"]["classname_text"] == "{c}." and row["text"]["on_empty"] == "blank"
    imported = [json.loads(x) for x in Path(rows[2]["descriptor_file"]).read_text().splitlines()]
    assert [r["descriptors"] for r in imported] == [["a freshwater fish"], [], ["dark lenses", "used for shade"]]
    assert rows[2]["identity"]["store"]["format"] == "dclip"
    assert main(["report", str(out)]) == 0
    table = [line.split(" | ") for line in (out / "report.md").read_text().split("\n")
             if line.startswith("| ") and "---" not in line][1:]
    assert [(cells[0].replace(" **(best)**", "").lstrip("| "), cells[1]) for cells in table] == [
        ("(baseline)", "classname"), ("bank=dclip", "descriptors"), ("store: published", "descriptors")]
    assert all(cells[3] == "-" for cells in table)  # top-5 is undefined with three classes
