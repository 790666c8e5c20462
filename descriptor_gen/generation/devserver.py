"""A small OpenAI-compatible server on loopback, for tests, benchmarks and offline demos.

It answers `/v1/completions` and `/v1/chat/completions` as the prompt asks: Menon &
Vondrick-style bullet lists about the class named in a few-shot prompt, bullets that set a class
apart from another for a comparative prompt, a concept for WaffleCLIP's concept question, and
one sentence for any other question (CuPL's), with a chosen latency, and can be told to fail
(429 with Retry-After, 500, a hang) or to answer noise, so every path of the generation stage
can be exercised without a network or a real model. Like a real server it cuts an answer at the
first `stop` string (completions) and at `max_tokens` tokens (here: whitespace-separated words),
and says which in `finish_reason`.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
import email.policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_TARGET = re.compile(r"distinguishing an? (.+?) in a photo\?")
_PAIR = re.compile(r"distinguishing an? (.+?) from an? (.+?) in the photo\?")
_CONCEPT = "have in common. It may be nothing."
_TOKEN = re.compile(r"\s*\S+")
_FEATURES = ("the typical shape of {c}", "the usual colours of {c}", "the texture of {c}'s surface",
             "the size of {c} next to familiar objects", "the distinctive parts of {c}")


@dataclass
class Failure:
    """A scripted reply after `delay` seconds: an HTTP status with headers (and `body`, raw
    bytes, instead of an error object), or, with status 0, a connection closed without any
    reply."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes | None = None


@dataclass
class ServerConfig:
    latency: float = 0.0
    supports_n: bool = True
    noise_classes: set[str] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    batch_expire_classes: set[str] = field(default_factory=set)
    batch_polls_before_done: int = 1
    batch_id: str | None = None  # the id the next batch gets (a hostile server's, in tests)
    answers: dict[str, list[str]] = field(default_factory=dict)  # class name -> its bullets


def _prompt_of(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    prompt = messages[-1].get("content") if messages else body.get("prompt")
    return prompt if isinstance(prompt, str) else None


def _target_of(body: dict[str, Any]) -> str | None:
    """The class a request asks about: the last `distinguishing a X` in its prompt."""
    prompt = _prompt_of(body)
    if prompt is None:
        return None
    found = _TARGET.findall(prompt)
    return found[-1] if found else "thing"


def reply_text(prompt: str, sample: int, chat: bool,
               answers: dict[str, list[str]] | None = None) -> str:
    """The answer to any prompt: by the kind of question it ends with; a class in `answers`
    gets its own bullets."""
    pairs = _PAIR.findall(prompt)
    if pairs:
        target, other = pairs[-1]
        lines = [f"the {f} of {target}, unlike {other}" for f in ("shape", "colour", "outline")]
        if sample:
            lines.append(f"detail number {sample} that sets {target} apart")
        return "\n".join(f"- {line}" for line in lines)
    if _CONCEPT in prompt:
        return "shapes."
    found = _TARGET.findall(prompt)
    if found:
        return answer_for(found[-1], sample, chat, (answers or {}).get(found[-1]))
    subject = prompt.strip().rstrip("?:").strip()
    extra = f" and detail number {sample}" if sample else ""
    return f" {subject} shows its typical shape and colour{extra}. It is often seen"


def answer_for(class_name: str, sample: int, chat: bool, own: list[str] | None = None) -> str:
    """The bullet answer the server gives (`own` bullets where given); sample > 0 (choice
    index + seed) adds one line."""
    lines = list(own) if own else [f.format(c=class_name) for f in _FEATURES]
    if sample:
        lines.append(f"detail number {sample} of {class_name}")
    body = "\n- ".join(lines)
    return f"- {body}" if chat else f" {body}\n\nQ: What are useful visual features for"


class DevServer:
    """Run with `with DevServer(config) as server:`; `server.base_url` ends in `/v1`."""

    def __init__(self, config: ServerConfig | None = None, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.config = config or ServerConfig()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> DevServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def count(self, path_suffix: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].endswith(path_suffix))

    def _next_failure(self) -> Failure | None:
        with self._lock:
            return self.config.failures.pop(0) if self.config.failures else None

    def _record(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append({"path": path, "body": body})

    def reply(self, path: str, body: dict[str, Any],
              record: bool = True) -> tuple[int, dict[str, str], dict[str, Any] | bytes]:
        """Answer one completion request; batch lines pass `record=False` (not live requests)."""
        if record:
            self._record(path, body)
        failure = self._next_failure()
        if failure is not None:
            time.sleep(failure.delay)
            if failure.body is not None:
                return failure.status, failure.headers, failure.body
            return failure.status, failure.headers, {"error": {"message": f"scripted {failure.status}",
                                                               "type": "server_error"}}
        time.sleep(self.config.latency)
        chat = path.endswith("/chat/completions")
        if not chat and not path.endswith("/completions"):
            return 404, {}, {"error": {"message": f"no route {path}", "type": "not_found"}}
        prompt = _prompt_of(body)
        target = _target_of(body)
        if prompt is None or target is None or not body.get("model"):
            return 400, {}, {"error": {"message": "model and prompt are required",
                                       "type": "invalid_request_error"}}
        n = int(body.get("n") or 1) if self.config.supports_n else 1
        first = int(body.get("seed") or 0)
        texts = [("%% ## ::" if target in self.config.noise_classes
                  else reply_text(prompt, first + i, chat, self.config.answers)) for i in range(n)]
        stops = [] if chat else _as_list(body.get("stop"))
        cut = [_limit(t, stops, body.get("max_tokens")) for t in texts]
        return 200, {}, _completion_body(cut, chat, body["model"])


def _as_list(stop: Any) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _limit(text: str, stops: list[str], max_tokens: int | None) -> tuple[str, str]:
    """The text cut at the first stop string, then at `max_tokens` tokens, and the reason."""
    at = min((text.find(s) for s in stops if s and s in text), default=-1)
    if at >= 0:
        text = text[:at]
    tokens = _TOKEN.findall(text)
    if max_tokens is not None and len(tokens) > int(max_tokens):
        return "".join(tokens[: int(max_tokens)]), "length"
    return text, "stop"


class _BatchApi:
    """Files and batches, enough of the Batch API for the client's whole round trip."""

    def __init__(self, server: DevServer) -> None:
        self.server = server

    def upload(self, content: bytes, filename: str) -> dict[str, Any]:
        with self.server._lock:
            file_id = f"file-{len(self.server.files) + 1}"
            self.server.files[file_id] = content
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": "batch", "status": "processed"}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        lines = self.server.files[body["input_file_id"]].decode().splitlines()
        outputs, errors = [], []
        for line in reversed([json.loads(x) for x in lines if x.strip()]):
            if _target_of(line["body"]) in self.server.config.batch_expire_classes:
                errors.append({"id": "req", "custom_id": line["custom_id"], "response": None,
                               "error": {"code": "batch_expired", "message": "expired"}})
                continue
            status, _, payload = self.server.reply(line["url"], line["body"], record=False)
            row = {"id": "req", "custom_id": line["custom_id"],
                   "response": {"status_code": status, "request_id": "r", "body": payload},
                   "error": None}
            (outputs if status == 200 else errors).append(row)
        out_id = self.upload("".join(json.dumps(r) + "\n" for r in outputs).encode(), "out.jsonl")["id"]
        err_id = self.upload("".join(json.dumps(r) + "\n" for r in errors).encode(), "err.jsonl")["id"]
        with self.server._lock:
            batch_id = self.server.config.batch_id or f"batch_{len(self.server.batches) + 1}"
            self.server.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                "status": "validating", "output_file_id": out_id, "error_file_id": err_id,
                "created_at": int(time.time()), "metadata": body.get("metadata"),
                "request_counts": {"total": len(lines), "completed": len(outputs), "failed": len(errors)},
                "_polls": 0,
            }
        return self.view(batch_id)

    def view(self, batch_id: str) -> dict[str, Any]:
        batch = self.server.batches[batch_id]
        done = batch["_polls"] >= self.server.config.batch_polls_before_done
        shown = {k: v for k, v in batch.items() if not k.startswith("_")}
        shown["status"] = "completed" if done else "in_progress"
        if not done:
            shown["output_file_id"] = shown["error_file_id"] = None
        return shown

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self.server._lock:
            self.server.batches[batch_id]["_polls"] += 1
        return self.view(batch_id)


def _multipart_file(content_type: str, body: bytes) -> tuple[bytes, str]:
    message = BytesParser(policy=email.policy.default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True), part.get_filename() or "upload.jsonl"
    raise ValueError("no file part")


def _completion_body(answers: list[tuple[str, str]], chat: bool, model: str) -> dict[str, Any]:
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": t},
                    "finish_reason": why} for i, (t, why) in enumerate(answers)]
        kind = "chat.completion"
    else:
        choices = [{"index": i, "text": t, "finish_reason": why, "logprobs": None}
                   for i, (t, why) in enumerate(answers)]
        kind = "text_completion"
    tokens = sum(len(t.split()) for t, _ in answers)
    return {"id": "cmpl-dev", "object": kind, "created": int(time.time()), "model": model,
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}}


def _handler(server: DevServer) -> type[BaseHTTPRequestHandler]:
    batches = _BatchApi(server)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            kind = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            for key, value in {"content-type": kind, **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parts = self.path.split("?")[0].rstrip("/").split("/")
            server._record(self.path, {})
            if parts[-3:-1] == ["v1", "batches"] and parts[-1] in server.batches:
                self._send_json(200, batches.retrieve(parts[-1]))
            elif parts[-1] == "content" and parts[-2] in server.files:
                self._send_json(200, server.files[parts[-2]])
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            if self.path.endswith("/files"):
                server._record(self.path, {})
                content, name = _multipart_file(self.headers["content-type"], raw)
                self._send_json(200, batches.upload(content, name))
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {}
            if self.path.endswith("/batches"):
                server._record(self.path, body)
                self._send_json(200, batches.create(body))
                return
            status, headers, payload = server.reply(self.path, body)
            if status == 0:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send_json(status, payload, headers)

    return Handler


def load_answers(path: Path) -> dict[str, list[str]]:
    """The bullets to answer with, by class: a descriptor store (JSONL) or a DCLIP-format JSON
    object (`{"class": ["descriptor", ...]}`)."""
    from descriptor_gen.describe.store import read_store
    from descriptor_gen.errors import DescgenError
    from descriptor_gen.inputs import parse_json, read_text

    if path.suffix == ".jsonl":
        return {r.class_name: list(r.descriptors) for r in read_store(path) if r.descriptors}
    data = parse_json(read_text(path, "answers file"), path)
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in data.items()):
        raise DescgenError(f"{path}: expected a JSON object of class name -> list of descriptor"
                           " strings (DCLIP's format), or a descriptor store (.jsonl)")
    return data


def serve(port: int, host: str, latency: float, answers: dict[str, list[str]],
          log: Any = print, stop: threading.Event | None = None) -> None:
    """Serve until Ctrl-C (or `stop` is set), saying where and how to use it."""
    with DevServer(ServerConfig(latency=latency, answers=answers), port=port, host=host) as server, \
            _stopped_by_signals(stop or threading.Event()) as stopping:  # before it says it is up
        log(f"an OpenAI-compatible dev server at {server.base_url} (canned answers"
            f"{f', {len(answers)} classes from the answers file' if answers else ''}); Ctrl-C stops it")
        log(f"  descgen generate --classes CLASSES.txt --base-url {server.base_url} --model dev --out d.jsonl")
        if host not in ("127.0.0.1", "localhost", "::1"):
            log(f"  listening on {host}: anyone who reaches this address can use it")
        stopping.wait()
    log("dev server stopped")


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) and `kill` (SIGTERM) set `stop`, so the server closes cleanly; also where
    SIGINT was ignored at start (a job started with `&` by a non-interactive shell), when
    Python would not turn it into KeyboardInterrupt. Off the main thread: `stop` alone."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    caught = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in caught.items():
            signal.signal(sig, handler)


if __name__ == "__main__":  # `python -m descriptor_gen.generation.devserver [PORT]`; see `descgen serve`
    import sys

    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 8000, "127.0.0.1", 0.0, {})
