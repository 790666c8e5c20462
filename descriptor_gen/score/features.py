"""CLIP models from open_clip, and image and text features with on-disk caches.

Image features are cached per (model, weights, preprocessing, dataset file list with sizes and
mtimes, stored precision) as one `.npy` (fp32 for fp32 runs, fp16 otherwise) plus a JSON
index; text features per (model, weights, text) in SQLite.
Both are written so that an interrupted run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from descriptor_gen.atomic import write_atomically, writing
from descriptor_gen.generation.cache import open_sqlite, quarantine
from descriptor_gen.hashing import sha256_file
from descriptor_gen.inputs import parse_json, read_text
from descriptor_gen.errors import DescgenError

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class ClipModel:
    """A loaded open_clip model with its preprocessing, tokenizer and a stable identity."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    precision: str
    identity: str


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DescgenError(f"--device {device}: CUDA is not available on this machine")
    return device


def check_device(device: str, precision: str) -> str:
    """The device to use, refused when it cannot run (CUDA missing, fp16 on a CPU)."""
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise DescgenError(f"--device {device}: choose auto, cpu, cuda or cuda:N")
    device = pick_device(device)
    if precision == "fp16" and device == "cpu":
        raise DescgenError("--precision fp16 needs a GPU; use fp32 or bf16 on the CPU")
    return device


def load_clip(model: str = "ViT-B-32", pretrained: str = "openai", device: str = "auto",
              precision: str = "fp32") -> ClipModel:
    """Load an open_clip model by name or model-config JSON, with a tag, checkpoint or `none`.

    Args:
        model: an open_clip model name (`ViT-B-32`) or a path to a model-config JSON file.
        pretrained: an open_clip pretrained tag, a local checkpoint file (loaded with
            `weights_only=True`), or `none` for random weights.
        device: `auto`, `cpu`, `cuda`, `cuda:N`.
        precision: `fp32`, `fp16` or `bf16` (fp16 needs a GPU).
    """
    import open_clip

    device = check_device(device, precision)
    name, weights, ident = _resolve(model, pretrained, precision)
    if weights is None:
        torch.manual_seed(0)  # random weights, but the same ones every run
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, precision=precision, device=device, weights_only=True
        )
    except Exception as exc:  # noqa: BLE001 - see below
        # A user's checkpoint or model config can fail in any way inside torch.load or
        # open_clip; a tag or a built-in model failing otherwise is a bug and keeps its traceback.
        user_file = ident["weights"].startswith("file:") or ident["model"].startswith("config:")
        if not user_file and not isinstance(exc, (RuntimeError, ValueError, OSError)):
            raise
        first = str(exc).strip().split("\n")[0][:200]
        what = (f"{pretrained}: not a checkpoint open_clip can load into {model}"
                if ident["weights"].startswith("file:")
                else f"cannot load CLIP model {model!r} with weights {pretrained!r}")
        raise DescgenError(f"{what} ({type(exc).__name__}: {first})") from exc
    clip.eval()
    identity = json.dumps({**ident, "preprocess": repr(preprocess)}, sort_keys=True)
    return ClipModel(clip, preprocess, open_clip.get_tokenizer(name), device, precision,
                     hashlib.sha256(identity.encode()).hexdigest())


def clip_identity(model: str, pretrained: str, precision: str) -> dict[str, str]:
    """What identifies a CLIP model's numbers without loading it: the model (a config file by its
    hash), the weights (a checkpoint by its hash, a tag by name) and the precision."""
    return _resolve(model, pretrained, precision)[2]


def _resolve(model: str, pretrained: str, precision: str) -> tuple[str, str | None, dict[str, str]]:
    """(open_clip name, weights to load, identity) of a model spec, checked."""
    import open_clip

    if precision not in PRECISIONS:
        raise DescgenError(f"--precision {precision}: choose {', '.join(PRECISIONS)}")
    name, model_id = _model_name(model, open_clip)
    weights, weights_id = _weights(pretrained)
    return name, weights, {"model": model_id, "weights": weights_id, "precision": precision}


def _model_name(model: str, open_clip: Any) -> tuple[str, str]:
    path = Path(model)
    if path.suffix == ".json":
        config = parse_json(read_text(path, "model-config file"), path)
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg")
                   if not isinstance(config, dict) or k not in config]
        if missing:
            raise DescgenError(f"{path}: not an open_clip model config (no {', '.join(missing)})")
        open_clip.add_model_config(path)
        return path.stem, f"config:{sha256_file(path)}"
    if model not in open_clip.list_models():
        raise DescgenError(f"unknown open_clip model {model!r} (see open_clip.list_models(), or"
                           " give a model-config JSON path)")
    return model, model


def _weights(pretrained: str) -> tuple[str | None, str]:
    if pretrained.lower() == "none":
        return None, "random"
    path = Path(pretrained)
    if path.is_file():
        return str(path), f"file:{sha256_file(path)}"
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        raise DescgenError(f"{path}: no such checkpoint file")
    return pretrained, f"tag:{pretrained}"


class ImageFiles(Dataset):
    """Preprocessed images (files, or by index through `reader`); an unreadable image yields
    `ok=False` instead of stopping the run."""

    def __init__(self, paths: list[str], preprocess: Any, size: int,
                 reader: Callable[[int], Any] | None = None) -> None:
        self.paths, self.preprocess, self.size, self.reader = paths, preprocess, size, reader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, str]:
        try:
            if self.reader is not None:
                return self.preprocess(self.reader(index).convert("RGB")), True, ""
            with Image.open(self.paths[index]) as image:
                return self.preprocess(image.convert("RGB")), True, ""
        except Exception as exc:  # noqa: BLE001 - any decoder failure marks the image unreadable
            return torch.zeros(3, self.size, self.size), False, f"{type(exc).__name__}: {exc}"


def image_size(preprocess: Any) -> int:
    for transform in getattr(preprocess, "transforms", []):
        size = getattr(transform, "size", None)
        if size is not None:
            return size if isinstance(size, int) else int(size[0])
    return 224


def autocast_for(clip: ClipModel) -> Any:
    """Autocast to the model's half precision (bf16 on a CPU too: its weights are bf16)."""
    device = "cuda" if clip.device.startswith("cuda") else "cpu"
    if clip.precision == "fp32":
        return torch.autocast(device, enabled=False)
    dtype = torch.float16 if clip.precision == "fp16" else torch.bfloat16
    return torch.autocast(device, dtype=dtype)


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


def encode_batch(clip: ClipModel, images: torch.Tensor, ok: torch.Tensor,
                  normalise: bool = True) -> np.ndarray:
    images = images.to(clip.device, non_blocking=True)
    feats = clip.model.encode_image(images).float()
    if normalise:
        feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    feats[~ok.to(clip.device)] = 0
    return feats.cpu().numpy().astype(feature_dtype(clip.precision))


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


def encode_images(clip: ClipModel, paths: list[str], batch_size: int = 64, workers: int = 2,
                  progress: bool = False, reader: Callable[[int], Any] | None = None,
                  on_batch: OnBatch | None = None, view: ImageView = CLIP_VIEW) -> ImageFeatures:
    """Encode images (files, or by index through `reader`) in batches through a DataLoader;
    features are L2-normalised (unless the view keeps them as encoded)."""
    preprocess = clip.preprocess if view.transform is None else view.transform(clip.preprocess)
    dataset = ImageFiles(paths, preprocess, image_size(clip.preprocess), reader)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        pin_memory=clip.device.startswith("cuda"),
                        persistent_workers=False)
    chunks, oks, errors = [], [], {}
    start = 0
    bar = tqdm(total=len(paths), disable=not progress, desc="images", unit="img")
    with bar, torch.inference_mode(), autocast_for(clip):
        for images, ok, why in loader:
            chunks.append(encode_batch(clip, images, ok, view.normalise))
            oks.append(ok.numpy())
            batch_errors = {start + i: w for i, w in enumerate(why) if w}
            errors.update(batch_errors)
            if on_batch is not None:
                on_batch(start, chunks[-1], oks[-1], batch_errors)
            start += len(ok)
            bar.update(len(ok))
    if not chunks:
        return ImageFeatures(np.zeros((0, 0), feature_dtype(clip.precision)), np.zeros(0, bool), {})
    return ImageFeatures(np.concatenate(chunks), np.concatenate(oks), errors)


def encode_stream(clip: ClipModel, shards: list[str], batch_size: int = 64, workers: int = 2,
                  progress: bool = False, view: ImageView = CLIP_VIEW) -> ImageFeatures:
    """Encode a webdataset's shards as they stream (decoded in the workers); the features,
    labels and sample names are put back in shard order whatever order the workers answered."""
    from descriptor_gen.data.wds import ShardStream

    preprocess = clip.preprocess if view.transform is None else view.transform(clip.preprocess)
    stream = ShardStream(shards, preprocess, image_size(clip.preprocess))
    loader = DataLoader(stream, batch_size=batch_size, num_workers=min(workers, len(shards)),
                        pin_memory=clip.device.startswith("cuda"))
    rows: list[tuple[int, int, str, int, str]] = []
    chunks = []
    bar = tqdm(disable=not progress, desc="images", unit="img")
    with bar, torch.inference_mode(), autocast_for(clip):
        for images, ok, why, label, shard, position, key in loader:
            bar.update(len(ok))
            ok = ok & (label >= 0)
            chunks.append(encode_batch(clip, images, ok, view.normalise))
            rows += [(int(s), int(p), k, int(y), w or ("" if y >= 0 else "no class label"))
                     for s, p, k, y, w in zip(shard, position, key, label, why)]
    if not chunks:
        return ImageFeatures(np.zeros((0, 0), feature_dtype(clip.precision)), np.zeros(0, bool),
                             {}, [], [])
    order = sorted(range(len(rows)), key=lambda i: rows[i][:2])
    feats = np.concatenate(chunks)[order]
    ordered = [rows[i] for i in order]
    errors = {i: r[4] for i, r in enumerate(ordered) if r[4]}
    ok = np.array([not r[4] for r in ordered], bool)
    return ImageFeatures(feats, ok, errors, [max(r[3], 0) for r in ordered], [r[2] for r in ordered])


def encode_texts(clip: ClipModel, texts: list[str], batch_size: int = 1024) -> np.ndarray:
    """Encode texts in large batches across classes; rows are L2-normalised fp32."""
    out = []
    with torch.inference_mode(), autocast_for(clip):
        for start in range(0, len(texts), batch_size):
            tokens = clip.tokenizer(texts[start : start + batch_size]).to(clip.device)
            feats = clip.model.encode_text(tokens).float()
            out.append((feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _embed_width(clip: ClipModel) -> int | None:
    """The text embedding's width, when the model says (open_clip: its text projection)."""
    projection = getattr(clip.model, "text_projection", None)
    if isinstance(projection, torch.nn.Linear):
        return projection.out_features
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[-1])
    return None


class ImageFeatureCache:
    """`<key>.npy` (features as `feature_dtype`) + `<key>.json` (ok flags, errors), written temp-then-rename."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def key(self, clip: ClipModel, source: str, view: ImageView = CLIP_VIEW) -> str:
        """The entry of `clip`'s features of a source (its identity: files with sizes and
        dates, or a fingerprint), stored at the precision the run's features are kept in, seen
        through `view`."""
        stored = np.dtype(feature_dtype(clip.precision)).name
        seen = "" if view == CLIP_VIEW else f"\0view:{view.name}"
        return hashlib.sha256(f"{clip.identity}\0{source}\0{stored}{seen}".encode()).hexdigest()

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
        write_atomically(self.folder / f"{key}.json", lambda f: f.write(json.dumps(meta).encode()))


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
        write_atomically(self.folder / f"{index}.json",
                      lambda f: f.write(json.dumps({"ok": ok.tolist(), "errors": errors}).encode()))
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
    def key(clip: ClipModel, text: str) -> str:
        return hashlib.sha256(f"{clip.identity}\0{text}".encode()).hexdigest()

    def features(self, clip: ClipModel, texts: list[str], batch_size: int = 1024) -> tuple[np.ndarray, int]:
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
        width = _embed_width(clip)
        if width is not None:  # a damaged row is encoded again, not stacked into the scores
            found = {k: v for k, v in found.items() if len(v) == width}
        missing = [t for t in unique if keys[t] not in found]
        if missing:
            encoded = encode_texts(clip, missing, batch_size)
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
