"""A researcher's first hour (issue 23): the versions, a tiny CLIP for a smoke run, and the dev
server as a command, run as a user runs them (the installed `descgen`, in subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_image_folder

DESCGEN = str(Path(sys.executable).parent / "descgen")


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DESCGEN, *args], capture_output=True, text=True, timeout=timeout)


def test_version_names_the_package_and_its_stack() -> None:
    done = _run("--version")
    assert done.returncode == 0 and done.stdout.startswith("descgen 0.1.0 (open_clip ")
    assert "torch" in done.stdout and not done.stderr


def test_tiny_clip_writes_a_model_every_command_takes(tmp_path: Path) -> None:
    done = _run("tiny-clip", str(tmp_path / "tiny"))
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    flags = done.stdout.split()
    assert flags[0] == "--model" and flags[2] == "--pretrained"
    assert json.loads(Path(flags[1]).read_text())["embed_dim"] == 32
    images = make_image_folder(tmp_path / "images", {"tench": 2, "goldfish": 2})
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\n")
    scored = _run("eval", "--dataset", str(images), "--classes", str(classes), "--method",
                  "classname", *flags, "--device", "cpu", "--cache-dir", str(tmp_path / "cache"))
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout.startswith("classname: top-1 ")


def test_serve_then_generate_then_eval_offline(tmp_path: Path) -> None:
    """The README's offline tour: a dev server, descriptors from it (its answers file's for one
    class), a tiny CLIP, and an evaluation; Ctrl-C stops the server cleanly."""
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"tench": ["an olive-green body", "a thick tail"]}))
    server = subprocess.Popen([DESCGEN, "serve", "--port", "0", "--answers", str(answers)],
                              stderr=subprocess.PIPE, text=True)
    try:
        first = server.stderr.readline()  # type: ignore[union-attr]
        assert "an OpenAI-compatible dev server at http://127.0.0.1:" in first, first
        url = first.split(" at ")[1].split()[0]
        assert server.stderr.readline().strip().startswith("descgen generate")  # type: ignore[union-attr]
        classes = tmp_path / "classes.txt"
        classes.write_text("tench\ngoldfish\n")
        store = tmp_path / "d.jsonl"
        made = _run("generate", "--classes", str(classes), "--base-url", url, "--model", "dev",
                    "--out", str(store), "--cache-dir", str(tmp_path / "cache"), "--no-progress")
        assert made.returncode == 0, made.stderr
    finally:
        server.send_signal(signal.SIGINT)
        _, rest = server.communicate(timeout=30)
    assert server.returncode == 0 and rest.strip().endswith("dev server stopped"), rest
    records = {r["class_name"]: r for r in map(json.loads, store.read_text().splitlines())}
    assert records["tench"]["descriptors"] == ["an olive-green body", "a thick tail"]  # its answers
    assert "goldfish" in records["goldfish"]["descriptors"][0]  # the server's canned answer
    # (records are appended as classes finish, in any order)
    flags = _run("tiny-clip", str(tmp_path / "tiny")).stdout.split()
    images = make_image_folder(tmp_path / "images", {"tench": 2, "goldfish": 2})
    scored = _run("eval", "--dataset", str(images), "--classes", str(classes), "--descriptors",
                  str(store), *flags, "--device", "cpu", "--cache-dir", str(tmp_path / "cache"))
    assert scored.returncode == 0 and scored.stdout.startswith("descriptors: top-1"), scored.stderr


def test_the_module_form_of_the_server_runs_too() -> None:
    server = subprocess.Popen([sys.executable, "-m", "descriptor_gen.generation.devserver", "0"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert "dev server at http://127.0.0.1:" in server.stdout.readline()  # type: ignore[union-attr]
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_server_stops_cleanly_on_ctrl_c_or_kill_even_when_started_in_the_background(stop: int) -> None:
    """A job started with `&` by a non-interactive shell (a script, `make`) starts with SIGINT
    ignored, where Python raises no KeyboardInterrupt; `kill` sends SIGTERM. Both stop it
    cleanly. (Found by a fresh clone's `make test` run in the background.)"""
    server = subprocess.Popen([DESCGEN, "serve", "--port", "0"], stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert "dev server at http://127.0.0.1:" in server.stderr.readline()  # type: ignore[union-attr]
    finally:
        server.send_signal(stop)
        _, rest = server.communicate(timeout=30)
    assert server.returncode == 0 and rest.strip().endswith("dev server stopped"), rest


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _run("serve", "--port", str(taken.getsockname()[1]), timeout=30)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "cannot listen" in lines[0], done.stderr


@pytest.mark.parametrize("content", ['["tench"]', '{"tench": "fins"}', "not json"])
def test_an_answers_file_of_another_shape_is_one_line(tmp_path: Path, content: str) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(content)
    done = _run("serve", "--answers", str(answers), timeout=30)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("descgen: error: ")


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """No weights cached (an empty Hugging Face home) and the hub declared offline."""
    return {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


def test_weights_that_are_not_here_are_one_line_in_seconds(tmp_path: Path) -> None:
    import time

    images = make_image_folder(tmp_path / "images", {"tench": 2, "goldfish": 2})
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\n")
    common = ["--classes", str(classes), "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    commands = {
        "eval": ["eval", "--dataset", str(images), "--method", "classname", *common],
        "learn": ["learn", "coop", "--dataset", str(images), "--shots", "1", "--out",
                  str(tmp_path / "run"), "--no-progress", *common],
    }
    for name, args in commands.items():
        started = time.monotonic()
        done = subprocess.run([DESCGEN, *args], capture_output=True, text=True, timeout=120,
                              env=_offline_env(tmp_path))
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (name, done.stderr[-2000:])
        assert "CLIP weights ViT-B-32 / openai are not on this machine" in lines[0]
        assert "--pretrained FILE" in lines[0] and lines[0].endswith("a cache that holds them")
        assert time.monotonic() - started < 60, name
    assert not (tmp_path / "run").exists()


def test_cached_weights_pass_the_check(tmp_path: Path) -> None:
    """A Hugging Face cache holding the file (the hub's own layout) is enough; a tag open_clip
    does not know is left to open_clip's own error."""
    from descriptor_gen.score.weights import check_weights

    repo = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"x")
    check_weights("ViT-B-32", "openai", hub_cache=str(tmp_path / "hub"))
    check_weights("ViT-B-32", "no-such-tag", hub_cache=str(tmp_path / "hub"))


def test_a_store_says_which_class_list_it_was_made_with(tmp_path: Path) -> None:
    """The README's tour: a published file imported with one wording of the class names, then
    scored on data named another way, says which --classes to add, and that works."""
    published = tmp_path / "descriptors.json"
    published.write_text(json.dumps({"tinca tinca": ["olive-green body"], "goldfish": ["orange"]}))
    theirs, ours = tmp_path / "theirs.txt", tmp_path / "ours.txt"
    theirs.write_text("tinca tinca\ngoldfish\n")
    ours.write_text("tench\ngoldfish\n")
    store = tmp_path / "store.jsonl"
    assert _run("import", str(published), "--format", "dclip", "--classes", str(theirs),
                "--out", str(store)).returncode == 0
    flags = _run("tiny-clip", str(tmp_path / "tiny")).stdout.split()
    images = make_image_folder(tmp_path / "images", {"tench": 2, "goldfish": 2})
    manifest = tmp_path / "test.csv"  # labels by index, as a card's are
    manifest.write_text("".join(f"{p},{int(p.parent.name == 'goldfish')}\n"
                                for p in sorted(images.rglob("*.png"))))
    args = ["eval", "--dataset", str(manifest), "--descriptors", str(store), *flags, "--device",
            "cpu", "--cache-dir", str(tmp_path / "cache")]
    refused = _run(*args, "--classes", str(ours))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert f"the store was made with --classes {theirs}: give that --classes" in lines[0]
    assert "(1 of 2 names differ)" in lines[0]
    assert _run(*args, "--classes", str(theirs)).returncode == 0


def test_the_default_method_without_a_store_names_the_ways_forward(tmp_path: Path) -> None:
    """CLIP_benchmark's first command: no store, the default method."""
    flags = _run("tiny-clip", str(tmp_path / "tiny")).stdout.split()
    images = make_image_folder(tmp_path / "images", {"tench": 2, "goldfish": 2})
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\n")
    done = _run("eval", "--dataset", str(images), "--classes", str(classes), *flags, "--device",
                "cpu", "--cache-dir", str(tmp_path / "cache"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1
    for words in ("descgen generate", "descgen import", "--method classname", "templates"):
        assert words in lines[0], words


def test_long_work_shows_itself_in_a_piped_log(tmp_path: Path) -> None:
    """A sweep prints a line per finished cell (k/N, top-1 in percent, elapsed, time left) and
    ends with its report; `learn` piped draws no bar but a line per epoch."""
    import re

    import yaml

    flags = _run("tiny-clip", str(tmp_path / "tiny")).stdout.split()
    images = make_image_folder(tmp_path / "images", {"tench": 2, "goldfish": 2})
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "night", "classes": str(classes), "dataset": str(images),
        "generation": {"backend": "openai", "model": "dev", "base_url": "http://127.0.0.1:9/v1"},
        "clip": {"model": flags[1], "pretrained": flags[3], "device": "cpu", "workers": 0},
        "methods": ["classname", "templates"]}))
    done = _run("sweep", str(spec), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    cells = [x for x in done.stderr.splitlines() if x.startswith("[")]
    assert len(cells) == 2 and re.match(r"\[1/2\] night: .* top-1 \d+\.\d\d%  \(\d+ s elapsed, about \d+ s left\)$", cells[0]), cells
    assert re.match(r"\[2/2\] .*\(\d+ s elapsed\)$", cells[1]), cells
    assert str(tmp_path / "out" / "report.md") in done.stdout.splitlines()
    learned = _run("learn", "coop", "--dataset", str(images), "--classes", str(classes), "--shots",
                   "1", "--epochs", "2", "--out", str(tmp_path / "run"), *flags, "--device", "cpu",
                   "--cache-dir", str(tmp_path / "cache"))
    assert learned.returncode == 0 and "\r" not in learned.stderr, learned.stderr
    assert [x.split(":")[0] for x in learned.stderr.splitlines()[:2]] == ["epoch 1/2", "epoch 2/2"]


def _row(method: str, top1: float, setting: dict | None = None) -> dict:
    return {"method": method, "setting": setting or {}, "metrics": {"top1": top1, "n_images": 50,
                                                                    "mean_entropy": 0.5},
            "identity": {"clip": {"model": "ViT-B-32", "weights": "openai", "precision": "fp32"}}}


def test_the_dc_figure_draws_baselines_and_distinct_series() -> None:
    """Read the figure as a reader would: its series, their styles, the baselines' labels
    (equal baselines share one line), and the CLIP and image count in the title."""
    import matplotlib.pyplot as plt

    from descriptor_gen.experiments.report import lines_figure

    rows = [_row("classname", 0.60), _row("templates", 0.60), _row("waffle", 0.62)]
    for detailed in (False, True):
        for k, top1 in ((1, 0.61), (4, 0.63), (7, 0.64 + 0.01 * detailed)):
            rows.append(_row("descriptors", top1, {"per_example": k, "detailed": detailed}))
    fig = lines_figure(rows, "top1", "top-1 (%)")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"descriptors, short phrases", "descriptors, detailed",
                          "classname = templates (baseline)", "waffle (baseline)"}
    series = [lines["descriptors, short phrases"], lines["descriptors, detailed"]]
    assert list(series[0].get_xdata()) == [1, 4, 7] and list(series[1].get_ydata()) == pytest.approx([61, 63, 65])
    assert series[0].get_color() != series[1].get_color() and series[0].get_marker() != series[1].get_marker()
    assert list(lines["classname = templates (baseline)"].get_ydata()) == pytest.approx([60, 60])
    assert ax.get_xlabel().startswith("|D(c)|") and ax.get_ylabel() == "top-1 (%)"
    assert ax.get_title() == "CLIP ViT-B-32 / openai; 50 images"
    plt.close(fig)


def test_the_per_class_gain_figure_names_the_best_and_worst_classes() -> None:
    import matplotlib.pyplot as plt

    from descriptor_gen.experiments.report import class_gains, gains_figure

    names = [f"class {i}" for i in range(8)]
    base = {**_row("classname", 0.5), "per_class_recall": [[n, 0.5] for n in names]}
    weak = {**_row("descriptors", 0.4, {"per_example": 1, "detailed": False}),
            "per_class_recall": [[n, 0.4] for n in names]}
    strong = {**_row("descriptors", 0.55, {"per_example": 7, "detailed": False}),
              "per_class_recall": [[n, 0.5 + 0.1 * (i - 3)] for i, n in enumerate(names[:-1])] + [[names[-1], None]]}
    best, gains = class_gains([base, weak, strong])
    assert best is strong and [n for n, _ in gains] == names[:-1]  # sorted; a class without images left out
    assert gains[0][1] == pytest.approx(-30) and gains[-1][1] == pytest.approx(30)
    fig = gains_figure([base, weak, strong], ["per_example"])
    ax = fig.axes[0]
    bars = ax.patches
    assert len(bars) == 7 and [b.get_height() for b in bars] == pytest.approx([-30, -20, -10, 0, 10, 20, 30])
    assert bars[0].get_facecolor() != bars[-1].get_facecolor()
    assert {t.get_text() for t in ax.texts} == {"class 0", "class 1", "class 2", "class 4", "class 5", "class 6"}
    assert ax.get_title() == "per_example=7 descriptors − class name; CLIP ViT-B-32 / openai; 50 images"
    plt.close(fig)
    assert class_gains([weak, strong]) is None  # no class-name baseline: no figure


def test_on_a_terminal_a_sweep_draws_bars_and_piped_it_does_not(tmp_path: Path) -> None:
    """The same sweep on a pseudo-terminal (a bar over the images encoded) and piped (only the
    per-cell lines)."""
    import fcntl
    import pty
    import struct
    import termios

    import yaml

    flags = _run("tiny-clip", str(tmp_path / "tiny")).stdout.split()
    images = make_image_folder(tmp_path / "images", {"tench": 2, "goldfish": 2})
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\n")

    def sweep(name: str) -> list[str]:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(yaml.safe_dump({
            "name": name, "classes": str(classes), "dataset": str(images),
            "generation": {"backend": "openai", "model": "dev", "base_url": "http://127.0.0.1:9/v1"},
            "clip": {"model": flags[1], "pretrained": flags[3], "device": "cpu", "workers": 0},
            "methods": ["classname"]}))
        return ["sweep", str(spec), "--out", str(tmp_path / name), "--cache-dir", str(tmp_path / name / "cache")]

    piped = _run(*sweep("piped"))
    assert piped.returncode == 0 and "\r" not in piped.stderr, piped.stderr
    main_fd, other = pty.openpty()
    fcntl.ioctl(other, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
    process = subprocess.Popen([DESCGEN, *sweep("tty")], stdout=subprocess.PIPE, stderr=other)
    os.close(other)
    seen = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    os.close(main_fd)
    assert process.wait(timeout=120) == 0
    text = seen.decode(errors="replace")
    assert "images: 100%" in text and "4/4" in text and "[1/1] tty:" in text, text[-2000:]
    assert "images:" not in piped.stderr
