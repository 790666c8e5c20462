from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import make_image_folder
from descriptor_gen.cli import main
from descriptor_gen.devserver import DevServer
from descriptor_gen.errors import DescgenError
from descriptor_gen.experiments import expand_grid, load_spec

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


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
        assert "4 settings x 3 methods; LLM requests to send: 12" in capsys.readouterr().out
        assert main(["sweep", str(spec_file), *base]) == 0
        sent = server.count()
        rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert sent == 4 * 3
        assert len(rows) == 4 * 2 + 1  # classname does not depend on the prompt: one row
        assert sum(r["images_encoded"] for r in rows) == 6
        assert {r["method"] for r in rows} == {"descriptors", "classname", "descriptors+templates"}
        assert all(r["llm_requests"] in (0, 3) for r in rows)
        assert main(["sweep", str(spec_file), *base, "--dry-run"]) == 0
        assert "LLM requests to send: 0" in capsys.readouterr().out
        assert main(["sweep", str(spec_file), *base]) == 0
        assert server.count() == sent
        assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## two-by-two" in report and "**(best)**" in report
    for figure in ("two-by-two_fig1_top1.png", "two-by-two_fig2_entropy.png"):
        assert (out / figure).read_bytes().startswith(PNG)


def test_only_filters_the_grid(spec_file: Path) -> None:
    spec = load_spec(spec_file)
    assert len(expand_grid(spec)) == 4
    assert [s.per_example for s in expand_grid(spec, ["detailed=true"])] == [1, 3]
    assert len(expand_grid(spec, ["per_example=3", "detailed=false"])) == 1
    with pytest.raises(DescgenError, match="--only 'colour=red'"):
        expand_grid(spec, ["colour=red"])


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
    grid = expand_grid(spec)
    expected = {"count": 14, "instruction": 4, "examples": 6, "baselines": 1}[name]
    assert len(grid) == expected


def test_report_without_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err
