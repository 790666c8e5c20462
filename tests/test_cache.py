from __future__ import annotations

import threading
from pathlib import Path

from descriptor_gen.cache import ResponseCache, base_url_host, response_key

IDENTITY = {"backend": "openai", "model": "m", "temperature": 0.7}


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    key = response_key(IDENTITY, "prompt", 0)
    assert cache.get(key) is None
    cache.put(key, "- a\n- b", {"class": "x"})
    cache.close()
    again = ResponseCache(tmp_path / "c.sqlite")
    assert again.get(key) == "- a\n- b" and len(again) == 1
    assert again.get_many([key, "missing"]) == {key: "- a\n- b"}


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
