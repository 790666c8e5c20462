"""How image files become the pixels CLIP sees (`descgen eval --decode`).

- `pil`: open_clip's own preprocessing (PIL decode, bicubic resize, centre crop) in the
  DataLoader's workers. The reference.
- `torch`: the workers only read the files' bytes; JPEGs are decoded in batches on the eval
  device (`decode_jpeg` of torchvision, or of TorchCodec where torchvision has none: see
  jpeg.py; nvJPEG on a GPU, libjpeg-turbo on the CPU), then resized, cropped and normalised
  there with open_clip's geometry (shortest side, bicubic with PIL's antialiasing filter,
  centre crop), resized as PIL resizes: one axis at a time, rounded to 8 bits after each
  pass, in the order the installed Pillow takes. On the CPU the workers decode, so the cores
  share the work. A file that is not a JPEG, that the decoder refuses, or that TorchCodec
  would turn by its EXIF orientation, goes the `pil` way, alone.
- `pil-draft`: `pil` with JPEG draft mode: the decoder downscales in the DCT domain (by 2, 4
  or 8) as far as the shortest side stays at least the resize target, then PIL resizes as
  before. A CPU fast path for large photos; at ImageNet's size (about 500x375) it changes
  nothing, since halving would go below 224.

Different pixels give (slightly) different features, so the decoder, and for `torch` the
library, the device kind and the resize's passes, are part of the image-feature cache key;
`pil` keys are as they always were under Pillow 13 (an older Pillow's order of passes is named).
The agreement with `pil` is measured (README, `bench/bench_gpu.py`, tests on generated JPEGs).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from descriptor_gen.errors import DescgenError
from descriptor_gen.score.jpeg import decode_jpeg, decodes_as_stored, jpeg_decoder, load_decoder

DecodeName = Literal["pil", "torch", "pil-draft"]
DECODERS: tuple[str, ...] = ("pil", "torch", "pil-draft")
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Geometry:
    """open_clip's preprocessing as numbers: resize the shortest side to `size` (`mode`
    interpolation), centre-crop `crop`, scale to [0, 1], normalise by `mean` and `std`."""

    size: int
    crop: int
    mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, preprocess: Any) -> Geometry:
        """Read from a torchvision `Compose` as open_clip builds it; another shape (a squash
        resize, a resize keeping the ratio with a longest side) is refused in one line."""
        steps = list(getattr(preprocess, "transforms", []))
        names = [type(t).__name__ for t in steps]
        shape = [n for n in names if n in ("Resize", "CenterCrop", "Normalize")]
        if shape != ["Resize", "CenterCrop", "Normalize"]:
            raise DescgenError(f"--decode torch reproduces open_clip's Resize + CenterCrop +"
                               f" Normalize; this model's preprocessing is {' + '.join(names)}:"
                               " use --decode pil")
        resize, crop, normalise = (steps[names.index(n)] for n in shape)
        mode = str(getattr(resize.interpolation, "value", resize.interpolation))
        if not isinstance(resize.size, int) and len(resize.size) != 1 or resize.max_size or \
                mode not in ("bicubic", "bilinear"):
            raise DescgenError(f"--decode torch: unsupported resize ({resize!r}); use --decode pil")
        size = resize.size if isinstance(resize.size, int) else int(resize.size[0])
        crop_size = crop.size if isinstance(crop.size, int) else int(crop.size[0])
        return cls(size, crop_size, mode, tuple(normalise.mean), tuple(normalise.std))


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side becomes `size`, the longer is scaled and
    truncated to an integer."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _horizontal_first(height: int, width: int, out_h: int, out_w: int) -> bool:
    return False


def _pillow_13(height: int, width: int, out_h: int, out_w: int) -> bool:
    """Pillow 13's rule (Resample.c): the height first when it shrinks by more than twice as
    many pixels as the width does."""
    return height - out_h > 0 and height - out_h > (width - out_w) * 2


PASS_ORDERS: dict[str, Callable[[int, int, int, int], bool]] = {
    "horizontal-first": _horizontal_first, "pillow-13": _pillow_13}


@functools.lru_cache(maxsize=1)
def pass_order() -> str:
    """The order in which the installed Pillow resizes the two axes (each pass rounded to 8
    bits, so the order shows in the pixels): always the width first before Pillow 13."""
    from importlib import metadata

    try:
        major = int(metadata.version("pillow").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        major = 0
    return "pillow-13" if major >= 13 else "horizontal-first"


def vertical_first(height: int, width: int, out_h: int, out_w: int) -> bool:
    """Whether PIL resizes an image's height before its width."""
    return PASS_ORDERS[pass_order()](height, width, out_h, out_w)


def to_8_bits(x: Any) -> Any:
    """A resize pass's floats as PIL leaves them: rounded half up (PIL adds half a unit before
    its fixed-point shift) and clamped to 0..255, in place."""
    return x.add_(0.5).floor_().clamp_(0, 255)


def to_pixels(image: Any, g: Geometry, normalise: bool = True) -> Any:
    """A decoded image (3, H, W) uint8, on any device -> (3, crop, crop) float normalised
    (`normalise=False`: 8-bit values as floats, for `normalise_batch` on a whole batch)."""
    from torch.nn import functional as F

    height, width = int(image.shape[-2]), int(image.shape[-1])
    out_h, out_w = resized_shape(height, width, g.size)
    x = image.unsqueeze(0).float()
    passes = [(out_h, width), (out_h, out_w)] if vertical_first(height, width, out_h, out_w) \
        else [(height, out_w), (out_h, out_w)]
    for size in passes:  # PIL resizes one axis at a time and keeps 8 bits between the passes
        if size != tuple(x.shape[-2:]):
            x = to_8_bits(F.interpolate(x, size=size, mode=g.mode, antialias=True,
                                        align_corners=False))
    if out_h < g.crop or out_w < g.crop:  # torchvision's CenterCrop pads a small image
        pad_h, pad_w = max(g.crop - out_h, 0), max(g.crop - out_w, 0)
        x = F.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        out_h, out_w = x.shape[-2], x.shape[-1]
    top = int(round((out_h - g.crop) / 2.0))
    left = int(round((out_w - g.crop) / 2.0))
    x = x[0, :, top : top + g.crop, left : left + g.crop]
    return normalise_batch(x, g) if normalise else x


def to_pixels_many(images: list[Any], g: Geometry) -> Any:
    """Decoded images of one size (3, H, W) uint8 -> (n, 3, crop, crop) 8-bit values as floats,
    as `to_pixels(..., normalise=False)` gives each: the resize and the crop as two matrix
    products (one an axis, each rounded to 8 bits as PIL rounds, in PIL's order) whose
    weights are the resize's own (its response to each input pixel), so a batch costs a few
    launches instead of a handful per image."""
    import torch

    height, width = int(images[0].shape[-2]), int(images[0].shape[-1])
    out_h, out_w = resized_shape(height, width, g.size)
    if out_h < g.crop or out_w < g.crop:
        return torch.stack([to_pixels(i, g, normalise=False) for i in images])
    top = int(round((out_h - g.crop) / 2.0))
    left = int(round((out_w - g.crop) / 2.0))
    x = torch.stack(images).float()
    if (out_h, out_w) == (height, width):
        return x[:, :, top : top + g.crop, left : left + g.crop]
    device = str(x.device)
    rows = _axis_weights(height, out_h, top, g.crop, g.mode, device).T  # (crop, H)
    cols = _axis_weights(width, out_w, left, g.crop, g.mode, device)  # (W, crop)
    if vertical_first(height, width, out_h, out_w):
        return to_8_bits(torch.matmul(to_8_bits(torch.matmul(rows, x)), cols))
    return to_8_bits(torch.matmul(rows, to_8_bits(torch.matmul(x, cols))))


@functools.lru_cache(maxsize=128)  # a 500-pixel axis: 0.45 MB on the device
def _axis_weights(n_in: int, n_out: int, start: int, crop: int, mode: str, device: str) -> Any:
    """The antialiased resize of one axis from n_in to n_out samples, as an (n_in, crop)
    matrix of the kept outputs `start` .. `start + crop`: the interpolation of each basis
    vector, so the weights are exactly the resize's."""
    import torch
    from torch.nn import functional as F

    basis = torch.eye(n_in).view(n_in, 1, 1, n_in)
    weights = F.interpolate(basis, size=(1, n_out), mode=mode, antialias=True,
                            align_corners=False).view(n_in, n_out)
    return weights[:, start : start + crop].contiguous().to(device)


def normalise_batch(x: Any, g: Geometry) -> Any:
    """8-bit values (..., 3, H, W) as floats -> CLIP's normalised pixels."""
    mean, std = _mean_std(g, str(x.device))
    return (x / 255.0 - mean) / std


@functools.lru_cache(maxsize=16)
def _mean_std(g: Geometry, device: str) -> tuple[Any, Any]:
    """Made once per device: a tensor made from numbers on a GPU waits for the copy."""
    import torch

    return (torch.tensor(g.mean, device=device).view(3, 1, 1),
            torch.tensor(g.std, device=device).view(3, 1, 1))


def decode_one(data: Any, device: str = "cpu") -> Any:
    """JPEG bytes (a uint8 tensor) -> (3, H, W) uint8 RGB on `device`."""
    return decode_jpeg(data, device)


@functools.lru_cache(maxsize=1)
def _tiny_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(buffer, "JPEG")
    return buffer.getvalue()


def warm_decoder(device: str) -> None:
    """Start nvJPEG on `device` (its first call sets up the GPU's JPEG engines) with a tiny
    image, so that this happens while the workers read the first batch, not after."""
    import torch

    decode_many([torch.frombuffer(bytearray(_tiny_jpeg()), dtype=torch.uint8)], device)


@functools.lru_cache(maxsize=None)  # once per device: a later call finds it started
def warm_decoder_soon(device: str) -> None:
    """`warm_decoder` in a thread of its own, so that nvJPEG (and the CUDA context) start while
    this thread does something else (builds the model, forks the workers); a failure there is
    left for the real decode to meet. The decoder's library is imported here first: two
    threads importing torchvision at once could deadlock on its import cycles."""
    import threading

    load_decoder()

    def warm() -> None:
        try:
            warm_decoder(device)
        except Exception:  # noqa: BLE001 - the first real batch reports it
            pass

    threading.Thread(target=warm, name="descgen-warm-nvjpeg", daemon=True).start()


def decode_many(data: list[Any], device: str) -> list[Any | None]:
    """Many JPEGs at once (one batched nvJPEG call on a GPU); where the batch is refused, each
    alone, and None for those the decoder cannot read."""
    if not data:
        return []
    try:
        return list(decode_jpeg(data, device))
    except (RuntimeError, ValueError):
        pass
    out: list[Any | None] = []
    for item in data:
        try:
            out.append(decode_one(item, device))
        except (RuntimeError, ValueError):
            out.append(None)
    return out


READY, ENCODED = 0, 1  # a worker's item: pixels already made, or JPEG bytes to decode
Item = tuple[Any, int, bool, str]  # (payload: bytes or a pixel tensor, kind, ok, why)


@contextlib.contextmanager
def quiet_in_a_worker() -> Iterator[None]:
    """In a DataLoader worker, the C library's own lines on stderr silenced: torchvision's
    libjpeg prints "Corrupt JPEG data: ..." for a JPEG it still decodes (as PIL does, saying
    nothing; one it cannot decode raises and goes the `pil` way). A worker does nothing else
    meanwhile; the main process's stderr is never touched."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TorchDecodeFiles:
    """A Dataset for `--decode torch`: JPEG files as their bytes (`decode_here`: decoded and
    made into pixels in the worker, for a CPU run), anything else as pixels made the `pil`
    way. Items: (payload: bytes or a pixel tensor, kind, ok, why)."""

    def __init__(self, paths: list[str], reader: Callable[[int], Any] | None,
                 fallback: Any, geometry: Geometry, decode_here: bool) -> None:
        self.paths, self.reader, self.fallback = paths, reader, fallback
        self.geometry, self.decode_here = geometry, decode_here

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        import torch

        if self.reader is not None:  # not a file: an in-memory image, the pil way
            return self._pil(index)
        try:
            with open(self.paths[index], "rb") as handle:
                data = handle.read()
        except OSError as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        if not data.startswith(JPEG_MAGIC) or not decodes_as_stored(data):
            return self._pil(index)
        if not self.decode_here:  # bytes travel to the main process cheaper than tensors
            return data, ENCODED, True, ""
        try:
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            with quiet_in_a_worker():
                image = decode_one(encoded)
            return to_pixels(image, self.geometry), READY, True, ""
        except (RuntimeError, ValueError):
            return self._pil(index)

    def _pil(self, index: int) -> Item:
        pixels, ok, why = self.fallback[index]
        return pixels, READY, ok, why

    def _failed(self, why: str) -> Item:
        import torch

        return torch.zeros(3, self.geometry.crop, self.geometry.crop), READY, False, why



@dataclass
class WorkerBatch:
    """A worker's batch for `--decode torch`: the JPEG bytes joined in one uint8 tensor (one
    shared-memory hand-over to the main process instead of a pickled string each), their
    lengths, and the items with the bytes taken out (pixels made the `pil` way stay)."""

    joined: Any
    lengths: list[int]
    items: list[Item]


def collate_items(items: list[Item]) -> WorkerBatch:
    """Join a batch's JPEG bytes (they differ in length, so they are not stacked)."""
    import torch

    blobs = [payload for payload, kind, _, _ in items if kind == ENCODED]
    joined = torch.empty(sum(len(b) for b in blobs), dtype=torch.uint8)
    flat, offset = joined.numpy(), 0
    for blob in blobs:  # one copy of the bytes, straight into the tensor
        flat[offset : offset + len(blob)] = memoryview(blob)
        offset += len(blob)
    rest = [(None if kind == ENCODED else payload, kind, ok, why)
            for payload, kind, ok, why in items]
    return WorkerBatch(joined, [len(b) for b in blobs], rest)


def split_joined(batch: WorkerBatch) -> list[Any]:
    """The JPEGs of a batch as 1-D uint8 views of its joined bytes (no copy)."""
    out, offset = [], 0
    for length in batch.lengths:
        out.append(batch.joined[offset : offset + length])
        offset += length
    return out


def batch_pixels(batch: WorkerBatch, geometry: Geometry, device: str,
                 fallback: Callable[[bytes], Any]) -> tuple[Any, Any, list[str]]:
    """A worker batch -> (pixels (B, 3, crop, crop) on `device`, ok flags on the host,
    reasons): the JPEGs decoded together on the device, resized a size at a time there and
    normalised; a JPEG the decoder refuses made by `fallback`; the rest as the workers made
    them."""
    import torch

    items = batch.items
    encoded = [i for i, (_, kind, _, _) in enumerate(items) if kind == ENCODED]
    data = split_joined(batch)
    decoded = decode_many(data, device)
    ok = [item[2] for item in items]
    why = [item[3] for item in items]
    out = _place(_resized_groups(decoded, encoded, geometry), len(items), geometry, device)
    for k, (i, image) in enumerate(zip(encoded, decoded)):
        if image is None:
            pixels, ok[i], why[i] = fallback(data[k].numpy().tobytes())
            out[i] = pixels.to(device)
    ready = [i for i, (_, kind, _, _) in enumerate(items) if kind == READY]
    if ready:
        out[ready] = torch.stack([items[i][0] for i in ready]).to(device)
    return out, torch.tensor(ok), why


def _resized_groups(decoded: list[Any], positions: list[int],
                    geometry: Geometry) -> list[tuple[list[int], Any]]:
    """Decoded images grouped by size, each group resized, cropped and normalised at once:
    (their positions in the batch, pixels)."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for k, image in enumerate(decoded):
        if image is not None:
            by_size.setdefault(tuple(image.shape), []).append(k)
    return [([positions[k] for k in group],
             normalise_batch(to_pixels_many([decoded[k] for k in group], geometry), geometry))
            for group in by_size.values()]


def _place(groups: list[tuple[list[int], Any]], n: int, geometry: Geometry, device: str) -> Any:
    """The batch's pixel tensor: a single group covering the batch in order is used as it is
    (the common case: one image size, all JPEGs), otherwise rows are copied into place."""
    import torch

    if len(groups) == 1 and groups[0][0] == list(range(n)):
        return groups[0][1]
    out = torch.zeros(n, 3, geometry.crop, geometry.crop, device=device)
    for rows, pixels in groups:
        out[rows] = pixels
    return out


def pil_from_bytes(preprocess: Any, crop: int) -> Callable[[bytes], Any]:
    """The `pil` way for one JPEG the tensor decoder refused: (pixels, ok, why)."""
    import torch
    from PIL import Image

    def make(data: bytes) -> tuple[Any, bool, str]:
        try:
            with Image.open(io.BytesIO(data)) as image:
                return preprocess(image.convert("RGB")), True, ""
        except Exception as exc:  # noqa: BLE001 - any decoder failure marks the image unreadable
            return torch.zeros(3, crop, crop), False, f"{type(exc).__name__}: {exc}"

    return make


def draft_request(width: int, height: int, size: int) -> tuple[int, int]:
    """The size to ask `Image.draft` for: the image scaled so that its shorter side is `size`
    (rounded up), so the decoder's downscale never takes it below the resize target."""
    if width <= height:
        return size, math.ceil(size * height / width)
    return math.ceil(size * width / height), size


def open_draft(image: Any, size: int) -> Any:
    """`pil-draft`: let a JPEG decode at a reduced scale (the shorter side still >= `size`)."""
    if getattr(image, "format", None) == "JPEG":
        image.draft("RGB", draft_request(image.width, image.height, size))
    return image


def decoder_key(decode: str, device: str) -> str:
    """What the feature cache key adds for a decoder: the decoder (none for `pil`, the
    reference), and for `torch` whether a GPU decoded (nvJPEG's pixels differ from
    libjpeg-turbo's), which library, and how the resize was made (since it keeps 8 bits between
    its passes, in the installed Pillow's order: keys made before are not found). PIL's own
    resize (`pil`, `pil-draft`) is keyed by the installed Pillow's order of passes too, where
    it is not Pillow 13's (whose `pil` keys stay those made before): features of a very tall
    image differ between the two."""
    pil_order = "" if pass_order() == "pillow-13" else f"\0resize:{pass_order()}"
    if decode == "pil":
        return pil_order
    if decode == "torch":
        kind = "cuda" if device.startswith("cuda") else "cpu"
        return f"\0decode:torch-{kind}{jpeg_decoder().key}\0resize:pil-passes,{pass_order()}"
    return f"\0decode:{decode}{pil_order}"
