"""The package's pydantic base model: deferred builds only where pydantic makes them
thread-safe."""

from __future__ import annotations

import sys
import threading

import pydantic
import pytest

from descriptor_gen.models import Model, defers_safely


@pytest.mark.parametrize(("version", "defers"), [
    ("2.6.4", False), ("2.11.10", False), ("2.13.5", False), ("2.14.0", True), ("2.14.4", True),
    ("2.15.0b1", True), ("3.0", True),
])
def test_builds_are_deferred_only_where_pydantic_locks_them(version: str, defers: bool) -> None:
    assert defers_safely(version) is defers


def test_the_installed_pydantic_decides() -> None:
    assert Model.model_config.get("defer_build") is defers_safely(pydantic.VERSION)


def test_threads_using_a_model_first_at_once_all_validate() -> None:
    """Eight threads instantiate a new model at the same moment, 200 times, with the GIL
    switching every microsecond. With pydantic 2.13 and a deferred build, about one round in
    six failed (`type object 'Record' has no attribute '__pydantic_core_schema__'`)."""
    failures: list[str] = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(200):
            class Record(Model):
                name: str
                count: int = 0
                tags: list[str] = []
                weights: dict[str, float] = {}

            start = threading.Barrier(8)

            def use(record: type[Model] = Record, start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    made = record(name="tench", count=1, tags=["fish"])
                    assert made.model_dump()["name"] == "tench"
                except Exception as exc:  # noqa: BLE001 - collected, asserted below
                    failures.append(repr(exc))

            threads = [threading.Thread(target=use) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert not failures, failures[:3]


def test_a_field_named_model_something_does_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    """Before pydantic 2.10 every `model_*` field (a result's `model_loaded`) warned."""

    class Result(Model):
        model_loaded: bool = True

    assert Result().model_loaded
    assert not [w for w in recwarn if "protected namespace" in str(w.message)]
