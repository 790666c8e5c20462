from __future__ import annotations

from pathlib import Path

import pytest

from descriptor_gen.paths import CachePaths


def test_flag_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESCRIPTOR_GEN_CACHE", str(tmp_path / "env"))
    assert CachePaths.resolve(tmp_path / "flag").cache_dir == tmp_path / "flag"
    assert CachePaths.resolve().cache_dir == tmp_path / "env"


def test_home_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESCRIPTOR_GEN_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert CachePaths.resolve().cache_dir == tmp_path / ".cache" / "descriptor_gen"


def test_prompts_dir_is_the_project_folder() -> None:
    assert (CachePaths.resolve().prompts_dir / "banks" / "default.yaml").is_file()
