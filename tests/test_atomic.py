"""All-or-nothing writes: the old file or the new one, never half; and the mode a plain
`open(path, "w")` would give (not the temp file's private 0600)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from descriptor_gen import atomic
from descriptor_gen.atomic import save_figure_atomically, write_atomically, write_text_atomically


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process's umask set to `mask` (and `atomic`'s memo of it forgotten) while inside."""
    old = os.umask(mask)
    atomic.new_file_mode.cache_clear()
    try:
        yield
    finally:
        os.umask(old)
        atomic.new_file_mode.cache_clear()


@pytest.fixture
def umask_027() -> Iterator[None]:
    with umask(0o027):
        yield


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_mode_open_would_give(tmp_path: Path, umask_027: None) -> None:
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    write_text_atomically(tmp_path / "atomic.txt", "x")
    assert _mode(tmp_path / "atomic.txt") == _mode(tmp_path / "plain.txt") == 0o640


def test_a_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    target.chmod(0o604)
    write_text_atomically(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o604


def test_an_interrupted_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    target.write_text("the old report\n")

    def half(handle) -> None:  # noqa: ANN001
        handle.write(b"the new rep")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, half)
    assert target.read_text() == "the old report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_figure_is_saved_in_its_suffixs_format(tmp_path: Path, umask_027: None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    try:
        for name, magic in (("f.png", b"\x89PNG"), ("f.pdf", b"%PDF"), ("f.svg", b"<?xml")):
            save_figure_atomically(fig, tmp_path / name, 50)
            assert (tmp_path / name).read_bytes().startswith(magic)
            assert _mode(tmp_path / name) == 0o640
    finally:
        plt.close(fig)


def test_a_results_file_of_eval_is_readable_by_others(tmp_path: Path) -> None:
    """The CLI's result file under the usual umask (022) is 0644, as any tool's output."""
    from pydantic import BaseModel

    from descriptor_gen.cli.options import write_result

    class Result(BaseModel):
        acc1: float

    with umask(0o022):
        write_result(tmp_path / "out" / "r.json", Result(acc1=0.5))
    assert _mode(tmp_path / "out" / "r.json") == 0o644
