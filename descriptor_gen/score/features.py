"""CLIP models from open_clip, and encoding images and texts with them (torch). The caches
the features go to, and their types, are in `caches.py` (no torch)."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from descriptor_gen.hashing import sha256_file
from descriptor_gen.inputs import parse_json, read_text
from descriptor_gen.machine import fit_torch_threads, loader_workers
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.weights import check_weights
from descriptor_gen.score.engine_options import check_device_name
from descriptor_gen.score.decode import (
    Geometry,
    TorchDecodeFiles,
    batch_pixels,
    collate_items,
    open_draft,
    pil_from_bytes,
    warm_decoder,
    warm_decoder_soon,
)
from descriptor_gen.score.jpeg import load_decoder
from descriptor_gen.score.prefetch import ahead
from descriptor_gen.score.caches import (
    CLIP_VIEW,
    VIEWS,
    ImageFeatureCache,
    ImageFeatures,
    ImageView,
    OnBatch,
    PartialFeatures,
    TextFeatureCache,
    clip_digest,
    feature_dtype,
    image_size,
    memo_key,
)

__all__ = ["CLIP_VIEW", "VIEWS", "ClipModel", "ImageFeatureCache", "ImageFeatures", "ImageFiles",
           "ImageView", "OnBatch", "PartialFeatures", "TextFeatureCache", "autocast_for",
           "clip_identity", "encode_batch", "encode_images", "encode_stream", "encode_texts",
           "feature_dtype", "image_size", "load_clip"]  # the caches' names are re-exported

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
    loaded: bool = True  # a model was built (see clip_ref.ClipRef for one that may not be)
    memo_key: str | None = None  # what names it without loading it (clip_ref.memo_key)
    spec_identity: dict[str, str] | None = None  # clip_identity() of what was loaded
    preprocess_cfg: dict[str, Any] | None = None  # open_clip's settings `preprocess` is made from

    @property
    def embed_width(self) -> int | None:
        """The text embedding's width, when the model says (open_clip: its text projection)."""
        projection = getattr(self.model, "text_projection", None)
        if isinstance(projection, torch.nn.Linear):
            return projection.out_features
        if isinstance(projection, torch.Tensor):
            return int(projection.shape[-1])
        return None

    def encode_texts(self, texts: list[str], batch_size: int = 1024) -> np.ndarray:
        return encode_texts(self, texts, batch_size)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DescgenError(f"--device {device}: CUDA is not available on this machine")
    return device


def check_device(device: str, precision: str) -> str:
    """The device to use, refused when it cannot run (CUDA missing, fp16 on a CPU)."""
    check_device_name(device)
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
    fit_torch_threads(torch)
    name, weights, ident = _resolve(model, pretrained, precision)
    if weights is None:
        torch.manual_seed(0)  # random weights, but the same ones every run
    elif not ident["weights"].startswith("file:"):
        check_weights(name, weights)
    try:
        clip, preprocess = _create(open_clip, name, weights, precision, device)
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
    return ClipModel(clip, preprocess, open_clip.get_tokenizer(name), device, precision,
                     clip_digest(ident, preprocess),
                     memo_key=memo_key(model, pretrained, precision), spec_identity=ident,
                     preprocess_cfg=_preprocess_settings(open_clip, clip))


def _preprocess_settings(open_clip: Any, model: Any) -> dict[str, Any] | None:
    """open_clip's settings for the model's preprocessing, as JSON keeps them; None for a model
    that does not say (the memo then cannot make its preprocessing)."""
    try:
        return json.loads(json.dumps(open_clip.get_model_preprocess_cfg(model)))
    except (AttributeError, TypeError, ValueError):
        return None


def _create(open_clip: Any, name: str, weights: str | None, precision: str,
            device: str) -> tuple[Any, Any]:
    """open_clip's model and preprocessing; with weights, built without drawing the random
    numbers the weights replace (`weights_to_come`)."""
    # open_clip loads a whole-model checkpoint strictly (every parameter and persistent buffer
    # is set, or it raises), except big_vision's .npz files, which are built the ordinary way
    strict = weights is not None and not weights.lower().endswith((".npz", ".npy"))
    with weights_to_come() if strict else contextlib.nullcontext():
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, precision=precision, device=device, weights_only=True)
    return model, preprocess


INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                  "xavier_uniform_", "xavier_normal_", "orthogonal_", "constant_", "zeros_",
                  "ones_", "eye_", "dirac_", "sparse_")


@contextlib.contextmanager
def weights_to_come() -> Any:
    """While a model whose every weight is about to be loaded is built: `torch.nn.init` leaves
    floating-point tensors as allocated instead of drawing numbers into them (a ViT-B/32 draws
    about 150 million and throws them away: seconds on a CPU). Not for two threads building
    models at once (it patches torch)."""
    import sys

    from torch.nn import init

    originals = {n: getattr(init, n) for n in INIT_FUNCTIONS if hasattr(init, n)}
    bound = [(module, n) for module in [m for k, m in list(sys.modules.items())
                                        if k.startswith(("torch.nn", "open_clip", "timm"))]
             for n, f in originals.items() if _holds(module, n, f)]  # `from init import`

    def keep(original: Callable[..., Any]) -> Callable[..., Any]:
        def skip(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return tensor if tensor.is_floating_point() else original(tensor, *args, **kwargs)
        return skip

    try:
        for module, n in bound:
            setattr(module, n, keep(originals[n]))
        yield
    finally:
        for module, n in bound:
            setattr(module, n, originals[n])


def _holds(module: Any, name: str, value: Any) -> bool:
    """Whether `module.name` is `value` (a module whose `__getattr__` fails holds nothing)."""
    try:
        return getattr(module, name, None) is value
    except Exception:  # noqa: BLE001 - a lazy module may raise anything
        return False


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
    `ok=False` instead of stopping the run. `draft`: JPEGs decode at a reduced scale first
    (`--decode pil-draft`), the shorter side staying at least `draft` pixels."""

    def __init__(self, paths: list[str], preprocess: Any, size: int,
                 reader: Callable[[int], Any] | None = None, draft: int = 0) -> None:
        self.paths, self.preprocess, self.size, self.reader = paths, preprocess, size, reader
        self.draft = draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, str]:
        try:
            if self.reader is not None:
                return self.preprocess(self.reader(index).convert("RGB")), True, ""
            with Image.open(self.paths[index]) as image:
                if self.draft:
                    open_draft(image, self.draft)
                return self.preprocess(image.convert("RGB")), True, ""
        except Exception as exc:  # noqa: BLE001 - any decoder failure marks the image unreadable
            return torch.zeros(3, self.size, self.size), False, f"{type(exc).__name__}: {exc}"


def autocast_for(clip: ClipModel) -> Any:
    """Autocast to the model's half precision (bf16 on a CPU too: its weights are bf16)."""
    device = "cuda" if clip.device.startswith("cuda") else "cpu"
    if clip.precision == "fp32":
        return torch.autocast(device, enabled=False)
    dtype = torch.float16 if clip.precision == "fp16" else torch.bfloat16
    return torch.autocast(device, dtype=dtype)


def encode_batch(clip: ClipModel, images: torch.Tensor, ok: torch.Tensor,
                 normalise: bool = True, on_device: bool = False) -> Any:
    """A batch's features (rows of unreadable images zero) as `feature_dtype`: a NumPy array,
    or (`on_device`) a tensor left on the device, so that the copy back waits for a chunk."""
    images = images.to(clip.device, non_blocking=True)
    feats = clip.model.encode_image(images).float()
    if normalise:
        feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if not bool(ok.all()):  # `ok` is on the host: asking it does not wait for the device
        feats.masked_fill_(~ok.to(clip.device).unsqueeze(1), 0)
    stored = feats.to(torch.float32 if feature_dtype(clip.precision) == np.float32 else torch.float16)
    return stored if on_device else stored.cpu().numpy()


FLUSH_ROWS = 8192
"""On a GPU, features stay on the device until this many rows are done: one copy back (and
one wait) per chunk instead of one per batch."""


class _Gathered:
    """Batches' features as they come, copied back to the host a chunk at a time (every batch
    on a CPU), told to `on_batch` in input order; `flush` at the end or an interruption."""

    def __init__(self, on_batch: OnBatch | None, flush_rows: int) -> None:
        self.on_batch, self.flush_rows = on_batch, flush_rows
        self.pending: list[tuple[Any, np.ndarray, dict[int, str]]] = []
        self.chunks: list[np.ndarray] = []
        self.oks: list[np.ndarray] = []
        self.errors: dict[int, str] = {}
        self.start = 0

    def add(self, feats: Any, ok: np.ndarray, why: list[str]) -> None:
        first = self.start + sum(len(o) for _, o, _ in self.pending)
        self.pending.append((feats, ok, {first + i: w for i, w in enumerate(why) if w}))
        if sum(len(o) for _, o, _ in self.pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        parts = [f for f, _, _ in self.pending]
        host = (torch.cat(parts).cpu().numpy() if isinstance(parts[0], torch.Tensor)
                else np.concatenate(parts))
        offset = 0
        for _, ok, errors in self.pending:
            block = host[offset : offset + len(ok)]
            offset += len(ok)
            self.chunks.append(block)
            self.oks.append(ok)
            self.errors.update(errors)
            if self.on_batch is not None:
                self.on_batch(self.start, block, ok, errors)
            self.start += len(ok)
        self.pending = []

    def result(self, precision: str) -> ImageFeatures:
        if not self.chunks:
            return ImageFeatures(np.zeros((0, 0), feature_dtype(precision)), np.zeros(0, bool), {})
        return ImageFeatures(np.concatenate(self.chunks), np.concatenate(self.oks), self.errors)


@dataclass
class ReadFor:
    """What reading images for a CLIP needs of it: its preprocessing and its device (a
    `ClipModel` is one; so is a CLIP's remembered preprocessing before it is built)."""

    preprocess: Any
    device: str


def image_loader(clip: ClipModel | ReadFor, paths: list[str], batch_size: int,
                 workers: int | None, reader: Callable[[int], Any] | None, view: ImageView,
                 decode: str) -> tuple[DataLoader, Callable[[Any], tuple[Any, Any, list[str]]]]:
    """The DataLoader of a file list (`workers` None: `loader_workers`' default for the
    device) and how its batches become (pixels, ok, reasons)."""
    preprocess = clip.preprocess if view.transform is None else view.transform(clip.preprocess)
    size = image_size(clip.preprocess)
    on_gpu = clip.device.startswith("cuda")
    workers = loader_workers(workers, clip.device, len(paths), batch_size)
    files = ImageFiles(paths, preprocess, size, reader, draft=size if decode == "pil-draft" else 0)
    if decode != "torch":
        return (DataLoader(files, batch_size=batch_size, num_workers=workers, pin_memory=on_gpu),
                lambda batch: (batch[0], batch[1], list(batch[2])))
    geometry = Geometry.of(preprocess)
    load_decoder()
    dataset = TorchDecodeFiles(paths, reader, files, geometry, decode_here=not on_gpu)
    fallback = pil_from_bytes(preprocess, geometry.crop)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_items)
    return loader, lambda items: batch_pixels(items, geometry, clip.device, fallback)


@dataclass
class Reading:
    """Images being read: the DataLoader's workers forked and reading, `batches` giving
    (pixels, ok, reasons) in order. `close` stops the thread making pixels and the workers."""

    paths: list[str]
    read_for: ReadFor
    view: ImageView
    decode: str
    batches: Any  # a generator
    workers: Any  # the DataLoader's iterator

    def serves(self, clip: ClipModel, paths: list[str], view: ImageView, decode: str) -> bool:
        """Whether these are the pixels `clip` would make of `paths` (the same preprocessing,
        by its repr, which the CLIP's identity holds too, and the same device)."""
        return (self.paths == paths and (self.view, self.decode) == (view, decode)
                and self.read_for.device == clip.device
                and repr(self.read_for.preprocess) == repr(clip.preprocess))

    def close(self) -> None:
        self.batches.close()  # stops the thread making pixels ahead, if it started
        shutdown = getattr(self.workers, "_shutdown_workers", None)  # torch's own __del__ calls it
        if shutdown is not None:
            shutdown()


def start_reading(clip: ClipModel | ReadFor, paths: list[str], batch_size: int,
                  workers: int | None, reader: Callable[[int], Any] | None = None,
                  view: ImageView = CLIP_VIEW, decode: str = "pil") -> Reading:
    """Fork the DataLoader's workers now, so that they read (and, but for `--decode torch` on
    a GPU, decode) the first batches while this thread does something else: the CLIP built
    (`evaluate.image_features`) or the encoder's set-up. On a GPU with `--decode torch`, nvJPEG
    starts in a thread before the fork (the workers never touch the GPU) and the pixels are
    made ahead of the encoder (prefetch.py)."""
    read_for = ReadFor(clip.preprocess, clip.device)
    loader, pixels_of = image_loader(read_for, paths, batch_size, workers, reader, view, decode)
    on_gpu = decode == "torch" and clip.device.startswith("cuda")
    if on_gpu:
        warm_decoder_soon(clip.device)
    read = iter(loader)  # forks the workers
    batches = (ahead(read, pixels_of, clip.device,
                     prepare=functools.partial(warm_decoder, clip.device))
               if on_gpu else (pixels_of(batch) for batch in read))
    return Reading(paths, read_for, view, decode, batches, read)


def encode_images(clip: ClipModel, paths: list[str], batch_size: int = 64,
                  workers: int | None = None,
                  progress: bool = False, reader: Callable[[int], Any] | None = None,
                  on_batch: OnBatch | None = None, view: ImageView = CLIP_VIEW,
                  decode: str = "pil", reading: Reading | None = None) -> ImageFeatures:
    """Encode images (files, or by index through `reader`) in batches through a DataLoader;
    features are L2-normalised (unless the view keeps them as encoded). `decode`: `pil`,
    `torch` or `pil-draft` (score/decode.py). On a GPU the host-to-device copies overlap the
    encoder (`torch`: decoding and resizing do too, prefetch.py), and features come back a
    chunk at a time. `reading`: these images' reading, started before the CLIP was built
    (`start_reading`); one that does not make this CLIP's pixels is closed and started again."""
    if reading is not None and not reading.serves(clip, paths, view, decode):
        reading.close()
        reading = None
    reading = reading or start_reading(clip, paths, batch_size, workers, reader, view, decode)
    on_gpu = clip.device.startswith("cuda")
    gathered = _Gathered(on_batch, FLUSH_ROWS if on_gpu else 1)
    bar = tqdm(total=len(paths), disable=not progress, desc="images", unit="img")
    with bar, torch.inference_mode(), autocast_for(clip):
        try:
            for images, ok, why in reading.batches:
                ok_host = np.asarray(ok, bool)
                gathered.add(encode_batch(clip, images, torch.as_tensor(ok_host), view.normalise,
                                          on_device=on_gpu), ok_host, why)
                bar.update(len(ok_host))
        finally:
            reading.close()  # an interrupted run stops the thread making pixels ahead
            gathered.flush()
    return gathered.result(clip.precision)


def encode_stream(clip: ClipModel, shards: list[str], batch_size: int = 64,
                  workers: int | None = None,
                  progress: bool = False, view: ImageView = CLIP_VIEW) -> ImageFeatures:
    """Encode a webdataset's shards as they stream (decoded in the workers); the features,
    labels and sample names are put back in shard order whatever order the workers answered."""
    from descriptor_gen.data.wds import ShardStream

    preprocess = clip.preprocess if view.transform is None else view.transform(clip.preprocess)
    stream = ShardStream(shards, preprocess, image_size(clip.preprocess))
    loader = DataLoader(stream, batch_size=batch_size,
                        num_workers=min(loader_workers(workers, clip.device), len(shards)),
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


