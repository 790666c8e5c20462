"""The openai backend against a real OpenAI-compatible server: `transformers serve` on loopback
over the tiny random LM. Its answers are noise, which drives the no-descriptor path end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from descriptor_gen.cli import main
from descriptor_gen.describe.store import read_store

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def serve_url(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cli = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "w") as handle:
        proc = subprocess.Popen([str(cli), "serve", str(tiny_lm), "--host", "127.0.0.1",
                                 "--port", str(port), "--device", "cpu"],
                                stdout=handle, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"transformers serve did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_generate_against_transformers_serve(serve_url: str, tiny_lm: Path, tmp_path: Path,
                                             api: str, capsys: pytest.CaptureFixture[str]) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\n")
    out = tmp_path / "out.jsonl"
    args = ["generate", "--classes", str(classes), "--out", str(out), "--base-url", serve_url,
            "--model", str(tiny_lm), "--api", api, "--max-tokens", "16", "--max-attempts", "2",
            "--concurrency", "2", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    code = main(args)
    err = capsys.readouterr().err
    records = read_store(out)
    assert sorted(r.class_index for r in records) == [0, 1]
    for record in records:
        assert record.raw and record.params["api"] == api
        assert (record.error is None) == bool(record.descriptors)
    assert code == (3 if any(r.error for r in records) else 0)
    assert "requests sent: " in err
    code = main([*args, "--overwrite"])
    assert "requests sent: 0;" in capsys.readouterr().err
