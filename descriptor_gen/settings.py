"""Paths shared by every stage: the cache directory and the data folders of the project."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

CACHE_ENV = "DESCRIPTOR_GEN_CACHE"
PROMPTS_ENV = "DESCRIPTOR_GEN_PROMPTS"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseModel):
    """Resolved locations; build it with :meth:`Settings.resolve`."""

    model_config = ConfigDict(frozen=True)

    cache_dir: Path
    prompts_dir: Path

    @classmethod
    def resolve(cls, cache_dir: Path | str | None = None) -> Settings:
        """The cache is `cache_dir`, else `$DESCRIPTOR_GEN_CACHE`, else `~/.cache/descriptor_gen`.

        Args:
            cache_dir: the value of a `--cache-dir` flag, if one was given.
        """
        if cache_dir is None:
            cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "descriptor_gen"
        prompts = os.environ.get(PROMPTS_ENV) or PROJECT_ROOT / "prompts"
        return cls(cache_dir=Path(cache_dir).expanduser(), prompts_dir=Path(prompts).expanduser())
