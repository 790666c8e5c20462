"""The feature caches and the types they hold, importing no torch: a re-evaluation whose
features are all cached reads them without loading a model (or torch, or open_clip).

Image features are cached per (model, weights, preprocessing, dataset file list with sizes and
mtimes, stored precision, view, decoder) as one `.npy` (fp32 for fp32 runs, fp16 otherwise)
plus a JSON index; text features per (model, weights, text) in SQLite. Both are written so that
an interrupted run leaves no half-written entry.

The CLIP they are keyed by is anything with an `identity` and a `precision` (a loaded
`features.ClipModel`, or a `clip_ref.ClipRef` that loads only when something must be encoded);
encoding missing texts goes through its `encode_texts`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from importlib import metadata
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from descriptor_gen.atomic import write_atomically, write_text_atomically, writing
from descriptor_gen.generation.cache import open_sqlite, quarantine
from descriptor_gen.hashing import sha256_file, sha256_text
from descriptor_gen.paths import CLIP_IDENTITIES
from descriptor_gen.score.decode import decoder_key

def image_size(preprocess: Any) -> int:
    for transform in getattr(preprocess, "transforms", []):
        size = getattr(transform, "size", None)
        if size is not None:
            return size if isinstance(size, int) else int(size[0])
    return 224


def feature_dtype(precision: str) -> type[np.floating[Any]]:
    """How image features are stored: fp32 runs keep fp32 (fp16 would move scores by up to
    1e-4 and flip near-ties), fp16 and bf16 runs fp16."""
    return np.float32 if precision == "fp32" else np.float16


@dataclass
class ImageFeatures:
    """Features of a source's images; for a stream (a webdataset) also the labels and names
    that came with them (None otherwise)."""

    features: np.ndarray  # (N, D) feature_dtype, L2-normalised, rows of unreadable images are zero
    ok: np.ndarray  # (N,) bool
    errors: dict[int, str]
    labels: list[int] | None = None
    keys: list[str] | None = None

    def select(self, rows: list[int]) -> ImageFeatures:
        """The features of some rows, in the order given (a subset of a file list)."""
        where = {old: new for new, old in enumerate(rows)}
        return ImageFeatures(np.asarray(self.features)[rows], np.asarray(self.ok, bool)[rows],
                             {where[i]: e for i, e in self.errors.items() if i in where})


OnBatch = Callable[[int, np.ndarray, np.ndarray, dict[int, str]], None]
"""Told each encoded batch in input order: (first index, features, ok flags, errors by index)."""


@dataclass(frozen=True)
class ImageView:
    """How images become features: `transform` builds the preprocessing from the CLIP's (None:
    the CLIP's own), `normalise` L2-normalises the features. A view other than the CLIP's own
    is part of the feature cache's key."""

    name: str
    transform: Callable[[Any], Any] | None = None
    normalise: bool = True


def _comparative_transform(preprocess: Any) -> Any:
    """Comparative-CLIP's extract_image_features.py: Resize((S, S)) (a squash, bilinear),
    Grayscale(num_output_channels=3), ToTensor, CLIP's Normalize."""
    from torchvision import transforms

    size = image_size(preprocess)
    normalise = next(t for t in preprocess.transforms if isinstance(t, transforms.Normalize))
    return transforms.Compose([transforms.Resize((size, size)),
                               transforms.Grayscale(num_output_channels=3),
                               transforms.ToTensor(), normalise])


CLIP_VIEW = ImageView("clip")
VIEWS: dict[str, ImageView] = {
    "clip": CLIP_VIEW,
    # Comparative-CLIP's shot features for its filter: squashed, grey, features kept as encoded
    "comparative-released": ImageView("comparative-released", _comparative_transform, False),
}


class ImageFeatureCache:
    """`<key>.npy` (features as `feature_dtype`) + `<key>.json` (ok flags, errors), written temp-then-rename."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def key(self, clip: Any, source: str, view: ImageView = CLIP_VIEW, decode: str = "pil",
            device: str = "cpu") -> str:
        """The entry of `clip`'s features of a source (its identity: files with sizes and
        dates, or a fingerprint), stored at the precision the run's features are kept in, seen
        through `view`, decoded by `decode` (on `device`)."""
        stored = np.dtype(feature_dtype(clip.precision)).name
        seen = "" if view == CLIP_VIEW else f"\0view:{view.name}"
        pixels = decoder_key(decode, device)
        return hashlib.sha256(f"{clip.identity}\0{source}\0{stored}{seen}{pixels}".encode()).hexdigest()

    def load(self, key: str, rows: int | None = None) -> ImageFeatures | None:
        """The cached features, or None: not cached, or a broken entry (moved aside with a
        warning, to be encoded again). `rows`: how many images the entry must hold."""
        array, index = self.folder / f"{key}.npy", self.folder / f"{key}.json"
        if not (array.is_file() and index.is_file()):
            return None
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
            feats = ImageFeatures(np.load(array, mmap_mode="r", allow_pickle=False),
                                  np.array(meta["ok"], bool),
                                  {int(k): str(v) for k, v in meta["errors"].items()},
                                  meta.get("labels"), meta.get("keys"))
            if feats.features.ndim != 2 or len(feats.features) != len(feats.ok) or (
                    rows is not None and len(feats.ok) != rows):
                raise ValueError(f"{feats.features.shape} features for {len(feats.ok)} images")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            quarantine(array, f"{type(exc).__name__}: {exc}")
            quarantine(index, "its features were broken")
            return None
        return feats

    def save(self, key: str, feats: ImageFeatures) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / f"{key}.npy", lambda f: np.save(f, feats.features))
        meta = {"ok": feats.ok.tolist(), "errors": {str(k): v for k, v in feats.errors.items()},
                "labels": feats.labels, "keys": feats.keys}
        write_text_atomically(self.folder / f"{key}.json", json.dumps(meta))


class PartialFeatures:
    """The finished chunks of an entry still being encoded, `partial/<key>-<rows>/<i>.npy|.json`
    with `rows` consecutive images each, so that an interrupted encoding (a crash, Ctrl-C, a
    lost cluster) resumes after its last whole chunk. Removed once the entry is saved."""

    def __init__(self, folder: Path, key: str, rows: int) -> None:
        self.folder, self.rows = folder / "partial" / f"{key}-{rows}", rows
        self.next = 0  # the first image not yet in a chunk file
        self.base = 0  # the first image not loaded: where this run's batches start
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self._errors: dict[int, str] = {}
        self._writing = True

    def load(self) -> ImageFeatures | None:
        """The whole chunks from the start, in order; a broken chunk ends them (it and those
        after it are encoded again)."""
        feats, oks, errors = [], [], {}
        for i in itertools.count():
            array, meta_file = self.folder / f"{i}.npy", self.folder / f"{i}.json"
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
                block = np.load(array, allow_pickle=False)
                ok = np.array(meta["ok"], bool)
                if block.ndim != 2 or len(block) != self.rows or len(ok) != self.rows:
                    raise ValueError(f"{block.shape} features, {len(ok)} flags")
            except FileNotFoundError:
                break
            except (OSError, ValueError, KeyError, TypeError) as exc:
                quarantine(array, f"{type(exc).__name__}: {exc}")
                break
            feats.append(block)
            oks.append(ok)
            errors.update({int(k): str(v) for k, v in meta["errors"].items()})
        self.next = self.base = len(feats) * self.rows
        if not feats:
            return None
        return ImageFeatures(np.concatenate(feats), np.concatenate(oks), errors)

    def add(self, start: int, features: np.ndarray, ok: np.ndarray, errors: dict[int, str]) -> None:
        """Take a batch of the images after the loaded chunks (`start` and the error indices
        count from the first image not loaded); write each chunk once it is whole. A batch out
        of order stops the writing (nothing wrong is kept)."""
        done = self.next + sum(len(f) for f, _ in self._buffer)
        if not self._writing or self.base + start != done:
            self._writing = False
            return
        self._buffer.append((np.asarray(features), np.asarray(ok, bool)))
        self._errors.update({self.base + k: v for k, v in errors.items()})
        while sum(len(f) for f, _ in self._buffer) >= self.rows:
            feats = np.concatenate([f for f, _ in self._buffer])
            oks = np.concatenate([o for _, o in self._buffer])
            self._write(feats[:self.rows], oks[:self.rows])
            self._buffer = [(feats[self.rows:], oks[self.rows:])]

    def _write(self, feats: np.ndarray, ok: np.ndarray) -> None:
        index = self.next // self.rows
        end = self.next + self.rows
        errors = {str(k): v for k, v in self._errors.items() if self.next <= k < end}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / f"{index}.npy", lambda f: np.save(f, feats))
        write_text_atomically(self.folder / f"{index}.json",
                              json.dumps({"ok": ok.tolist(), "errors": errors}))
        self._errors = {k: v for k, v in self._errors.items() if k >= end}
        self.next = end

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class TextFeatureCache:
    """Text features keyed by (model identity, text), in SQLite (WAL), as fp32 bytes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._conn()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_sqlite(self.path, "CREATE TABLE IF NOT EXISTS text_features"
                                          " (key TEXT PRIMARY KEY, vec BLOB)")
            self._local.conn = conn
        return conn

    @staticmethod
    def key(clip: Any, text: str) -> str:
        return hashlib.sha256(f"{clip.identity}\0{text}".encode()).hexdigest()

    def features(self, clip: Any, texts: list[str], batch_size: int = 1024) -> tuple[np.ndarray, int]:
        """Features of `texts` in order, encoding only the uncached; returns (features, encoded)."""
        unique = list(dict.fromkeys(texts))
        keys = {t: self.key(clip, t) for t in unique}
        found: dict[str, np.ndarray] = {}
        conn = self._conn()
        values = list(keys.values())
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            rows = conn.execute(f"SELECT key, vec FROM text_features WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update({k: np.frombuffer(v, np.float32) for k, v in rows
                          if isinstance(v, bytes) and len(v) % 4 == 0})
        width = getattr(clip, "embed_width", None)
        if width is not None:  # a damaged row is encoded again, not stacked into the scores
            found = {k: v for k, v in found.items() if len(v) == width}
        missing = [t for t in unique if keys[t] not in found]
        if missing:
            encoded = clip.encode_texts(missing, batch_size)
            with writing(self.path):
                conn.execute("BEGIN")
                try:
                    conn.executemany("INSERT OR REPLACE INTO text_features VALUES (?, ?)",
                                     [(keys[t], encoded[i].astype(np.float32).tobytes())
                                      for i, t in enumerate(missing)])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            found.update({keys[t]: encoded[i] for i, t in enumerate(missing)})
        return np.stack([found[keys[t]] for t in texts]), len(missing)


# -- a CLIP's cache identity, remembered (see clip_ref.py) ----------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _weights_name(pretrained: str) -> str:
    path = Path(pretrained)
    if pretrained.lower() != "none" and path.is_file():
        stat = path.stat()
        return f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return pretrained


def _model_name(model: str) -> str:
    path = Path(model)
    if path.suffix == ".json" and path.is_file():
        return f"config:{sha256_file(path)}"
    return model


def clip_digest(ident: dict[str, str], preprocess: Any) -> str:
    """A CLIP's identity (`ClipModel.identity`): what names its model, weights and precision
    (`features.clip_identity`), and its preprocessing by its repr, less the memory addresses a
    function's repr holds (open_clip before 3.3 has `<function _convert_to_rgb at 0x...>` in
    it: a new identity, and no cached feature found, in every process)."""
    described = _ADDRESS.sub("", repr(preprocess))
    return sha256_text(json.dumps({**ident, "preprocess": described}, sort_keys=True))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def preprocess_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """open_clip's preprocessing settings (`get_model_preprocess_cfg`) as the memo keeps them
    (JSON: its tuples come back as lists) turned back into what open_clip made them from."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def memo_key(model: str, pretrained: str, precision: str) -> str:
    return sha256_text(json.dumps([_model_name(model), _weights_name(pretrained), precision,
                                   _version("open_clip_torch"), _version("torchvision")]))


class IdentityMemo:
    """`clip_identities.sqlite`: memo key -> the loaded CLIP's identity, its `clip_identity`
    and its text embedding width."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / CLIP_IDENTITIES

    def _conn(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open_sqlite(self.path, "CREATE TABLE IF NOT EXISTS identities"
                                      " (key TEXT PRIMARY KEY, value TEXT)")

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        conn = self._conn()
        try:
            row = conn.execute("SELECT value FROM identities WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        try:
            value = json.loads(row[0]) if row else None
        except (TypeError, ValueError):
            return None
        return value if isinstance(value, dict) and isinstance(value.get("identity"), str) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        conn = self._conn()
        try:
            with conn:
                conn.execute("INSERT OR REPLACE INTO identities VALUES (?, ?)",
                             (key, json.dumps(value, sort_keys=True)))
        finally:
            conn.close()
