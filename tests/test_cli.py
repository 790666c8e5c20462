from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from descriptor_gen.cli import main
from descriptor_gen.describe.store import read_store

REPO = Path(__file__).resolve().parent.parent
DESCGEN = Path(sys.executable).parent / "descgen"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_prints_default_prompt() -> None:
    result = subprocess.run([str(DESCGEN), "prompt", "tench"], capture_output=True, text=True,
                            check=False, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Q: What are useful visual features for distinguishing a lemur")
    assert result.stdout.endswith("there is a tench in a photo:\n-\n")


def test_prompt_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "prompt", "axolotl", "--per-example", "3", "--detailed",
                       "--examples", "1", "--instruction", "role")
    assert code == 0
    assert out.startswith("You are a visual description generator.")
    assert out.count("\n- ") == 3 and out.endswith("an axolotl in a photo:\n-\n")


def test_prompt_chat_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "prompt", "tench", "--chat", "--instruction", "rule")
    messages = json.loads(out)
    assert code == 0 and [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].endswith("there is a tench in a photo:")


def test_parse_file_and_stdin(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    answer = tmp_path / "answer.txt"
    answer.write_text(" large scales\n- two dorsal fins\n- tench: red eyes\n\nQ: next")
    code, out, _ = run(capsys, "parse", str(answer), "--class-name", "tench")
    assert code == 0 and out.splitlines() == ["large scales", "two dorsal fins", "red eyes"]
    monkeypatch.setattr(sys, "stdin", open(answer))
    code, out, _ = run(capsys, "parse", "-")
    assert code == 0 and out.splitlines()[0] == "large scales"


def test_import_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path, shared_data: Path) -> None:
    out_path = tmp_path / "store.jsonl"
    code, _, err = run(capsys, "import", str(shared_data / "dclip" / "descriptors_imagenet.json"),
                       "--format", "dclip", "--classes", str(REPO / "data/classes/imagenet.txt"),
                       "--out", str(out_path))
    assert code == 0
    assert "2 in the class list but not in the file: newt, tights" in err
    assert "in the file but not in the class list: eft, maillot, projectile, sunglass" in err
    assert len(read_store(out_path)) == 1000
    code, out, _ = run(capsys, "show", str(out_path))
    assert code == 0 and out.splitlines()[0] == "classes: 1000"
    code, out, _ = run(capsys, "show", str(out_path), "--class", "missile")
    assert code == 0 and out.count("# ") == 2


def test_import_cupl_by_order_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "c.json"
    src.write_text(json.dumps({"eft": [" A small newt. "], "goldfish": ["An orange fish."]}))
    classes = tmp_path / "classes.txt"
    classes.write_text("newt\ngoldfish\n")
    out_path = tmp_path / "s.jsonl"
    code, _, err = run(capsys, "import", str(src), "--format", "cupl", "--classes", str(classes),
                       "--out", str(out_path), "--match", "order")
    assert code == 0 and "0: newt <- eft" in err
    assert [r.descriptors for r in read_store(out_path)] == [[" A small newt. "], ["An orange fish."]]


def _one_line_error(code: int, out: str, err: str, needle: str) -> None:
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("descgen: error: ") and needle in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["prompt", "tench", "--instruction", "rol"], "unknown instruction 'rol'"),
        (["prompt", "tench", "--per-example", "0"], "--per-example"),
        (["prompt", "tench", "--per-example", "many"], "--per-example"),
        (["prompt", "tench", "--examples", "40"], "examples=40 asks for more"),
        (["prompt", "tench", "--bank", "nope"], "unknown example bank 'nope'"),
        (["prompt", "tench", "--colour"], "No such option: --colour"),
        (["parse", "/no/such/answer.txt"], "/no/such/answer.txt: no such answer file"),
    ],
)
def test_bad_input_gets_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    _one_line_error(*run(capsys, *args), needle)


def test_empty_class_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    classes = tmp_path / "empty.txt"
    classes.write_text("\n")
    src = tmp_path / "d.json"
    src.write_text("{}")
    code, out, err = run(capsys, "import", str(src), "--format", "dclip", "--classes", str(classes),
                         "--out", str(tmp_path / "o.jsonl"))
    _one_line_error(code, out, err, "empty.txt: class list is empty")
    assert not (tmp_path / "o.jsonl").exists()


def test_non_json_import_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "d.json"
    src.write_text("tench: a fish\n")
    classes = tmp_path / "c.txt"
    classes.write_text("tench\n")
    code, out, err = run(capsys, "import", str(src), "--format", "cupl", "--classes", str(classes),
                         "--out", str(tmp_path / "o.jsonl"))
    _one_line_error(code, out, err, "d.json:1: not valid JSON")


def test_unknown_import_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "import", "x.json", "--format", "waffle", "--classes", "c.txt",
                         "--out", str(tmp_path / "o.jsonl"))
    _one_line_error(code, out, err, "--format")


def test_malformed_jsonl_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store = tmp_path / "s.jsonl"
    good = '{"class_index": 0, "class_name": "x", "descriptors": ["a"], "backend": "b"}'
    store.write_text(f"{good}\n{good[:-5]}\n")
    _one_line_error(*run(capsys, "show", str(store)), "s.jsonl:2: not valid JSON")


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("prompt", "parse", "import", "show"):
        assert command in out
    code, out, _ = run(capsys, "prompt", "--help")
    assert code == 0 and "--per-example" in out and "--instruction" in out


def test_prompt_with_the_dclip_bank_prints_it_as_sent(capsys: pytest.CaptureFixture[str]) -> None:
    from test_prompts import DCLIP_TENCH

    code, out, _ = run(capsys, "prompt", "tench", "--bank", "dclip")
    assert code == 0 and out == DCLIP_TENCH
    code, out, _ = run(capsys, "prompt", "tench", "--bank", "dclip", "-k", "2")
    assert code == 0 and out.count("\n- ") == 4
    code, _, err = run(capsys, "prompt", "tench", "--bank", "dclip", "--detailed")
    assert code == 2 and "no detailed descriptors" in err


def test_parse_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answer = tmp_path / "a.txt"
    answer.write_text(" a thick body\n- red eyes\n- a large,")
    assert run(capsys, "parse", str(answer), "--truncated")[1] == "a thick body\nred eyes\n"
    assert run(capsys, "parse", str(answer), "--parser", "dclip")[1] == "red eyes\na large,\n"


def test_show_counts_truncated_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from descriptor_gen.describe.store import DescriptorRecord, write_store

    store = tmp_path / "s.jsonl"
    write_store(store, [DescriptorRecord(class_index=0, class_name="tench", descriptors=["fin"],
                                         backend="t", truncated=True, finish_reasons=["length"]),
                        DescriptorRecord(class_index=1, class_name="carp", descriptors=["fin"],
                                         backend="t")])
    code, out, _ = run(capsys, "show", str(store))
    assert code == 0 and "classes with an answer cut at the token limit: 1" in out


def test_the_command_table_is_what_each_module_defines() -> None:
    """`descgen --help` lists the commands from a table, so that no command module is
    imported for it: each entry names the module that defines the command, with the first
    paragraph of its help, and every command a module defines is in the table."""
    import importlib
    import inspect

    import typer

    from descriptor_gen.cli import COMMANDS, command_of

    modules = {c.module for c in COMMANDS}
    defined = {}
    for module in modules:
        app = importlib.import_module(f"descriptor_gen.cli.{module}").app
        for info in app.registered_commands:
            defined[info.name] = (module, inspect.getdoc(info.callback).split("\n\n")[0])
    assert {c.name for c in COMMANDS} == set(defined)
    for c in COMMANDS:
        module, doc = defined[c.name]
        assert (module, " ".join(doc.split())) == (c.module, c.summary)
        assert command_of(c.name).name == c.name
    assert command_of("no-such-command") is None
    assert isinstance(typer.main.get_command(importlib.import_module("descriptor_gen.cli").app),
                      importlib.import_module("descriptor_gen.cli").LazyGroup)
