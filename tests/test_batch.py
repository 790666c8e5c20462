from __future__ import annotations

import json
from pathlib import Path

import pytest

from descriptor_gen.generation.backends import GenerationParams
from descriptor_gen.generation.batch import MAX_REQUESTS, load_manifest, split_lines
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.generation.devserver import DevServer, ServerConfig
from descriptor_gen.errors import DescgenError
from descriptor_gen.generation.generate import GenerationJob, generate
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions
from descriptor_gen.paths import CachePaths
from descriptor_gen.describe.store import read_store

CLASSES = ["tench", "goldfish", "great white shark", "tiger shark", "missile", "missile"]


def make_job(tmp_path: Path, base_url: str, log: list[str], **kw) -> GenerationJob:
    params = kw.pop("params", {})
    return GenerationJob(
        classes=CLASSES, out=tmp_path / "out.jsonl", options=PromptOptions(),
        params=GenerationParams(model="dev-model", base_url=base_url, **params),
        library=PromptLibrary(CachePaths.resolve().prompts_dir),
        cache=ResponseCache(tmp_path / "cache" / "responses.sqlite"), progress=False,
        backoff=0.01, poll_seconds=0.01, log=log.append, **kw,
    )


def test_batch_round_trip_then_live_rerun(tmp_path: Path) -> None:
    log: list[str] = []
    config = ServerConfig(noise_classes={"goldfish"}, batch_expire_classes={"tiger shark"},
                          batch_polls_before_done=3)
    with DevServer(config) as server:
        summary = generate(make_job(tmp_path, server.base_url, log, batch_api=True,
                                    params={"samples": 2}))
        paths = [r["path"] for r in server.requests]
        assert paths[:2] == ["/v1/files", "/v1/batches"]
        assert paths.count("/v1/batches/batch_1") == 3
        lines = server.files["file-1"].decode().splitlines()
        first = json.loads(lines[0])
        assert first["url"] == "/v1/completions" and first["body"]["n"] == 2
        assert len({json.loads(x)["custom_id"] for x in lines}) == len(CLASSES)
        live_before = server.count("/v1/completions")
        records = read_store(tmp_path / "out.jsonl")
        assert sorted(r.class_index for r in records) == [0, 2, 4, 5]
        assert records[0].raw and len(records[0].raw) == 2
        assert summary.unanswered == ["goldfish", "tiger shark"]
        assert any("class 3 (tiger shark): batch_expired" in line for line in log)
        assert any("--resume-batch batch_1" in line for line in log)
        manifest = load_manifest(ResponseCache(tmp_path / "cache" / "responses.sqlite"), "batch_1")
        assert manifest.items["class-3"].class_name == "tiger shark"

        live = generate(make_job(tmp_path, server.base_url, [], params={"samples": 2},
                                 max_attempts=2))
        live_after = server.count("/v1/completions")
    assert live_before == 0
    assert live.requests == live_after == 1 + 1
    assert live.failed == ["goldfish"]
    assert sorted(r.class_index for r in read_store(tmp_path / "out.jsonl")) == list(range(6))


def test_resume_batch_by_id(tmp_path: Path) -> None:
    with DevServer(ServerConfig(batch_polls_before_done=1)) as server:
        log: list[str] = []
        job = make_job(tmp_path, server.base_url, log, batch_api=True)
        job.poll_seconds = 0.01
        generate(job)
        (tmp_path / "out.jsonl").unlink()
        cache_path = tmp_path / "cache" / "responses.sqlite"
        cache_path.unlink()
        resumed = generate(make_job(tmp_path, server.base_url, [], resume_batch="batch_1"))
        assert server.count("/v1/batches") == 1
    assert resumed.unanswered == [] and resumed.with_descriptors == len(CLASSES)


def test_resume_unknown_batch(tmp_path: Path) -> None:
    with DevServer() as server, pytest.raises(DescgenError, match="no record of batch 'batch_9'"):
        generate(make_job(tmp_path, server.base_url, [], resume_batch="batch_9"))


def test_batch_needs_openai_backend(tmp_path: Path) -> None:
    class Fake:
        name, chat, max_batch, supports_n = "fake", False, 1, True

        def identity(self) -> dict:
            return {"backend": "fake"}

        async def aclose(self) -> None:
            return None

    with pytest.raises(DescgenError, match="need --backend openai"):
        generate(make_job(tmp_path, "http://127.0.0.1:9/v1", [], batch_api=True, backend=Fake()))


def test_everything_cached_needs_no_batch(tmp_path: Path) -> None:
    with DevServer() as server:
        generate(make_job(tmp_path, server.base_url, []))
        (tmp_path / "out.jsonl").unlink()
        log: list[str] = []
        summary = generate(make_job(tmp_path, server.base_url, log, batch_api=True))
        assert server.count("/v1/files") == 0
    assert "no batch needed" in log[0] and summary.with_descriptors == len(CLASSES)


def test_split_lines_respects_both_limits() -> None:
    lines = ["x" * 9] * 25
    assert [len(f) for f in split_lines(lines, max_requests=10, max_bytes=10_000)] == [10, 10, 5]
    assert [len(f) for f in split_lines(lines, max_requests=100, max_bytes=50)] == [5, 5, 5, 5, 5]
    assert MAX_REQUESTS == 50_000
