"""A small OpenAI-compatible server on loopback, for tests, benchmarks and offline demos.

It answers `/v1/completions` and `/v1/chat/completions` with Menon & Vondrick-style bullet
lists about the class named in the prompt, with a chosen latency, and can be told to fail
(429 with Retry-After, 500, a hang) or to answer noise, so every path of the generation stage
can be exercised without a network or a real model.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TARGET = re.compile(r"distinguishing an? (.+?) in a photo\?")
_FEATURES = ("the typical shape of {c}", "the usual colours of {c}", "the texture of {c}'s surface",
             "the size of {c} next to familiar objects", "the distinctive parts of {c}")


@dataclass
class Failure:
    """A scripted reply after `delay` seconds: an HTTP status with headers, or, with status 0,
    a connection closed without any reply."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class ServerConfig:
    latency: float = 0.0
    supports_n: bool = True
    noise_classes: set[str] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)


def answer_for(class_name: str, sample: int, chat: bool) -> str:
    """The bullet answer the server gives; sample > 0 (choice index + seed) adds one line."""
    lines = [f.format(c=class_name) for f in _FEATURES]
    if sample:
        lines.append(f"detail number {sample} of {class_name}")
    body = "\n- ".join(lines)
    return f"- {body}" if chat else f" {body}\n\nQ: What are useful visual features for"


class DevServer:
    """Run with `with DevServer(config) as server:`; `server.base_url` ends in `/v1`."""

    def __init__(self, config: ServerConfig | None = None, port: int = 0) -> None:
        self.config = config or ServerConfig()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
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

    def reply(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        self._record(path, body)
        failure = self._next_failure()
        if failure is not None:
            time.sleep(failure.delay)
            return failure.status, failure.headers, {"error": {"message": f"scripted {failure.status}",
                                                               "type": "server_error"}}
        time.sleep(self.config.latency)
        chat = path.endswith("/chat/completions")
        if not chat and not path.endswith("/completions"):
            return 404, {}, {"error": {"message": f"no route {path}", "type": "not_found"}}
        prompt = body["messages"][-1]["content"] if chat else body.get("prompt", "")
        if not isinstance(prompt, str) or not body.get("model"):
            return 400, {}, {"error": {"message": "model and prompt are required",
                                       "type": "invalid_request_error"}}
        found = _TARGET.findall(prompt)
        target = found[-1] if found else "thing"
        n = int(body.get("n") or 1) if self.config.supports_n else 1
        first = int(body.get("seed") or 0)
        texts = [("%% ## ::" if target in self.config.noise_classes
                  else answer_for(target, first + i, chat)) for i in range(n)]
        return 200, {}, _completion_body(texts, chat, body["model"])


def _completion_body(texts: list[str], chat: bool, model: str) -> dict[str, Any]:
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": t},
                    "finish_reason": "stop"} for i, t in enumerate(texts)]
        kind = "chat.completion"
    else:
        choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None}
                   for i, t in enumerate(texts)]
        kind = "text_completion"
    tokens = sum(len(t.split()) for t in texts)
    return {"id": "cmpl-dev", "object": kind, "created": int(time.time()), "model": model,
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}}


def _handler(server: DevServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                body = {}
            status, headers, payload = server.reply(self.path, body)
            if status == 0:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = json.dumps(payload).encode()
            self.send_response(status)
            for key, value in {"content-type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler

