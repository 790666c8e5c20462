"""Paths shared by every stage: the cache directory and the data folders of the project."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from descriptor_gen.inputs import output_dir

CACHE_ENV = "DESCRIPTOR_GEN_CACHE"
PROMPTS_ENV = "DESCRIPTOR_GEN_PROMPTS"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseModel):
    """Resolved locations; build it with :meth:`Settings.resolve`."""

    model_config = ConfigDict(frozen=True)

    cache_dir: Path
    prompts_dir: Path

    @classmethod
    def resolve(cls, cache_dir: Path | str | None = None, writable: bool = False) -> Settings:
        """The cache is `cache_dir`, else `$DESCRIPTOR_GEN_CACHE`, else `~/.cache/descriptor_gen`.

        Args:
            cache_dir: the value of a `--cache-dir` flag, if one was given.
            writable: check now that the cache folder can be made and written (commands that
                cache), so that a bad `--cache-dir` is refused before any work.
        """
        flag = "--cache-dir" if cache_dir is not None else f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "cache folder"
        if cache_dir is None:
            cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "descriptor_gen"
        prompts = os.environ.get(PROMPTS_ENV) or PROJECT_ROOT / "prompts"
        resolved = Path(cache_dir).expanduser()
        if writable:
            output_dir(resolved, flag)
        return cls(cache_dir=resolved, prompts_dir=Path(prompts).expanduser())
