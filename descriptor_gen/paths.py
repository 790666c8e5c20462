"""Paths shared by every stage: the cache directory and the data folders of the project."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ConfigDict

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import output_dir

CACHE_ENV = "DESCRIPTOR_GEN_CACHE"
PROMPTS_ENV = "DESCRIPTOR_GEN_PROMPTS"
RESULTS_ENV = "DESCRIPTOR_GEN_RESULTS"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# What the cache folder holds, each named once.
IMAGE_FEATURES = "image_features"  # folder: <key>.npy + <key>.json, partial/ chunks
LEARN_FEATURES = "learn_features"  # folder: the shots' features of learned runs
TEXT_FEATURES = "text_features.sqlite"
RESPONSES = "responses.sqlite"
BATCHES = "batches"  # folder: Batch API manifests
CLIP_IDENTITIES = "clip_identities.sqlite"  # a CLIP's cache identity without loading it
CACHE_PARTS = (IMAGE_FEATURES, LEARN_FEATURES, TEXT_FEATURES, RESPONSES, BATCHES, CLIP_IDENTITIES)


def results_root() -> Path:
    """Where results go unless `--out` says: `$DESCRIPTOR_GEN_RESULTS`, else `results/` here."""
    return Path(os.environ.get(RESULTS_ENV) or "results").expanduser()


class CachePaths(Model):
    """Resolved locations; build it with :meth:`CachePaths.resolve`."""

    model_config = ConfigDict(frozen=True)

    cache_dir: Path
    prompts_dir: Path

    @classmethod
    def resolve(cls, cache_dir: Path | str | None = None, writable: bool = False) -> CachePaths:
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
            _writable_parts(resolved, flag)
        return cls(cache_dir=resolved, prompts_dir=Path(prompts).expanduser())


def _writable_parts(cache: Path, flag: str) -> None:
    """The cache's own folders and databases that exist must be writable too (a read-only
    `image_features/` in a writable cache would fail only after the work)."""
    for name in CACHE_PARTS:
        part = cache / name
        if part.is_dir():
            output_dir(part, f"{flag} {cache}: its")
        elif part.exists() and not os.access(part, os.W_OK):
            raise DescgenError(f"{flag} {cache}: its {name} is not writable (fix its permissions"
                               " or give another --cache-dir)")
