"""`--decode torch`'s JPEG decoders (torchvision's, deprecated since 0.29, and TorchCodec's)
against PIL, the reference, on the JPEGs a dataset holds (subsampling, progressive, grey,
CMYK, restart markers, damaged files, EXIF orientations); the EXIF reader against PIL's; which
decoder is used, found without importing torch, and keyed apart."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from descriptor_gen.errors import DescgenError
from test_decode import jpeg_bytes as saved, photo_like
from descriptor_gen.score import jpeg
from descriptor_gen.score.decode import Geometry, TorchDecodeFiles, decoder_key
from descriptor_gen.score.features import ImageFiles
from descriptor_gen.score.jpeg import (
    JPEG_DECODERS,
    decode_jpeg,
    decodes_as_stored,
    defines_decode_jpeg,
    exif_orientation,
    jpeg_decoder,
)

INSTALLED = [d for d in JPEG_DECODERS if defines_decode_jpeg(d)]
BY_NAME = {d.name: d for d in JPEG_DECODERS}


def photo(width: int = 120, height: int = 90, seed: int = 0) -> Image.Image:
    return photo_like(width, height, seed)


def with_orientation(value: int, image: Image.Image | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return saved(image or photo(), exif=exif.tobytes())


def app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def big_endian_exif(orientation: int) -> bytes:
    """An Exif block in Motorola byte order (PIL writes Intel's), with two tags before it."""
    entries = [(0x010F, 2, 4, b"Cam\0"), (0x0110, 2, 4, b"One\0"),
               (0x0112, 3, 1, struct.pack(">HH", orientation, 0))]
    ifd = struct.pack(">H", len(entries)) + b"".join(
        struct.pack(">HHI", tag, kind, count) + value for tag, kind, count, value in entries)
    return b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0"


def spliced(data: bytes, *segments: bytes) -> bytes:
    """`data` with `segments` put right after its start-of-image marker."""
    return data[:2] + b"".join(segments) + data[2:]


def pil_orientation(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return int(image.getexif().get(0x0112, 1))


def pil_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


CASES: dict[str, Callable[[], bytes]] = {
    "4:2:0": lambda: saved(photo()),
    "4:4:4": lambda: saved(photo(), subsampling=0),
    "4:2:2": lambda: saved(photo(), subsampling=1),
    "progressive": lambda: saved(photo(), progressive=True),
    "grey": lambda: saved(photo().convert("L")),
    "CMYK": lambda: saved(photo().convert("CMYK")),
    "odd size": lambda: saved(photo(101, 77)),
    "restart markers": lambda: saved(photo(), restart_marker_blocks=2),
    "bytes after the end": lambda: saved(photo()) + b"\0" * 100,
    "EXIF, orientation 1": lambda: with_orientation(1),
}


def test_the_test_environment_has_torchcodec_and_a_decoder_first() -> None:
    """The `test` extra installs TorchCodec, so the tests below run for it (and for torchvision's
    decode_jpeg while torchvision has one) rather than skip."""
    assert BY_NAME["torchcodec"] in INSTALLED and jpeg_decoder() == INSTALLED[0]


def test_exif_orientation_is_read_as_pil_reads_it() -> None:
    plain = saved(photo())
    xmp = app1(b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>")
    cases = {f"Intel {v}": with_orientation(v) for v in range(1, 9)}
    cases |= {f"Motorola {v}": spliced(plain, app1(big_endian_exif(v))) for v in (1, 3, 6, 8)}
    cases |= {"none": plain, "XMP first, then orientation 6": spliced(plain, xmp,
                                                                       app1(big_endian_exif(6))),
              "fill bytes before a segment": spliced(plain, b"\xff\xff", app1(big_endian_exif(8)))}
    for name, data in cases.items():
        assert exif_orientation(data) == pil_orientation(data), name


def test_a_header_that_cannot_be_read_says_so() -> None:
    """None (not 'as stored'): under TorchCodec such a JPEG goes the `pil` way."""
    plain = saved(photo())
    assert exif_orientation(plain[:2] + b"\xff\xe1\xff\xff") is None  # a segment past the end
    assert exif_orientation(plain[:2] + b"\x00\x00\x00\x00") is None  # not a marker
    assert exif_orientation(spliced(plain, app1(b"Exif\0\0XX\0*\0\0\0\x08"))) is None
    short = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 3)  # 3 tags, none
    assert exif_orientation(spliced(plain, app1(short))) is None
    wrong_kind = big_endian_exif(6).replace(struct.pack(">HH", 0x0112, 3), struct.pack(">HH", 0x0112, 4))
    assert exif_orientation(spliced(plain, app1(wrong_kind))) is None


@pytest.mark.parametrize("decoder", INSTALLED, ids=lambda d: d.name)
@pytest.mark.parametrize("case", sorted(CASES))
def test_an_installed_decoder_gives_pils_pixels(decoder: jpeg.JpegDecoder, case: str) -> None:
    data = CASES[case]()
    ours = decode_jpeg(as_tensor(data), "cpu", decoder).numpy()
    assert np.array_equal(ours, pil_pixels(data)), case
    batch = decode_jpeg([as_tensor(data), as_tensor(data)], "cpu", decoder)
    assert all(np.array_equal(b.numpy(), ours) for b in batch)


@pytest.mark.parametrize("decoder", INSTALLED, ids=lambda d: d.name)
def test_a_truncated_jpeg_is_refused_as_pil_refuses_it(decoder: jpeg.JpegDecoder) -> None:
    """Refused (RuntimeError), so it goes the `pil` way, where it is unreadable, named."""
    data = saved(photo(400, 300))
    for cut in (data[:-2], data[: int(len(data) * 0.7)]):
        with pytest.raises(OSError):
            pil_pixels(cut)
        with pytest.raises(RuntimeError):
            decode_jpeg(as_tensor(cut), "cpu", decoder)


def test_torchcodec_turns_by_exif_so_such_jpegs_go_the_pil_way() -> None:
    """TorchCodec applies the EXIF orientation (PIL and torchvision do not): a turned JPEG is
    made into pixels the `pil` way under it, and only under it; the pixels are PIL's."""
    codec = BY_NAME["torchcodec"]
    if codec not in INSTALLED:
        pytest.skip("torchcodec is not installed")
    turned = with_orientation(6, photo(120, 90))
    assert tuple(decode_jpeg(as_tensor(turned), "cpu", codec).shape) == (3, 120, 90)  # turned
    assert not decodes_as_stored(turned, codec)
    assert decodes_as_stored(turned, BY_NAME["torchvision"])
    assert decodes_as_stored(with_orientation(1), codec)


@pytest.mark.parametrize("name", ["torchvision", "torchcodec"])
def test_the_workers_make_pils_pixels_of_a_turned_jpeg(name: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip

    if BY_NAME[name] not in INSTALLED:
        pytest.skip(f"{name} is not installed")
    monkeypatch.setattr(jpeg, "jpeg_decoder", lambda: BY_NAME[name])
    preprocess = open_clip.image_transform(224, is_train=False)
    geometry = Geometry.of(preprocess)
    paths = []
    for v in (1, 3, 6, 8):
        paths.append(str(tmp_path / f"o{v}.jpg"))
        Path(paths[-1]).write_bytes(with_orientation(v, photo(160, 120, seed=v)))
    files = ImageFiles(paths, preprocess, geometry.crop, None)
    dataset = TorchDecodeFiles(paths, None, files, geometry, decode_here=True)
    for i, path in enumerate(paths):
        pixels, _, ok, _ = dataset[i]
        with Image.open(path) as image:
            reference = preprocess(image.convert("RGB"))
        assert ok and pixels.shape == reference.shape
        levels = ((pixels - reference) * torch.tensor(geometry.std).view(3, 1, 1) * 255).abs()
        assert float(levels.max()) <= 2.01 and float(levels.mean()) <= 0.002, path


def test_torchvision_is_preferred_and_each_decoder_keyed_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: set[str] = {"torchvision", "torchcodec"}
    monkeypatch.setattr(jpeg, "defines_decode_jpeg", lambda d: d.name in installed)
    jpeg_decoder.cache_clear()
    try:
        assert jpeg_decoder().name == "torchvision"
        assert decoder_key("torch", "cpu").startswith("\0decode:torch-cpu\0")  # no library named
        keys = {"torchvision": decoder_key("torch", "cuda")}
        installed.discard("torchvision")  # a torchvision without decode_jpeg
        jpeg_decoder.cache_clear()
        assert jpeg_decoder().name == "torchcodec"
        keys["torchcodec"] = decoder_key("torch", "cuda")
        assert len(set(keys.values())) == 2
        installed.clear()
        jpeg_decoder.cache_clear()
        with pytest.raises(DescgenError, match="pip install torchcodec, or use --decode pil"):
            jpeg_decoder()
    finally:
        jpeg_decoder.cache_clear()


def test_a_decoder_that_does_not_load_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = jpeg.JpegDecoder("broken", "torchvision", "io/image.py",
                              "descriptor_gen_no_such_module", ":broken", False)
    with pytest.raises(DescgenError, match="broken is installed but does not load"):
        decode_jpeg(as_tensor(saved(photo())), "cpu", broken)


def test_a_package_without_the_file_or_the_function_has_no_decoder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """What the import system would load is read: a torchvision whose image.py has no
    decode_jpeg (as after its removal) is not taken for one that has."""
    package = tmp_path / "fakevision"
    (package / "io").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = jpeg.JpegDecoder("fake", "fakevision", "io/image.py", "fakevision.io", ":fake", False)
    assert not defines_decode_jpeg(fake)  # no file
    (package / "io" / "image.py").write_text("def decode_image(data):\n    pass\n")
    assert not defines_decode_jpeg(fake)  # the file, without the function
    (package / "io" / "image.py").write_text("import torch\n\ndef decode_jpeg(data):\n    pass\n")
    assert defines_decode_jpeg(fake)  # found, and the package was not run
    assert not defines_decode_jpeg(jpeg.JpegDecoder("none", "descriptor_gen_no_such_package",
                                                    "x.py", "x", ":x", False))


def test_the_decoder_is_found_without_importing_torch() -> None:
    code = ("import sys; from descriptor_gen.score.decode import decoder_key;"
            " key = decoder_key('torch', 'cuda');"
            " print(key.split(':', 1)[1], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False", out.stdout
