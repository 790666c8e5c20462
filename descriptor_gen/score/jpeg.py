"""Which library decodes JPEGs for `--decode torch`, found without importing it, and the one
header fact that tells the libraries apart: the EXIF orientation.

torchvision's `decode_jpeg` is deprecated since torchvision 0.29 in favour of TorchCodec's
(`torchcodec.decoders.decode_jpeg`, from torchcodec 0.16). torchvision's is used while the
installed torchvision has it (the decoder every published agreement was measured with);
torchcodec's when it does not and torchcodec is installed. Both are libjpeg-turbo on the CPU
and nvJPEG on a GPU, but TorchCodec always turns an image by its EXIF orientation, which PIL
(open_clip's preprocessing, the reference) does not: a JPEG whose orientation is not "as
stored" goes the `pil` way under TorchCodec. The decoder is part of the feature cache key; it
is found from the installed files, not imported, so a cached re-evaluation still imports no
torch.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from descriptor_gen.errors import DescgenError


@dataclass(frozen=True)
class JpegDecoder:
    """A library's `decode_jpeg`: the package and the file in it that define it, the module to
    call it from, what the feature cache key adds for it, and whether it turns images by EXIF."""

    name: str
    package: str
    defined_in: str
    module: str
    key: str
    turns_by_exif: bool


JPEG_DECODERS: tuple[JpegDecoder, ...] = (  # in order of preference
    JpegDecoder("torchvision", "torchvision", "io/image.py", "torchvision.io", "", False),
    JpegDecoder("torchcodec", "torchcodec", "decoders/_image_decoders.py", "torchcodec.decoders",
                ":torchcodec", True),
)


def defines_decode_jpeg(decoder: JpegDecoder) -> bool:
    """Whether the package the import system would load defines `decode_jpeg` in its file (the
    file read, the package not imported: finding a top-level package runs none of it)."""
    try:
        spec = importlib.util.find_spec(decoder.package)
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        files = [Path(folder) / decoder.defined_in for folder in folders]
        return any(f.is_file() and "\ndef decode_jpeg(" in f.read_text("utf-8") for f in files)
    except (ImportError, ValueError, OSError, UnicodeDecodeError):
        return False


@functools.lru_cache(maxsize=1)
def jpeg_decoder() -> JpegDecoder:
    """The first decoder of `JPEG_DECODERS` that is installed."""
    for decoder in JPEG_DECODERS:
        if defines_decode_jpeg(decoder):
            return decoder
    raise DescgenError("--decode torch: no JPEG decoder installed (torchvision's decode_jpeg,"
                       " deprecated since torchvision 0.29, is gone from this one): pip install"
                       " torchcodec, or use --decode pil")


def load_decoder() -> Any:
    """The installed decoder's module, imported (before the workers fork: they inherit it), or
    one line saying why it cannot be."""
    return _module(jpeg_decoder())


@functools.lru_cache(maxsize=2)
def _module(decoder: JpegDecoder) -> Any:
    try:
        return importlib.import_module(decoder.module)
    except Exception as exc:  # noqa: BLE001 - a compiled library that does not load says why
        raise DescgenError(f"--decode torch: {decoder.name} is installed but does not load"
                           f" ({type(exc).__name__}: {exc}); use --decode pil") from exc


def decode_jpeg(data: Any, device: str, decoder: JpegDecoder | None = None) -> Any:
    """JPEG bytes (a uint8 tensor, or a list of them: one batched call) -> (3, H, W) uint8 RGB
    on `device` (a list for a list), by `decoder` (the installed one by default)."""
    module = _module(decoder or jpeg_decoder())
    return module.decode_jpeg(data, mode=module.ImageReadMode.RGB, device=device)


_SOS, _EOI, _APP1 = 0xDA, 0xD9, 0xE1
_ORIENTATION = 0x0112


def exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG (1: as stored, also when there is none), or None when its
    header cannot be read far enough to tell. Only the segments before the scan are read."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (_SOS, _EOI):
            return 1
        length = struct.unpack_from(">H", data, at + 2)[0]
        if length < 2 or at + 2 + length > len(data):
            return None
        if marker == _APP1 and data[at + 4 : at + 10] == b"Exif\0\0":
            return _tiff_orientation(data[at + 10 : at + 2 + length])
        at += 2 + length
    return None


def _tiff_orientation(tiff: bytes) -> int | None:
    """The orientation tag of a TIFF block's first IFD (1 when absent), None when malformed."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    ifd = struct.unpack_from(order + "I", tiff, 4)[0]
    if ifd + 2 > len(tiff):
        return None
    count = struct.unpack_from(order + "H", tiff, ifd)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if entry + 12 > len(tiff):
            return None
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == _ORIENTATION:
            return struct.unpack_from(order + "H", tiff, entry + 8)[0] if kind == 3 else None
    return 1


def decodes_as_stored(data: bytes, decoder: JpegDecoder | None = None) -> bool:
    """Whether `decoder` gives this JPEG's pixels as PIL reads them (not turned by EXIF)."""
    decoder = decoder or jpeg_decoder()
    return not decoder.turns_by_exif or exif_orientation(data) == 1
