"""The OpenAI Batch API as a way to fill the response cache at half price.

Requests go out as JSONL files (one endpoint per batch, at most 50,000 requests and 200 MB a
file); answers come back by `custom_id`, never by line order, from both the output and the
error file, and land in the same response cache a live run reads, so whatever failed or expired
is simply asked live by the next run.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.models import Model
from descriptor_gen.paths import BATCHES
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.errors import DescgenError
from descriptor_gen.secrets import redact
from descriptor_gen.generation.retry import RequestFailed, with_retries

MAX_REQUESTS = 50_000
MAX_BYTES = 190 * 1024 * 1024  # under the 200 MB limit, with room for multipart framing
TERMINAL = {"completed", "failed", "expired", "cancelled"}
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


class BatchItem(Model):
    """What one request line stands for: a class and the cache keys of its samples."""

    class_index: int
    class_name: str
    keys: list[str]


class BatchManifest(Model):
    """Saved beside the cache when a batch is created, so `--resume-batch ID` can finish it."""

    batch_id: str
    endpoint: str
    items: dict[str, BatchItem]


class BatchOutcome(Model):
    answered: int = 0
    failed: dict[str, str] = {}


async def _api(what: str, call: Callable[[], Any], attempts: int = 6) -> Any:
    """One Batch API call, retried like any request; a final failure is one clear error."""
    try:
        return await with_retries(call, attempts, backoff=1.0)
    except RequestFailed as exc:
        raise DescgenError(f"Batch API: {what}: {exc}") from exc


def request_line(custom_id: str, endpoint: str, body: dict[str, Any]) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body},
                      ensure_ascii=False)


def split_lines(lines: list[str], max_requests: int = MAX_REQUESTS,
                max_bytes: int = MAX_BYTES) -> list[list[str]]:
    """Cut request lines into input files that respect both Batch API limits."""
    files: list[list[str]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line_bytes = len(line.encode("utf-8")) + 1
        if current and (len(current) >= max_requests or size + line_bytes > max_bytes):
            files.append(current)
            current, size = [], 0
        current.append(line)
        size += line_bytes
    if current:
        files.append(current)
    return files


def manifest_dir(cache: ResponseCache) -> Path:
    return cache.path.parent / BATCHES


def safe_batch_id(batch_id: str, source: str) -> str:
    """A batch id that may become a file name; ids come from the server or the user, and one
    with a path in it (`../x`) must never reach the filesystem."""
    if not _BATCH_ID.fullmatch(batch_id or ""):
        raise DescgenError(f"{source}: batch id {batch_id[:80]!r} is not a plain id (letters,"
                           " digits, '_' and '-')")
    return batch_id


def load_manifest(cache: ResponseCache, batch_id: str) -> BatchManifest:
    path = manifest_dir(cache) / f"{safe_batch_id(batch_id, '--resume-batch')}.json"
    if not path.is_file():
        raise DescgenError(f"no record of batch {batch_id!r} in {manifest_dir(cache)}"
                           " (was it created with another --cache-dir?)")
    return BatchManifest.model_validate_json(path.read_text())


async def submit(client: Any, cache: ResponseCache, endpoint: str, lines: list[str],
                 items: dict[str, BatchItem], log: Callable[[str], None]) -> list[BatchManifest]:
    """Upload the request files and create one batch per file; manifests are saved first."""
    manifests = []
    folder = manifest_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    for number, chunk in enumerate(split_lines(lines)):
        payload = ("\n".join(chunk) + "\n").encode("utf-8")
        name = f"descgen-{number}.jsonl"
        upload = await _api(f"uploading {name}", lambda: client.files.create(
            file=(name, payload), purpose="batch"))
        batch = await _api(f"creating a batch from {upload.id}", lambda: client.batches.create(
            input_file_id=upload.id, endpoint=endpoint, completion_window="24h",
            metadata={"tool": "descriptor_gen"}))
        ids = [json.loads(line)["custom_id"] for line in chunk]
        batch_id = safe_batch_id(str(batch.id), "the server")
        manifest = BatchManifest(batch_id=batch_id, endpoint=endpoint,
                                 items={i: items[i] for i in ids})
        write_text_atomically(folder / f"{batch_id}.json", manifest.model_dump_json())
        log(f"created batch {batch_id} ({len(chunk)} requests); if this run stops, finish it with"
            f" --resume-batch {batch_id}")
        manifests.append(manifest)
    return manifests


async def wait_for(client: Any, batch_id: str, poll_seconds: float,
                   log: Callable[[str], None]) -> Any:
    last = None
    while True:
        batch = await _api(f"checking batch {batch_id} (resume with --resume-batch {batch_id})",
                           lambda: client.batches.retrieve(batch_id))
        if batch.status != last:
            counts = batch.request_counts
            done = f" ({counts.completed}/{counts.total} done)" if counts else ""
            log(f"batch {batch_id}: {batch.status}{done}")
            last = batch.status
        if batch.status in TERMINAL:
            return batch
        await asyncio.sleep(poll_seconds)


async def _file_lines(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    content = await _api(f"downloading {file_id}", lambda: client.files.content(file_id))
    return [json.loads(line) for line in content.text.splitlines() if line.strip()]


def _answers(body: dict[str, Any], chat: bool) -> list[tuple[str, str | None]]:
    """(text, finish_reason) of each choice, in choice order."""
    choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
    if chat:
        return [((c.get("message") or {}).get("content") or "", c.get("finish_reason"))
                for c in choices]
    return [(c.get("text") or "", c.get("finish_reason")) for c in choices]


def _line_error(row: dict[str, Any]) -> str:
    error = row.get("error") or {}
    response = row.get("response") or {}
    body_error = (response.get("body") or {}).get("error") or {}
    code = error.get("code") or body_error.get("code") or response.get("status_code")
    message = error.get("message") or body_error.get("message") or "failed"
    return redact(f"{code}: {message}" if code else message)


async def collect(client: Any, batch: Any, manifest: BatchManifest, cache: ResponseCache,
                  chat: bool) -> BatchOutcome:
    """Put every answered line's texts in the cache, joined by custom_id; report the rest."""
    if batch.status == "failed":
        errors = getattr(batch, "errors", None)
        detail = "; ".join(e.message for e in (errors.data or [])) if errors else "no detail"
        raise DescgenError(f"batch {batch.id} failed: {detail}")
    outcome = BatchOutcome()
    seen: set[str] = set()
    rows = await _file_lines(client, batch.output_file_id)
    rows += await _file_lines(client, batch.error_file_id)
    for row in rows:
        item = manifest.items.get(row.get("custom_id", ""))
        if item is None:
            continue
        seen.add(row["custom_id"])
        response = row.get("response") or {}
        if response.get("status_code") == 200 and not row.get("error"):
            for key, (text, why) in zip(item.keys, _answers(response.get("body") or {}, chat)):
                cache.put(key, text, {"class": item.class_name, "batch": batch.id}, why)
            outcome.answered += 1
        else:
            outcome.failed[row["custom_id"]] = _line_error(row)
    for custom_id in manifest.items.keys() - seen:
        outcome.failed[custom_id] = f"no line in the batch's files (status {batch.status})"
    return outcome


async def run_batches(client: Any, cache: ResponseCache, manifests: list[BatchManifest],
                      chat: bool, poll_seconds: float, log: Callable[[str], None]) -> BatchOutcome:
    total = BatchOutcome()
    for manifest in manifests:
        batch = await wait_for(client, manifest.batch_id, poll_seconds, log)
        outcome = await collect(client, batch, manifest, cache, chat)
        total.answered += outcome.answered
        total.failed.update(outcome.failed)
        for custom_id, why in outcome.failed.items():
            item = manifest.items[custom_id]
            log(f"batch {manifest.batch_id}: class {item.class_index} ({item.class_name}): {why}")
    return total
