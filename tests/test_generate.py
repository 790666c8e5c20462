from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from descriptor_gen.generation.backends import GenerationParams
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.cli import main
from descriptor_gen.generation.devserver import DevServer, Failure, ServerConfig
from descriptor_gen.errors import DescgenError
from descriptor_gen.generation.generate import GenerationJob, generate
from descriptor_gen.generation.retry import retry_after_seconds
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions
from descriptor_gen.paths import CachePaths
from descriptor_gen.describe.store import read_store

CLASSES = ["tench", "goldfish", "great white shark", "missile", "missile", "axolotl"]


@pytest.fixture
def library() -> PromptLibrary:
    return PromptLibrary(CachePaths.resolve().prompts_dir)


def make_job(tmp_path: Path, library: PromptLibrary, base_url: str, **kw) -> GenerationJob:
    params = kw.pop("params", {})
    return GenerationJob(
        classes=kw.pop("classes", CLASSES), out=kw.pop("out", tmp_path / "out.jsonl"),
        options=kw.pop("options", PromptOptions()),
        params=GenerationParams(model="dev-model", base_url=base_url, **params),
        library=library, cache=ResponseCache(tmp_path / "cache.sqlite"), progress=False,
        backoff=0.01, **kw,
    )


def test_generate_writes_every_class_once_and_rerun_costs_nothing(
    tmp_path: Path, library: PromptLibrary
) -> None:
    with DevServer() as server:
        summary = generate(make_job(tmp_path, library, server.base_url, concurrency=3))
        assert summary.requests == len(CLASSES) == server.count("/completions")
        records = read_store(tmp_path / "out.jsonl")
        assert sorted(r.class_index for r in records) == list(range(len(CLASSES)))
        assert [r.class_name for r in sorted(records, key=lambda r: r.class_index)] == CLASSES
        first = records[0]
        assert first.descriptors and first.error is None and first.model == "dev-model"
        assert first.params["base_url"].startswith("http://127.0.0.1:")
        assert first.raw and first.prompt_sha256
        again = generate(make_job(tmp_path, library, server.base_url, out=tmp_path / "o2.jsonl"))
        assert again.requests == 0 and again.cache_hits == len(CLASSES)
        assert server.count() == len(CLASSES)
        changed = generate(make_job(tmp_path, library, server.base_url, out=tmp_path / "o3.jsonl",
                                    params={"temperature": 0.0}))
        assert changed.requests == len(CLASSES)


def test_requests_carry_the_prompt_and_parameters(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer() as server:
        generate(make_job(tmp_path, library, server.base_url, classes=["axolotl"],
                          params={"temperature": 0.3, "max_tokens": 50, "seed": 7}))
        body = server.requests[0]["body"]
    assert body["prompt"].endswith("there is an axolotl in a photo:\n-")
    assert body["temperature"] == 0.3 and body["max_tokens"] == 50 and body["seed"] == 7
    assert body["model"] == "dev-model" and body["n"] == 1


def test_chat_api_sends_messages(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer() as server:
        generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                          options=PromptOptions(instruction="role"), params={"api": "chat"}))
        body = server.requests[0]["body"]
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    record = read_store(tmp_path / "out.jsonl")[0]
    assert record.params["api"] == "chat"
    assert record.descriptors[0] == "the typical shape of tench"


@pytest.mark.parametrize("supports_n", [True, False])
def test_samples_are_merged(tmp_path: Path, library: PromptLibrary, supports_n: bool) -> None:
    with DevServer(ServerConfig(supports_n=supports_n)) as server:
        generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                          params={"samples": 3, "seed": 1}))
        sent = server.count()
    record = read_store(tmp_path / "out.jsonl")[0]
    assert len(record.raw) == 3
    assert record.descriptors[-3:] == [f"detail number {i} of tench" for i in (1, 2, 3)]
    assert len(record.descriptors) == 8
    assert sent == (1 if supports_n else 3)


def test_noise_is_reasked_then_recorded_as_error(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer(ServerConfig(noise_classes={"goldfish"})) as server:
        summary = generate(make_job(tmp_path, library, server.base_url, max_attempts=3))
    assert summary.failed == ["goldfish"]
    record = next(r for r in read_store(tmp_path / "out.jsonl") if r.class_name == "goldfish")
    assert record.descriptors == [] and record.error == "no descriptors in 3 answers"
    assert len(record.raw) == 3
    assert summary.requests == len(CLASSES) + 2


def test_retries_429_with_retry_after_and_500(tmp_path: Path, library: PromptLibrary) -> None:
    failures = [Failure(429, {"Retry-After": "0.2"}), Failure(500), Failure(503)]
    with DevServer(ServerConfig(failures=failures)) as server:
        started = time.perf_counter()
        summary = generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                                    max_attempts=4))
        elapsed = time.perf_counter() - started
        assert server.count() == 4
    assert summary.failed == [] and elapsed >= 0.2


def test_gives_up_after_max_attempts(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer(ServerConfig(failures=[Failure(500)] * 10)) as server:
        summary = generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                                    max_attempts=3))
        assert server.count() == 3
    record = read_store(tmp_path / "out.jsonl")[0]
    assert summary.failed == ["tench"]
    assert record.error.startswith("HTTP 500") and "after 3 attempts" in record.error


def test_4xx_is_not_retried_and_names_the_message(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer(ServerConfig(failures=[Failure(400)])) as server:
        summary = generate(make_job(tmp_path, library, server.base_url, classes=["tench"]))
        assert server.count() == 1
    assert summary.failed == ["tench"]
    assert read_store(tmp_path / "out.jsonl")[0].error.startswith("HTTP 400: scripted 400")


def test_timeouts_and_dropped_connections_are_retried(tmp_path: Path, library: PromptLibrary) -> None:
    failures = [Failure(200, delay=1.0), Failure(0), Failure(429, {"retry-after-ms": "50"})]
    with DevServer(ServerConfig(failures=failures)) as server:
        summary = generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                                    params={"timeout": 0.3}))
        assert server.count() == 4
    assert summary.failed == [] and summary.requests == 4


def test_retry_after_forms() -> None:
    class Response:
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers

    class Exc:
        def __init__(self, headers: dict[str, str]) -> None:
            self.response = Response(headers)

    assert retry_after_seconds(Exc({"retry-after": "3"})) == 3.0
    assert retry_after_seconds(Exc({"retry-after-ms": "250"})) == 0.25
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_seconds(Exc({"retry-after": date})) <= 30
    assert retry_after_seconds(Exc({})) is None
    assert retry_after_seconds(ValueError()) is None


def test_api_key_is_never_stored(tmp_path: Path, library: PromptLibrary,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-SECRET-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with DevServer(ServerConfig(noise_classes={"tench"}, failures=[Failure(401)])) as server:
        generate(make_job(tmp_path, library, server.base_url, classes=["tench", "goldfish"]))
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_resume_repairs_torn_tail_and_never_duplicates(tmp_path: Path, library: PromptLibrary) -> None:
    out = tmp_path / "out.jsonl"
    with DevServer() as server:
        generate(make_job(tmp_path, library, server.base_url, classes=CLASSES[:3]))
        lines = out.read_text().splitlines(keepends=True)
        out.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
        summary = generate(make_job(tmp_path, library, server.base_url))
    assert summary.already_done == 2 and summary.written == len(CLASSES) - 2
    indices = [r.class_index for r in read_store(out)]
    assert sorted(indices) == list(range(len(CLASSES)))


def test_resume_refuses_another_setting(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer() as server:
        generate(make_job(tmp_path, library, server.base_url, classes=CLASSES[:2]))
        with pytest.raises(DescgenError, match="another setting"):
            generate(make_job(tmp_path, library, server.base_url,
                              options=PromptOptions(per_example=3)))
        summary = generate(make_job(tmp_path, library, server.base_url, overwrite=True,
                                    options=PromptOptions(per_example=3)))
    assert summary.already_done == 0 and summary.written == len(CLASSES)


def test_killed_run_resumes_with_every_class_once(tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(f"class {i}" for i in range(60)) + "\n")
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "DESCRIPTOR_GEN_CACHE": str(tmp_path / "cache")}
    with DevServer(ServerConfig(latency=0.05)) as server:
        cmd = [sys.executable, "-m", "descriptor_gen", "generate", "--classes", str(classes),
               "--out", str(out), "--base-url", server.base_url, "--concurrency", "2",
               "--no-progress"]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = out.read_text().count("\n")
        assert 10 <= partial < 60
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    indices = [r.class_index for r in read_store(out)]
    assert sorted(indices) == list(range(60))
    assert f"{partial} already in the output" in done.stderr or "already in the output" in done.stderr


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_cli_generate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    classes = tmp_path / "c.txt"
    classes.write_text("tench\ngoldfish\n")
    out = tmp_path / "o.jsonl"
    with DevServer(ServerConfig(noise_classes={"goldfish"})) as server:
        code, err = _cli(capsys, "generate", "--classes", str(classes), "--out", str(out),
                         "--base-url", server.base_url, "--no-progress", "--max-attempts", "2",
                         "--cache-dir", str(tmp_path / "cache"))
        assert code == 3 and "classes without descriptors: goldfish" in err
        code, err = _cli(capsys, "generate", "--classes", str(classes), "--out", str(out),
                         "--base-url", server.base_url, "--no-progress", "--overwrite",
                         "--cache-dir", str(tmp_path / "cache"), "--max-attempts", "2")
        assert code == 3 and "requests sent: 0" in err
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for args, needle in [
        (["--out", str(out)], "OPENAI_API_KEY is not set"),
        (["--out", str(out), "--backend", "vllm"], "--backend"),
        (["--out", str(out), "--backend", "hf"], "--model is required"),
        (["--out", str(out), "--temperature", "5", "--base-url", "http://127.0.0.1:9/v1"],
         "--temperature"),
    ]:
        code, err = _cli(capsys, "generate", "--classes", str(classes), *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    code, err = _cli(capsys, "generate", "--classes", str(tmp_path / "none.txt"), "--out", str(out))
    assert code == 2 and "none.txt: no such class list" in err


def test_a_truncated_answer_drops_its_cut_item_and_says_so(tmp_path: Path,
                                                          library: PromptLibrary) -> None:
    # The dev server's tokens are words: 8 of them cut its answer inside the second item.
    with DevServer() as server:
        generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                          params={"max_tokens": 8}))
        generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                          out=tmp_path / "again.jsonl", params={"max_tokens": 8}))
        assert server.count() == 1  # the second run came from the cache, reason and all
    for path in (tmp_path / "out.jsonl", tmp_path / "again.jsonl"):
        record = read_store(path)[0]
        assert record.finish_reasons == ["length"] and record.truncated
        assert record.raw[0].endswith("the usual")
        assert record.descriptors == ["the typical shape of tench"]


def test_an_answer_that_fits_is_not_truncated(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer() as server:
        generate(make_job(tmp_path, library, server.base_url, classes=["tench"]))
    record = read_store(tmp_path / "out.jsonl")[0]
    assert record.finish_reasons == ["stop"] and not record.truncated
    assert len(record.descriptors) == 5


def test_default_max_tokens_fits_seven_detailed_sentences(library: PromptLibrary) -> None:
    bank = library.bank("default")
    words = max(sum(len(line.split()) for line in obj.detailed[:7]) for obj in bank.objects)
    # English runs about 1.3 tokens a word; bullets and newlines add two a line.
    assert GenerationParams().max_tokens >= 1.5 * words + 14


def test_greedy_answers_without_descriptors_are_not_asked_again(tmp_path: Path,
                                                                library: PromptLibrary) -> None:
    with DevServer(ServerConfig(noise_classes={"goldfish"})) as server:
        summary = generate(make_job(tmp_path, library, server.base_url, max_attempts=4,
                                    params={"temperature": 0.0}))
    assert summary.requests == len(CLASSES) and summary.failed == ["goldfish"]


def test_another_seed_is_another_answer(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer() as server:
        for number, seed in enumerate((1, 2, 1)):
            generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                              out=tmp_path / f"o{number}.jsonl", params={"seed": seed}))
        assert server.count() == 2
    assert read_store(tmp_path / "o0.jsonl")[0].descriptors != read_store(tmp_path / "o1.jsonl")[0].descriptors


def test_resume_refuses_a_store_made_from_another_prompt_text(tmp_path: Path,
                                                              library: PromptLibrary) -> None:
    bank = tmp_path / "bank.yaml"
    bank.write_text("name: b\nobjects:\n  - {name: kite, short: [diamond shape]}\n")
    options = PromptOptions(bank=str(bank), per_example=1, examples=1)
    with DevServer() as server:
        generate(make_job(tmp_path, library, server.base_url, classes=CLASSES[:2], options=options))
        bank.write_text("name: b\nobjects:\n  - {name: kite, short: [paper sail]}\n")
        edited = PromptLibrary(CachePaths.resolve().prompts_dir)
        with pytest.raises(DescgenError, match="another prompt text"):
            generate(make_job(tmp_path, edited, server.base_url, options=options))


def test_dclip_parser_keeps_the_answer_as_their_script_does(tmp_path: Path,
                                                            library: PromptLibrary) -> None:
    with DevServer() as server:
        generate(make_job(tmp_path, library, server.base_url, classes=["tench"],
                          params={"parser": "dclip", "api": "chat", "max_tokens": 9}))
    record = read_store(tmp_path / "out.jsonl")[0]
    # stringtolist keeps the cut last line as written; the record still says it was cut
    assert record.descriptors == ["the typical shape of tench", "the usual"]
    assert record.truncated and record.params["parser"] == "dclip"


def test_dclip_preset_sends_the_released_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_prompts import DCLIP_TENCH

    classes = tmp_path / "c.txt"
    classes.write_text("tench\n")
    out = tmp_path / "o.jsonl"
    with DevServer() as server:
        code, err = _cli(capsys, "generate", "--classes", str(classes), "--out", str(out),
                         "--preset", "dclip", "--base-url", server.base_url, "--no-progress",
                         "--cache-dir", str(tmp_path / "cache"))
        body = server.requests[0]["body"]
    assert body["prompt"] == DCLIP_TENCH
    assert body["model"] == "gpt-3.5-turbo-instruct" and body["temperature"] == 0.0
    assert body["max_tokens"] == 100 and "stop" not in body and body["n"] == 1
    record = read_store(out)[0]
    assert record.params["parser"] == "dclip" and record.options.bank == "dclip"
    assert record.options.per_example == "all"
    # the dev server's first line continues a dangling bullet; stringtolist drops it, as theirs would
    assert record.descriptors == ["the usual colours of tench", "the texture of tench's surface",
                                  "the size of tench next to familiar objects",
                                  "the distinctive parts of tench"]
    assert code == 0, err


def test_preset_values_yield_to_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = tmp_path / "c.txt"
    classes.write_text("tench\n")
    with DevServer() as server:
        _cli(capsys, "generate", "--classes", str(classes), "--out", str(tmp_path / "o.jsonl"),
             "--preset", "dclip", "--base-url", server.base_url, "--no-progress",
             "--max-tokens", "60", "--model", "mine", "--per-example", "2",
             "--cache-dir", str(tmp_path / "cache"))
        body = server.requests[0]["body"]
    assert body["max_tokens"] == 60 and body["model"] == "mine" and body["temperature"] == 0.0
    assert body["prompt"].count("\n- ") == 4


def test_several_servers_share_the_requests_and_one_cache(tmp_path: Path, library: PromptLibrary) -> None:
    with DevServer() as a, DevServer() as b:
        both = f"{a.base_url},{b.base_url}"
        summary = generate(make_job(tmp_path, library, both, concurrency=2))
        assert summary.requests == len(CLASSES) == a.count() + b.count()
        assert a.count() == b.count() == len(CLASSES) // 2  # taken in turn
        records = read_store(tmp_path / "out.jsonl")
        hosts = sorted(u.rsplit("/", 1)[0] for u in (a.base_url, b.base_url))
        assert {r.params["base_url"] for r in records} == {",".join(sorted(h.removesuffix("/v1") for h in hosts))}
        # the same servers listed the other way round: every answer is a cache hit
        again = generate(make_job(tmp_path, library, f"{b.base_url},{a.base_url}",
                                  out=tmp_path / "again.jsonl"))
        assert again.requests == 0 and again.cache_hits == len(CLASSES)
        assert a.count() + b.count() == len(CLASSES)


def test_a_server_down_among_several_is_retried_on_the_others(tmp_path: Path,
                                                               library: PromptLibrary) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with DevServer() as live:
        summary = generate(make_job(tmp_path, library, f"{dead},{live.base_url}", max_attempts=3))
        assert summary.failed == [] and live.count() == len(CLASSES)
    assert all(r.descriptors for r in read_store(tmp_path / "out.jsonl"))


def test_the_batch_api_takes_one_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "classes.txt").write_text("tench\n")
    with DevServer() as a, DevServer() as b:
        code = main(["generate", "--classes", str(tmp_path / "classes.txt"), "--model", "dev",
                     "--base-url", f"{a.base_url},{b.base_url}", "--batch-api",
                     "--out", str(tmp_path / "out.jsonl"), "--cache-dir", str(tmp_path / "c")])
        assert code == 2 and a.count() + b.count() == 0
    err = capsys.readouterr().err.strip()
    assert err == "descgen: error: --batch-api and --resume-batch use one server: give one --base-url"
