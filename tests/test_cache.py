from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from descriptor_gen.generation.backends import GenerationParams, OpenAIBackend
from descriptor_gen.generation.cache import Answer, ResponseCache, base_url_host, response_key

IDENTITY = {"backend": "openai", "model": "m", "temperature": 0.7}


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    key = response_key(IDENTITY, "prompt", 0)
    assert cache.get(key) is None
    cache.put(key, "- a\n- b", {"class": "x"})
    cache.close()
    again = ResponseCache(tmp_path / "c.sqlite")
    assert again.get(key) == Answer("- a\n- b", None) and len(again) == 1
    assert again.get_many([key, "missing"]) == {key: Answer("- a\n- b", None)}


def test_finish_reason_is_kept(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put("k", " a thick body\n- a lar", {}, "length")
    cache.close()
    assert ResponseCache(tmp_path / "c.sqlite").get("k") == Answer(" a thick body\n- a lar", "length")


def test_a_cache_from_before_finish_reasons_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, answer TEXT NOT NULL,"
                 " meta TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT (datetime('now')))")
    conn.execute("INSERT INTO responses (key, answer, meta) VALUES ('k', 'old answer', '{}')")
    conn.commit()
    conn.close()
    cache = ResponseCache(path)
    assert cache.get("k") == Answer("old answer", None)
    cache.put("k2", "new", {}, "stop")
    assert cache.get("k2") == Answer("new", "stop")


def test_seed_is_part_of_the_key(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    identities = [OpenAIBackend(GenerationParams(seed=s)).identity() for s in (None, 1, 2)]
    keys = {response_key(identity, "prompt", 0) for identity in identities}
    assert len(keys) == 3


def test_key_changes_with_everything_that_changes_the_answer() -> None:
    base = response_key(IDENTITY, "prompt", 0)
    assert response_key(dict(IDENTITY), "prompt", 0) == base
    assert response_key({**IDENTITY, "temperature": 0.0}, "prompt", 0) != base
    assert response_key({**IDENTITY, "model": "n"}, "prompt", 0) != base
    assert response_key(IDENTITY, "prompt ", 0) != base
    assert response_key(IDENTITY, "prompt", 1) != base
    assert response_key(IDENTITY, [{"role": "user", "content": "prompt"}], 0) != base


def test_base_url_host_drops_path_and_query() -> None:
    assert base_url_host("http://127.0.0.1:8000/v1?token=secret") == "http://127.0.0.1:8000"
    assert base_url_host(None) is None


def test_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"

    def write(worker: int) -> None:
        cache = ResponseCache(path)
        for i in range(100):
            cache.put(f"{worker}-{i}", "x")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ResponseCache(path)) == 800


def _named(name: str) -> object:
    def convert(image: object) -> object:
        return image
    convert.__name__ = convert.__qualname__ = name
    return convert


def test_a_clip_identity_holds_no_memory_address() -> None:
    """open_clip before 3.3 puts a plain function in its preprocessing, whose repr holds its
    address: the identity must be the same in every process (else no cached feature is ever
    found again), and still tell two functions apart by name."""
    from torchvision import transforms

    from descriptor_gen.score.caches import clip_digest

    ident = {"model": "ViT-B-32", "weights": "openai", "precision": "fp32"}
    first, second = _named("_convert_to_rgb"), _named("_convert_to_rgb")
    assert repr(first) != repr(second)  # two objects, two addresses
    assert clip_digest(ident, transforms.Compose([first])) == \
        clip_digest(ident, transforms.Compose([second]))
    assert clip_digest(ident, transforms.Compose([first])) != \
        clip_digest(ident, transforms.Compose([_named("_convert_to_gray")]))
