"""Scores made a block of images at a time: an evaluation holds one block of (images x
classes) scores and reads the images' features a block at a time from their (memory-mapped)
cache entry, so that its memory does not grow with images x classes (ImageNet-21k's 13 M
images x 21,841 classes would be 1.1 TB of scores) and no whole fp32 copy of the features is
made.

The blocks are cut the same way for every consumer (the metrics, the predictions file), so a
score is computed the same way wherever it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from descriptor_gen.machine import usable_cores

SCORE_CELLS = 8_388_608
"""Scores in a block (32 MB of fp32: 8,192 images x 1,000 classes, 384 x 21,841), or more
where the metrics' threads need more to each get PARALLEL_CELLS (from 3 cores; 128 MB on 8)."""

PARALLEL_CELLS = 4_000_000
"""Scores a thread of the metrics (`scoring.ranked`) is given at least: a thread costs more
than a smaller share saves."""

ALIGN_ROWS = 256  # a block's rows are a multiple of this (the metrics' own blocks)


@dataclass(frozen=True)
class ImageRows:
    """The evaluated images' features as stored (fp16 or fp32, memory-mapped from the cache),
    less the unreadable ones (`keep`: the rows kept, ascending; None: all), read as fp32 a
    block at a time."""

    features: np.ndarray
    keep: np.ndarray | None = None

    @classmethod
    def of(cls, features: np.ndarray, ok: np.ndarray | None = None) -> ImageRows:
        if ok is None or bool(np.all(ok)):
            return cls(features)
        return cls(features, np.flatnonzero(np.asarray(ok, bool)))

    def __len__(self) -> int:
        return len(self.features) if self.keep is None else len(self.keep)

    def block(self, start: int, stop: int) -> np.ndarray:
        chosen = (self.features[start:stop] if self.keep is None
                  else self.features[self.keep[start:stop]])
        return np.asarray(chosen, np.float32)

    def whole(self) -> np.ndarray:
        """Every kept row as fp32 at once (for what needs them together: a learned run)."""
        return self.block(0, len(self))


class RowScores(Protocol):
    """(images, classes) scores, made a block of rows at a time."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def block(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows start..stop (fp32, or a made matrix's own dtype); `out`, fp32 of that shape,
        may be written and returned."""
        ...


@dataclass(frozen=True)
class ScoreMatrix:
    """Scores already made (a learned run's): their blocks are views."""

    matrix: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    def block(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        return self.matrix[start:stop]


@dataclass(frozen=True)
class PooledScores:
    """s(c, x) = image(x) · vector(c): one product a block."""

    images: ImageRows
    vectors: np.ndarray  # (C, D) fp32

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.images), len(self.vectors))

    def block(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(self.images.block(start, stop), self.vectors.T, out=out)


@dataclass(frozen=True)
class MethodScores:
    """A method's own scores (AutoCLIP's), which depend on each image alone: `score` maps a
    block of image features to its (rows, C) scores."""

    images: ImageRows
    classes: int
    score: Callable[[np.ndarray], np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.images), self.classes)

    def block(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.score(self.images.block(start, stop)), np.float32)


def as_rows(score: RowScores | np.ndarray) -> RowScores:
    return ScoreMatrix(score) if isinstance(score, np.ndarray) else score


def metric_threads(cells: int) -> int:
    """Threads the metrics of `cells` scores are shared among: one a usable core, at most 8,
    each given PARALLEL_CELLS at least."""
    return max(1, min(usable_cores(), 8, cells // PARALLEL_CELLS))


def block_rows(classes: int) -> int:
    """Rows of a block of scores, in whole ALIGN_ROWS: SCORE_CELLS' worth, or enough for every
    thread the metrics may use to get its PARALLEL_CELLS."""
    cells = max(SCORE_CELLS, PARALLEL_CELLS * metric_threads(2**62))
    return max(ALIGN_ROWS, cells // max(classes, 1) // ALIGN_ROWS * ALIGN_ROWS)


def blocks(score: RowScores | np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, scores) of each block in order; the block is reused: copy what is kept."""
    rows = as_rows(score)
    n, classes = rows.shape
    step = block_rows(classes)
    buffer = np.empty((min(step, n), classes), np.float32)
    for start in range(0, n, step):
        stop = min(start + step, n)
        yield start, rows.block(start, stop, buffer[: stop - start])
