"""`--decode torch` against `--decode pil` (open_clip's own preprocessing) on generated JPEGs,
`pil-draft`, the chunked copy back of features, a fully cached re-evaluation that loads no
model, and the CLI commands that import no torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_classes_and_store
from descriptor_gen.errors import DescgenError
from descriptor_gen.paths import CachePaths
from descriptor_gen.score.decode import (
    Geometry,
    decode_one,
    decoder_key,
    draft_request,
    pass_order,
    resized_shape,
    to_pixels,
    to_pixels_many,
    vertical_first,
)
from descriptor_gen.score.evaluate import EvalConfig, evaluate

PROMPTS = CachePaths.resolve().prompts_dir
CLASSES = ["sky", "grass", "brick", "sand"]
DESCRIPTORS = {0: ["blue above"], 1: ["green blades"], 2: ["red blocks"], 3: ["pale grains"]}
SIZES = [(500, 375), (375, 500), (224, 224), (160, 120), (1024, 768), (333, 999), (90, 60)]


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour fields with texture and edges, like a photograph more than like noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
    image = image + rng.integers(-12, 12, image.shape)
    image[height // 3 : height // 3 + 4, :, :] = 255  # a sharp edge
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int = 90, **options: object) -> bytes:
    """`image` saved as a JPEG; `options` are PIL's (subsampling, progressive, exif, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def make_jpeg_folder(root: Path, per_class: int = 4) -> Path:
    for c, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = SIZES[(c * per_class + i) % len(SIZES)]
            (folder / f"{i:03d}.jpg").write_bytes(jpeg_bytes(photo_like(width, height, c * 100 + i)))
    return root


@pytest.fixture
def world(tmp_path: Path, tiny_clip: tuple[Path, Path]) -> dict:
    images = make_jpeg_folder(tmp_path / "images")
    classes, store = write_classes_and_store(tmp_path, CLASSES, DESCRIPTORS)
    config, checkpoint = tiny_clip
    return {"images": images, "classes": classes, "store": store, "config": config,
            "checkpoint": checkpoint, "cache": tmp_path / "cache", "tmp": tmp_path}


def _cfg(world: dict, **kw: object) -> EvalConfig:
    base = {"dataset": str(world["images"]), "descriptors": world["store"],
            "model": str(world["config"]), "pretrained": str(world["checkpoint"]),
            "device": "cpu", "workers": 0, "batch_size": 5}
    return EvalConfig(**{**base, **kw})


def _features(world: dict, decode: str) -> np.ndarray:
    from descriptor_gen.score.caches import ImageFeatureCache
    from descriptor_gen.score.features import load_clip
    from descriptor_gen.data.datasets import load_image_folder
    from descriptor_gen.paths import IMAGE_FEATURES

    clip = load_clip(str(world["config"]), str(world["checkpoint"]), "cpu")
    data = load_image_folder(world["images"], CLASSES)
    cache = ImageFeatureCache(world["cache"] / IMAGE_FEATURES)
    found = cache.load(cache.key(clip, data.identity(), decode=decode, device="cpu"))
    assert found is not None
    return np.asarray(found.features, np.float32)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_torch_pixels_are_open_clips_preprocessing_to_a_rounding(mode: str) -> None:
    """The same JPEG through open_clip's PIL preprocessing and through decode_jpeg + the tensor
    geometry (one image, and a batch of one size): the same 8-bit values but for a rare
    rounding (PIL's fixed-point arithmetic against ours in floats), landscape and portrait,
    shrunk and enlarged."""
    import open_clip

    preprocess = open_clip.image_transform(224, is_train=False, interpolation=mode)
    geometry = Geometry.of(preprocess)
    assert (geometry.size, geometry.crop, geometry.mode) == (224, 224, mode)
    std, mean = torch.tensor(geometry.std).view(3, 1, 1), torch.tensor(geometry.mean).view(3, 1, 1)
    for seed, (width, height) in enumerate(SIZES):
        data = jpeg_bytes(photo_like(width, height, seed))
        theirs = preprocess(Image.open(io.BytesIO(data)).convert("RGB")) * std + mean
        image = decode_one(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        for ours in (to_pixels(image, geometry) * std + mean,
                     to_pixels_many([image, image], geometry)[1] / 255):
            levels = ((theirs - ours) * 255).abs()
            assert ours.shape == theirs.shape == (3, 224, 224)
            assert float(levels.max()) <= 2.01, (width, height)
            assert float(levels.mean()) <= 0.002, (width, height)


def test_the_passes_are_in_the_installed_pillows_order() -> None:
    """PIL keeps 8 bits between the two passes of a resize, so their order shows in the pixels:
    the order `vertical_first` gives is the one the installed Pillow takes (the width first
    before Pillow 13; from 13, the height first where it shrinks by over twice the width's)."""
    rng = np.random.default_rng(0)
    for case in range(30):
        width, height = (int(v) for v in rng.integers(60, 900, 2))
        out_w, out_h = (int(v) for v in rng.integers(30, 600, 2))
        image = photo_like(width, height, case)
        whole = np.asarray(image.resize((out_w, out_h), Image.BICUBIC))
        if vertical_first(height, width, out_h, out_w):
            passes = image.resize((width, out_h), Image.BICUBIC).resize((out_w, out_h), Image.BICUBIC)
        else:
            passes = image.resize((out_w, height), Image.BICUBIC).resize((out_w, out_h), Image.BICUBIC)
        assert np.array_equal(whole, np.asarray(passes)), (width, height, out_w, out_h, pass_order())


def test_resized_shape_is_torchvisions() -> None:
    from torchvision.transforms import functional as TF

    for height, width in [(375, 500), (500, 375), (224, 224), (99, 1000), (1000, 99)]:
        expected = TF.resize(torch.zeros(1, height, width), 224, antialias=True).shape[-2:]
        assert resized_shape(height, width, 224) == tuple(expected)


def test_decode_torch_features_agree_with_pil_and_are_cached_apart(world: dict) -> None:
    pil = evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS)
    torch_run = evaluate(_cfg(world, decode="torch"), CLASSES, world["cache"], PROMPTS)
    assert pil.images_encoded == torch_run.images_encoded == 16  # its own cache entry
    a, b = _features(world, "pil"), _features(world, "torch")
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosines.min() > 0.99999, cosines  # the same pixels but for a rare rounding
    again = evaluate(_cfg(world, decode="torch"), CLASSES, world["cache"], PROMPTS)
    assert again.images_encoded == 0


def test_decode_torch_falls_back_per_image(world: dict) -> None:
    """A PNG goes the PIL way (the same features as `pil` exactly); a JPEG the decoder refuses
    too; a file that no decoder reads is unreadable, named, as with `pil`."""
    folder = world["images"] / "sky"
    photo_like(64, 48, 7).save(folder / "png.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"not a jpeg at all" * 10)
    pil = evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS)
    torch_run = evaluate(_cfg(world, decode="torch"), CLASSES, world["cache"], PROMPTS)
    assert [Path(p).name for p in pil.unreadable_images] == ["broken.jpg"]
    assert [Path(p).name for p in torch_run.unreadable_images] == ["broken.jpg"]
    a, b = _features(world, "pil"), _features(world, "torch")
    from descriptor_gen.data.datasets import load_image_folder

    paths = load_image_folder(world["images"], CLASSES).paths
    png = [i for i, p in enumerate(paths) if p.endswith("png.png")][0]
    np.testing.assert_array_equal(a[png], b[png])


def test_a_jpeg_libjpeg_complains_of_decodes_quietly_in_the_workers(
        world: dict, capfd: pytest.CaptureFixture[str]) -> None:
    """Bytes before a marker: libjpeg decodes the image (as PIL does, silently) but torchvision's
    prints "Corrupt JPEG data" on stderr; in the DataLoader's workers that line is silenced,
    and the image is read, with the same features as `pil` gives it."""
    data = jpeg_bytes(photo_like(200, 150, 3))
    scan = data.find(b"\xff\xda")
    (world["images"] / "sky" / "extraneous.jpg").write_bytes(data[:scan] + b"\0\1\2" + data[scan:])
    capfd.readouterr()
    result = evaluate(_cfg(world, decode="torch", workers=2), CLASSES, world["cache"], PROMPTS)
    assert "Corrupt JPEG" not in capfd.readouterr().err
    assert result.metrics["n_images"] == 17  # every image read
    evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS)
    a, b = _features(world, "pil"), _features(world, "torch")
    assert float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min()) > 0.99999


def test_geometry_refuses_a_preprocessing_it_does_not_reproduce() -> None:
    from torchvision import transforms

    squash = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                 transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    with pytest.raises(DescgenError, match="use --decode pil"):
        Geometry.of(squash)


def test_decode_other_than_pil_refused_on_ray(world: dict) -> None:
    with pytest.raises(DescgenError, match="runs on the local engine"):
        evaluate(_cfg(world, decode="torch", engine="ray"), CLASSES, world["cache"], PROMPTS)


def test_pil_draft_downscales_only_large_jpegs(world: dict) -> None:
    assert draft_request(500, 375, 224) == (299, 224)  # halving would go below 224: scale 1
    image = Image.open(io.BytesIO(jpeg_bytes(photo_like(1600, 1200, 1))))
    from descriptor_gen.score.decode import open_draft

    open_draft(image, 224)
    assert image.size == (400, 300)  # decoded at 1/4: the shorter side still >= 224
    small = Image.open(io.BytesIO(jpeg_bytes(photo_like(500, 375, 1))))
    assert open_draft(small, 224).size == (500, 375)
    pil = evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS)
    draft = evaluate(_cfg(world, decode="pil-draft"), CLASSES, world["cache"], PROMPTS)
    assert draft.images_encoded == 16 and pil.metrics["n_images"] == draft.metrics["n_images"]
    a, b = _features(world, "pil"), _features(world, "pil-draft")
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosines.mean() > 0.99


def test_decoder_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from descriptor_gen.score import decode

    for order, pil in (("pillow-13", ""), ("horizontal-first", "\0resize:horizontal-first")):
        monkeypatch.setattr(decode, "pass_order", lambda order=order: order)
        # the reference under Pillow 13 keeps the keys it always had; PIL's other order of
        # passes (Pillow 12 and before: other pixels for a very tall image) is keyed apart
        assert decoder_key("pil", "cuda") == pil
        assert decoder_key("pil-draft", "cpu") == "\0decode:pil-draft" + pil
    monkeypatch.undo()
    assert decoder_key("torch", "cuda:1") != decoder_key("torch", "cpu")
    # pixels made with one rounding after both passes (before) are not found
    assert decoder_key("torch", "cpu") != "\0decode:torch-cpu"
    assert decoder_key("torch", "cpu").endswith(pass_order())


def test_gathered_batches_are_told_in_order_with_their_errors() -> None:
    from descriptor_gen.score.features import _Gathered

    told: list[tuple[int, int, dict[int, str]]] = []
    gathered = _Gathered(lambda start, f, ok, errors: told.append((start, len(f), errors)), 10)
    for batch in range(4):
        feats = torch.full((4, 2), float(batch))
        gathered.add(feats, np.ones(4, bool), ["", "bad" if batch == 2 else "", "", ""])
    assert told == [(0, 4, {}), (4, 4, {}), (8, 4, {9: "bad"})]  # flushed once 10 rows waited
    gathered.flush()
    assert told[-1] == (12, 4, {})
    result = gathered.result("fp32")
    assert result.features[:, 0].tolist() == [0.0] * 4 + [1.0] * 4 + [2.0] * 4 + [3.0] * 4
    assert result.errors == {9: "bad"}


def test_a_cached_re_evaluation_builds_no_model(world: dict,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    first = evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS)
    assert first.model_loaded and first.images_encoded == 16

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was built")

    import descriptor_gen.score.features as features

    monkeypatch.setattr(features, "load_clip", no_model)
    again = evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS)
    assert not again.model_loaded and again.images_encoded == 0 and again.texts_encoded == 0
    assert again.metrics == first.metrics and again.device == "cpu"
    (world["tmp"] / "o").mkdir()
    _, other = write_classes_and_store(world["tmp"] / "o", CLASSES, {0: ["a new text"]})
    with pytest.raises(AssertionError, match="a model was built"):  # a new text needs the model
        evaluate(_cfg(world, descriptors=other), CLASSES, world["cache"], PROMPTS)


def test_a_cached_re_evaluation_imports_neither_torch_nor_open_clip(world: dict) -> None:
    """In a process of its own: `descgen eval` a second time, with the checkpoint's contents
    gone (its size and date kept: the same file by name), imports no torch or open_clip."""
    args = ["eval", "--dataset", str(world["images"]), "--classes", str(world["classes"]),
            "--descriptors", str(world["store"]), "--model", str(world["config"]),
            "--pretrained", str(world["checkpoint"]), "--device", "cpu", "--workers", "0",
            "--cache-dir", str(world["cache"]), "--out", str(world["tmp"] / "r.json")]
    code = f"""
import sys
from descriptor_gen.cli import main
code = main({args!r})
print(code, 'torch' in sys.modules, 'open_clip' in sys.modules)
print('GENERATION', 'descriptor_gen.generation.backends' in sys.modules,
      'openai' in sys.modules)
"""
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert first.stdout.strip().splitlines()[-2].split()[-3:] == ["0", "True", "True"], first.stderr
    checkpoint: Path = world["checkpoint"]
    saved, stat = checkpoint.read_bytes(), checkpoint.stat()
    import os

    try:
        checkpoint.write_bytes(b"\0" * len(saved))  # unreadable as a checkpoint
        os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=300)
    finally:
        checkpoint.write_bytes(saved)
        os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    lines = second.stdout.strip().splitlines()
    assert lines[-2].split()[-3:] == ["0", "False", "False"], second.stderr
    assert lines[-1] == "GENERATION False False"  # a command module holds only what it runs
    result = json.loads((world["tmp"] / "r.json").read_text())
    assert result["model_loaded"] is False and result["images_encoded"] == 0


@pytest.mark.parametrize("argv", [["--help"], ["prompt", "tench"], ["parse", "-"],
                                  ["show", "STORE"], ["datasets"], ["eval", "--help"]])
def test_commands_that_need_no_model_import_no_torch(argv: list[str], tmp_path: Path) -> None:
    """They run (exit 0) without torch or open_clip; `--help` imports no stage at all (the
    command table lists the commands) and no NumPy or pydantic."""
    _, store = write_classes_and_store(tmp_path, CLASSES, DESCRIPTORS)
    argv = [str(store) if a == "STORE" else a for a in argv]
    code = f"""
import sys
from descriptor_gen.cli import main
code = main({argv!r})
stages = sorted(m for m in sys.modules if m.count(".") >= 1 and m.split(".")[0] == "descriptor_gen"
                and m.split(".")[1] in ("describe", "generation", "data", "score", "learn",
                                        "experiments", "visual"))
print('IMPORTED', code, 'torch' in sys.modules, 'open_clip' in sys.modules,
      'numpy' in sys.modules or 'pydantic' in sys.modules, ','.join(stages) or '-')
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, input="- a bright red comb\n- a hooked beak\n")
    last = done.stdout.strip().splitlines()[-1].split()
    assert last[:4] == ["IMPORTED", "0", "False", "False"], done.stderr
    if argv == ["--help"]:
        assert last[4:] == ["False", "-"]


def test_a_model_passed_in_is_remembered_for_later_runs(world: dict,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep or a suite passes its loaded CLIP; a later `eval` of the same model finds its
    identity without loading it."""
    import descriptor_gen.score.features as features

    clip = features.load_clip(str(world["config"]), str(world["checkpoint"]), "cpu")
    first = evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS, clip=clip)
    monkeypatch.setattr(features, "load_clip", lambda *a, **k: pytest.fail("a model was built"))
    again = evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS)
    assert not again.model_loaded and again.metrics == first.metrics


def test_the_gpu_batch_path_gives_the_workers_pixels(world: dict) -> None:
    """`batch_pixels` (the GPU path: bytes decoded together, resized one by one, normalised
    together) run on the CPU gives what the CPU workers make, with the PIL fallbacks."""
    import open_clip

    from descriptor_gen.score.decode import (
        ENCODED,
        READY,
        TorchDecodeFiles,
        batch_pixels,
        collate_items,
        pil_from_bytes,
    )
    from descriptor_gen.score.features import ImageFiles

    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    geometry = Geometry.of(preprocess)
    folder = world["tmp"] / "mixed"
    folder.mkdir()
    paths = []
    for i, (width, height) in enumerate(SIZES[:4]):
        paths.append(str(folder / f"{i}.jpg"))
        Path(paths[-1]).write_bytes(jpeg_bytes(photo_like(width, height, i)))
    photo_like(80, 60, 9).save(folder / "p.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 64)
    paths += [str(folder / "p.png"), str(folder / "broken.jpg")]
    pil = ImageFiles(paths, preprocess, 224)
    workers = TorchDecodeFiles(paths, None, pil, geometry, decode_here=True)
    device_side = TorchDecodeFiles(paths, None, pil, geometry, decode_here=False)
    items = [device_side[i] for i in range(len(paths))]
    assert [kind for _, kind, _, _ in items] == [ENCODED] * 4 + [READY, ENCODED]
    batch = collate_items(items)  # the bytes joined in one tensor, as a worker hands them over
    assert batch.lengths == [len(Path(p).read_bytes()) for p in paths[:4]] + [64 + 3]
    pixels, ok, why = batch_pixels(batch, geometry, "cpu", pil_from_bytes(preprocess, 224))
    std = torch.tensor(geometry.std).view(3, 1, 1)
    for i in range(len(paths)):
        expected, expected_ok, _ = workers[i][0], workers[i][2], workers[i][3]
        assert bool(ok[i]) == expected_ok
        # the batch resizes by matrix products: the same weights, another order of sums, so
        # a value on a rounding boundary may land one 8-bit level away
        levels = ((pixels[i] - expected) * std * 255).abs()
        assert float(levels.max()) <= 1.01 and float(levels.mean()) < 0.01
    assert not ok[5] and why[5]


def test_pixels_made_ahead_come_in_order_and_errors_reach_the_consumer() -> None:
    """`prefetch.ahead`: the thread that makes a batch's pixels while the encoder runs keeps
    the order, raises its error in the loop, and stops when the loop is left early."""
    import threading

    from descriptor_gen.score.decode import warm_decoder
    from descriptor_gen.score.prefetch import ahead

    events: list = []

    def make(b: int) -> tuple:
        events.append(b)
        return torch.full((2,), b), b * 2

    made = list(ahead(iter(range(20)), make, "cpu", depth=2,
                      prepare=lambda: events.append("prepared")))
    assert events[0] == "prepared"
    assert [m[1] for m in made] == [b * 2 for b in range(20)]
    assert all(int(m[0][0]) == b for b, m in enumerate(made))

    def broken(b: int) -> tuple[int]:
        if b == 3:
            raise ValueError("batch 3")
        return (b,)

    seen = []
    with pytest.raises(ValueError, match="batch 3"):
        for (b,) in ahead(iter(range(10)), broken, "cpu"):
            seen.append(b)
    assert seen == [0, 1, 2]

    pulled = []

    def endless():
        n = 0
        while True:
            pulled.append(n)
            yield n
            n += 1

    batches = ahead(endless(), lambda b: (b,), "cpu", depth=2)
    assert next(batches) == (0,)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == "descgen-pixels"]
    assert len(pulled) <= 5  # at most depth ahead, plus the one being made
    warm_decoder("cpu")  # what the GPU path runs first: starting the decoder is harmless here


def test_a_first_gpu_run_starts_nvjpeg_while_the_model_is_built(world: dict,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that must load its CLIP and decode on a GPU starts the decoder in a thread first,
    on the device the model will load on; a CLIP already loaded, or `pil`, starts none."""
    import threading

    from descriptor_gen.score import evaluate as ev
    from descriptor_gen.score.clip_ref import ClipRef
    from descriptor_gen.score.decode import warm_decoder_soon

    started: list[str] = []
    monkeypatch.setattr(ev, "_device_kind", lambda clip: "cuda")
    monkeypatch.setattr(ev, "warm_decoder_soon", started.append)
    evaluate(_cfg(world, decode="torch"), CLASSES, world["cache"], PROMPTS, log=lambda m: None)
    assert started == ["cpu"]  # as --device asked; before the key, which builds a new CLIP
    evaluate(_cfg(world, decode="pil"), CLASSES, world["cache"], PROMPTS, log=lambda m: None)
    evaluate(_cfg(world, decode="torch"), CLASSES, world["cache"], PROMPTS, log=lambda m: None)
    assert started == ["cpu"]  # pil decodes no JPEG on a GPU; all cached: nothing is built
    other = make_jpeg_folder(world["tmp"] / "other", per_class=2)
    evaluate(_cfg(world, decode="torch", dataset=str(other)), CLASSES, world["cache"], PROMPTS,
             log=lambda m: None)
    assert started == ["cpu", "cpu"]  # a remembered CLIP, new images: before it is built
    assert ev._cuda_device(ClipRef("ViT-B-32", "none", "auto", "fp32", world["cache"])) == "cuda"
    assert ev._cuda_device(ClipRef("ViT-B-32", "none", "cuda:1", "fp32", world["cache"])) == "cuda:1"
    warm_decoder_soon("cpu")  # harmless where there is no GPU; the thread ends by itself
    for thread in [t for t in threading.enumerate() if t.name == "descgen-warm-nvjpeg"]:
        thread.join(timeout=10)
        assert not thread.is_alive()
    hits = warm_decoder_soon.cache_info().hits
    warm_decoder_soon("cpu")  # started once a device: encode_images' call then starts nothing
    assert warm_decoder_soon.cache_info().hits == hits + 1


@pytest.mark.parametrize("decode", ["pil", "torch", "pil-draft"])
def test_a_remembered_clip_reads_new_images_while_it_is_built(
        world: dict, monkeypatch: pytest.MonkeyPatch, decode: str) -> None:
    """A CLIP the memo knows, new images: the DataLoader's workers are forked and read the
    first batches before the model is built, with the preprocessing the memo makes, and the
    features and predictions are those of a run that built the model first (a fresh cache),
    whatever the decoder."""
    from descriptor_gen.score import features

    order: list[str] = []
    real_start, real_load = features.start_reading, features.load_clip
    monkeypatch.setattr(features, "start_reading", lambda *a, **k: (
        order.append("reading"), real_start(*a, **k))[1])
    monkeypatch.setattr(features, "load_clip", lambda *a, **k: (
        order.append("built"), real_load(*a, **k))[1])
    evaluate(_cfg(world, decode=decode), CLASSES, world["cache"], PROMPTS, log=lambda m: None)
    assert order == ["built", "reading"]  # not remembered: built for its key, then read
    other = make_jpeg_folder(world["tmp"] / "other", per_class=3)
    order.clear()
    early, late = world["tmp"] / "early.jsonl", world["tmp"] / "late.jsonl"
    found = evaluate(_cfg(world, dataset=str(other), workers=2, decode=decode), CLASSES,
                     world["cache"], PROMPTS, predictions=early, log=lambda m: None)
    assert order == ["reading", "built"]  # and the reading was not started again
    order.clear()
    fresh = evaluate(_cfg(world, dataset=str(other), workers=2, decode=decode), CLASSES,
                     world["tmp"] / "fresh", PROMPTS, predictions=late, log=lambda m: None)
    assert order == ["built", "reading"]
    assert found.metrics == fresh.metrics and found.images_encoded == 12
    assert early.read_text() == late.read_text()


def test_a_reading_started_early_stops_when_the_clip_fails_or_differs(
        world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLIP fails to build after its images' reading started: the reading is closed (its
    workers shut down) and the error is the load's. A reading whose preprocessing is not the
    CLIP's is not used: the images are read again."""
    from descriptor_gen.score import features

    evaluate(_cfg(world), CLASSES, world["cache"], PROMPTS, log=lambda m: None)  # remembered
    closed: list[bool] = []
    real_close = features.Reading.close
    monkeypatch.setattr(features.Reading, "close", lambda self: (
        closed.append(True), real_close(self))[1])

    def broken(*args: object, **kwargs: object) -> None:
        raise DescgenError("cannot load CLIP model (OSError: disk gone)")

    monkeypatch.setattr(features, "load_clip", broken)
    other = make_jpeg_folder(world["tmp"] / "other", per_class=2)
    with pytest.raises(DescgenError, match="disk gone"):
        evaluate(_cfg(world, dataset=str(other), workers=1), CLASSES, world["cache"], PROMPTS,
                 log=lambda m: None)
    assert closed == [True]
    monkeypatch.undo()
    clip = features.load_clip(str(world["config"]), str(world["checkpoint"]), "cpu", "fp32")
    paths = sorted(str(p) for p in other.rglob("*.jpg"))
    import copy

    from torchvision import transforms

    other_normalise = copy.deepcopy(clip.preprocess)
    next(t for t in other_normalise.transforms if isinstance(t, transforms.Normalize)).mean = [0.5] * 3
    stale = features.start_reading(features.ReadFor(other_normalise, "cpu"), paths, 4, 0)
    assert not stale.serves(clip, paths, features.CLIP_VIEW, "pil")
    again = features.encode_images(clip, paths, 4, 0, reading=stale).features
    assert np.array_equal(again, features.encode_images(clip, paths, 4, 0).features)


def test_the_memo_makes_the_preprocessing_the_identity_names(world: dict) -> None:
    """`ClipRef.remembered_preprocess`: the loaded CLIP's own (by repr), from the settings the
    memo keeps; None when the CLIP is built, the memo has no settings (an older entry), or the
    settings make a preprocessing the remembered identity does not name."""
    from descriptor_gen.score.caches import IdentityMemo
    from descriptor_gen.score.clip_ref import ClipRef

    ref = ClipRef(str(world["config"]), str(world["checkpoint"]), "cpu", "fp32", world["cache"])
    assert ref.remembered_preprocess() is None  # not remembered yet
    built = ref.load()
    assert ref.remembered_preprocess() is None  # built: its own is there
    again = ClipRef(str(world["config"]), str(world["checkpoint"]), "cpu", "fp32", world["cache"])
    assert repr(again.remembered_preprocess()) == repr(built.preprocess)
    memo = IdentityMemo(world["cache"])
    key, value = again._key, memo.get(again._key)
    assert value is not None
    memo.put(key, {**value, "preprocess_cfg": {**value["preprocess_cfg"], "mean": [0.5] * 3}})
    assert ClipRef(*again.spec, world["cache"]).remembered_preprocess() is None
    memo.put(key, {k: v for k, v in value.items() if k != "preprocess_cfg"})
    older = ClipRef(*again.spec, world["cache"])
    assert older.known and older.remembered_preprocess() is None


def test_nvjpeg_starts_before_the_workers_are_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the decoder's start (0.65 s on an H100) overlaps the workers' (0.4 s for 16):
    the thread that starts nvJPEG is started before the DataLoader forks its workers."""
    from descriptor_gen.score import features

    order: list[str] = []

    class Loader:
        def __iter__(self):
            order.append("workers forked")
            return iter([])

    monkeypatch.setattr(features, "image_loader", lambda *a: (Loader(), lambda b: b))
    monkeypatch.setattr(features, "warm_decoder_soon", lambda device: order.append(f"warm {device}"))
    monkeypatch.setattr(features, "ahead", lambda batches, make, device, prepare: (
        order.append("pixels ahead"), prepare)[1])
    on_gpu = features.ReadFor(preprocess=None, device="cuda:1")
    reading = features.start_reading(on_gpu, ["a.jpg"], 4, 2, decode="torch")
    assert order == ["warm cuda:1", "workers forked", "pixels ahead"]
    assert reading.batches.args == ("cuda:1",)  # the pixel thread still waits for a started decoder
    order.clear()
    features.start_reading(on_gpu, ["a.jpg"], 4, 2, decode="pil")
    assert order == ["workers forked"]  # PIL on a GPU: no nvJPEG, the workers make the pixels
