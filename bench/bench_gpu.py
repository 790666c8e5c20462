"""Encoding at the GPU's speed: per model, in one run on one machine,

- the model alone on a resident batch (the GPU's limit),
- a CLIP_benchmark-style loop (torchvision ImageFolder, DataLoader, autocast, features kept on
  the GPU),
- `descgen eval` encoding with `--decode pil` and with `--decode torch`, their agreement
  (mean cosine of the features, top-1 agreement of the predictions),
- a fully cached re-evaluation in a fresh process (wall time less the interpreter's start;
  whether a model was built),
- `--decode torch` by stage, its timeline (where the reader, the pixel thread and the encoder
  waited), nvJPEG's and the DataLoader's start-up, a second run in the same process, a user's
  first run in a fresh process (random weights, and a checkpoint file), and a fresh process's
  model load by parts,

then the start-up of commands that need no model, and `generate --backend hf` batched against
one prompt at a time on a random-weight Llama-architecture model. Random CLIP weights (speed
does not depend on them); 500x375 JPEGs made from smooth colour fields with texture and edges.

    python bench/bench_gpu.py                                  # the GPU run (H100-class, 16 cores)
    python bench/bench_gpu.py --small                          # a CPU check of the whole script

It prints a Markdown table (machine, GPU, date) and writes the numbers to --out as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
N_CLASSES = 100


def photo_like(args: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    width, height, seed = args
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
    image = image + rng.integers(-12, 12, image.shape)
    image[height // 3 : height // 3 + 4, :, :] = 255
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_images(root: Path, n: int, workers: int) -> None:
    """n JPEGs of 500x375 in N_CLASSES class folders, named by class index."""
    for c in range(N_CLASSES):
        (root / f"{c:03d}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool(max(workers, 1)) as pool:
        for i, data in enumerate(pool.imap(photo_like, [(500, 375, i) for i in range(n)], 64)):
            (root / f"{i % N_CLASSES:03d}" / f"{i:06d}.jpg").write_bytes(data)


def linked_subset(source: Path, target: Path, n: int) -> None:
    """The first n images of `source` (by number), as hard links."""
    for path in sorted(source.rglob("*.jpg"), key=lambda p: p.name)[:n]:
        (target / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(path, target / path.parent.name / path.name)


def write_texts(folder: Path, n_classes: int = N_CLASSES) -> tuple[Path, Path]:
    from descriptor_gen.describe.store import DescriptorRecord, write_store

    classes = [f"object {c}" for c in range(n_classes)]
    folder.mkdir(parents=True, exist_ok=True)
    class_file = folder / "classes.txt"
    class_file.write_text("\n".join(classes) + "\n")
    store = folder / "descriptors.jsonl"
    words = ["a red part", "a round shape", "a metal surface", "a long handle", "a striped pattern"]
    write_store(store, [DescriptorRecord(class_index=i, class_name=c, backend="bench",
                                         descriptors=[f"{w} {i}" for w in words])
                        for i, c in enumerate(classes)])
    return class_file, store


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_alone(clip: Any, batch: int, seconds: float = 3.0) -> float:
    """Images per second of the image tower on a batch already on the device."""
    import torch

    from descriptor_gen.score.features import autocast_for, image_size

    size = image_size(clip.preprocess)
    pixels = torch.randn(batch, 3, size, size, device=clip.device)
    with torch.inference_mode(), autocast_for(clip):
        for _ in range(3):
            clip.model.encode_image(pixels)
        sync(clip.device)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            clip.model.encode_image(pixels)
            done += batch
        sync(clip.device)
    return done / (time.perf_counter() - started)


def clip_benchmark_loop(clip: Any, root: Path, batch: int, workers: int) -> float:
    """What users run today: ImageFolder + DataLoader + autocast, features kept on the GPU."""
    import torch
    from torch.nn import functional as F
    from torchvision.datasets import ImageFolder

    from descriptor_gen.score.features import autocast_for

    loader = torch.utils.data.DataLoader(ImageFolder(str(root), transform=clip.preprocess),
                                         batch_size=batch, num_workers=workers, shuffle=False)
    feats, n = [], 0
    started = time.perf_counter()
    with torch.inference_mode(), autocast_for(clip):
        for images, _ in loader:
            feats.append(F.normalize(clip.model.encode_image(images.to(clip.device)), dim=-1))
            n += len(images)
    sync(clip.device)
    return n / (time.perf_counter() - started)


def descgen_eval(clip: Any, root: Path, texts: tuple[Path, Path], cache: Path, decode: str,
                 args: argparse.Namespace, model: str, predictions: Path) -> Any:
    from descriptor_gen.paths import CachePaths
    from descriptor_gen.score.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(dataset=str(root), descriptors=texts[1], model=model, pretrained="none",
                     device=clip.device, precision=args.precision, batch_size=args.batch_size,
                     workers=args.workers, decode=decode)
    classes = texts[0].read_text().split("\n")[:-1]
    return evaluate(cfg, classes, cache, CachePaths.resolve().prompts_dir, clip=clip,
                    predictions=predictions, log=lambda m: None)


def agreement(cache: Path, clip: Any, root: Path, preds: tuple[Path, Path]) -> dict[str, float]:
    """Mean and minimum cosine of `torch`'s features to `pil`'s, and top-1 agreement."""
    from descriptor_gen.data.datasets import load_image_folder
    from descriptor_gen.paths import IMAGE_FEATURES
    from descriptor_gen.score.caches import ImageFeatureCache

    data = load_image_folder(root, [f"object {c}" for c in range(N_CLASSES)])
    store = ImageFeatureCache(cache / IMAGE_FEATURES)
    kind = "cuda" if clip.device.startswith("cuda") else "cpu"
    a = store.load(store.key(clip, data.identity()))
    b = store.load(store.key(clip, data.identity(), decode="torch", device=kind))
    assert a is not None and b is not None
    fa, fb = np.asarray(a.features, np.float32), np.asarray(b.features, np.float32)
    cos = (fa * fb).sum(1) / np.maximum(np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1), 1e-12)
    pa = [json.loads(line)["pred"] for line in preds[0].read_text().splitlines()]
    pb = [json.loads(line)["pred"] for line in preds[1].read_text().splitlines()]
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "top1_agreement": float(np.mean(np.array(pa) == np.array(pb)))}


def stage_rates(clip: Any, root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Images per second of `--decode torch`'s stages, each run alone over the same files (each
    run includes starting its workers): the workers reading files and handing the bytes over;
    that plus decoding, resizing and normalising on the device (the thread ahead); all of
    `encode_images` with the encoder; and the steady rate of `encode_images` (the slope
    between the first half of the images and all of them, so without the start-up)."""
    import torch

    from descriptor_gen.score.decode import decode_many, split_joined
    from descriptor_gen.score.features import CLIP_VIEW, encode_images, image_loader
    from descriptor_gen.score.prefetch import ahead

    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    loader, pixels_of = image_loader(clip, paths, args.batch_size, args.workers, None, CLIP_VIEW,
                                     "torch")
    out: dict[str, float] = {}
    started = time.perf_counter()
    n = sum(len(batch.items) for batch in loader)
    out["workers_hand_over"] = n / (time.perf_counter() - started)
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in ahead(iter(loader), lambda b: tuple(decode_many(split_joined(b), clip.device)),
                       clip.device):
            pass
    sync(clip.device)
    out["decoded_on_device"] = n / (time.perf_counter() - started)
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in ahead(iter(loader), pixels_of, clip.device):
            pass
    sync(clip.device)
    out["pixels_on_device"] = n / (time.perf_counter() - started)
    seconds = {}
    for part in (len(paths) // 2, len(paths)):
        started = time.perf_counter()
        encode_images(clip, paths[:part], args.batch_size, args.workers, decode="torch")
        seconds[part] = time.perf_counter() - started
    out["encode_images"] = len(paths) / seconds[len(paths)]
    half, full = len(paths) // 2, len(paths)
    out["encode_images_steady"] = (full - half) / max(seconds[full] - seconds[half], 1e-9)
    return out


NVJPEG_FIRST_CALL = """
import time, torch
from torchvision.io import decode_jpeg, ImageReadMode
from PIL import Image
import io
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
buffer = io.BytesIO(); Image.new("RGB", (16, 16)).save(buffer, "JPEG")
data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
for _ in range(2):
    started = time.perf_counter()
    decode_jpeg([data], mode=ImageReadMode.RGB, device="cuda"); torch.cuda.synchronize()
    print(time.perf_counter() - started)
"""


def start_up_costs(clip: Any, root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Seconds before the first batch of `--decode torch`: nvJPEG's first and second call in
    a fresh process (its CUDA context made first), and the DataLoader's start (`iter`) and
    first batch with this run's workers and with fewer."""
    from descriptor_gen.score.features import CLIP_VIEW, image_loader

    out: dict[str, float] = {}
    if clip.device.startswith("cuda"):
        done = subprocess.run([sys.executable, "-c", NVJPEG_FIRST_CALL], capture_output=True,
                              text=True, check=True)
        first, second = (float(x) for x in done.stdout.split())
        out["nvjpeg_first_call"], out["nvjpeg_second_call"] = first, second
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    for workers in sorted({args.workers, max(args.workers // 2, 1), max(args.workers // 4, 1)}):
        loader, _ = image_loader(clip, paths, args.batch_size, workers, None, CLIP_VIEW, "torch")
        started = time.perf_counter()
        batches = iter(loader)
        out[f"loader_iter_{workers}_workers"] = time.perf_counter() - started
        next(batches)
        out[f"loader_first_batch_{workers}_workers"] = time.perf_counter() - started
        del batches
    return out


def timeline(clip: Any, root: Path, args: argparse.Namespace) -> dict[str, float]:
    """`encode_images`'s loop with `--decode torch`, timed: seconds from the start to the
    workers started, to the first and last batch from the workers, to the first, tenth and last
    batch's pixels, to the end (the device idle) and to the workers stopped; and where each side
    waited: the thread making pixels for the workers (`loader_wait`) and in `make`
    (`making`), the encoder's loop for pixels (`encoder_wait`)."""
    import functools

    import torch

    from descriptor_gen.score.decode import warm_decoder, warm_decoder_soon
    from descriptor_gen.score.features import CLIP_VIEW, autocast_for, encode_batch, image_loader
    from descriptor_gen.score.prefetch import ahead

    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    started = time.perf_counter()
    loader, pixels_of = image_loader(clip, paths, args.batch_size, args.workers, None, CLIP_VIEW,
                                     "torch")
    if clip.device.startswith("cuda"):
        warm_decoder_soon(clip.device)  # as encode_images does: while the workers are forked
    raw = iter(loader)
    out = {"workers_started": time.perf_counter() - started, "loader_wait": 0.0, "making": 0.0,
           "encoder_wait": 0.0}
    arrived: list[float] = []

    def from_workers(raw: Any) -> Any:
        while True:
            asked = time.perf_counter()
            try:
                batch = next(raw)
            except StopIteration:
                return
            now = time.perf_counter()
            out["loader_wait"] += now - asked
            arrived.append(now - started)
            yield batch

    def make(batch: Any) -> Any:
        begun = time.perf_counter()
        made = pixels_of(batch)
        out["making"] += time.perf_counter() - begun
        return made

    marks = []
    with torch.inference_mode(), autocast_for(clip):
        batches = ahead(from_workers(raw), make, clip.device,
                        prepare=functools.partial(warm_decoder, clip.device))
        asked = time.perf_counter()
        for images, ok, _ in batches:
            now = time.perf_counter()
            out["encoder_wait"] += now - asked
            marks.append(now - started)
            encode_batch(clip, images, torch.as_tensor(np.asarray(ok, bool)), on_device=True)
            asked = time.perf_counter()
    sync(clip.device)
    out.update(first_from_workers=arrived[0], last_from_workers=arrived[-1],
               first_batch=marks[0], tenth_batch=marks[min(9, len(marks) - 1)],
               last_batch=marks[-1], end=time.perf_counter() - started, batches=len(marks))
    batches.close()
    del raw
    out["workers_stopped"] = time.perf_counter() - started
    return out


def eval_process(root: Path, texts: tuple[Path, Path], work: Path, clip: Any,
                 args: argparse.Namespace, model: str) -> dict[str, Any]:
    """A user's first `descgen eval --decode torch` over these images: a fresh process, an
    empty cache; wall seconds and the result's own timings (model load and encoding apart);
    with random weights (`--pretrained none`), with the same weights from a checkpoint file
    (a user's case: open_clip's random initialisation is skipped), and from that file again in
    a cache that remembers the CLIP and holds the texts' features but no image's (a new
    dataset: the workers are forked and read while the model is built)."""
    import shutil

    import torch

    from descriptor_gen.paths import IMAGE_FEATURES

    checkpoint = work / f"{model}.pt"
    torch.save({k: v.cpu() for k, v in clip.model.state_dict().items()}, checkpoint)
    found, caches = {}, {}
    for name, weights, after in (("random weights", "none", None),
                                 ("checkpoint file", str(checkpoint), None),
                                 ("checkpoint file, CLIP remembered", str(checkpoint),
                                  "checkpoint file")):
        out = work / f"{model}-fresh-{len(found)}.json"
        cache = caches[name] = work / f"cache-fresh-{model}-{len(found)}"
        if after is not None:  # that run's cache, its image features removed
            shutil.copytree(caches[after], cache)
            shutil.rmtree(cache / IMAGE_FEATURES)
        argv = [sys.executable, "-m", "descriptor_gen", "eval", "--dataset", str(root),
                "--classes", str(texts[0]), "--descriptors", str(texts[1]), "--model", model,
                "--pretrained", weights, "--device", clip.device, "--precision", args.precision,
                "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                "--decode", "torch", "--cache-dir", str(cache), "--out", str(out)]
        wall, done = run_process(argv)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        result = json.loads(out.read_text())
        found[name] = {"wall": wall, "images": result["images_encoded"],
                       "timings": result["timings"]}
    checkpoint.unlink()
    return found


MODEL_LOAD_PARTS = """
import sys, time
started = time.perf_counter()
import torch
imported_torch = time.perf_counter()
import open_clip
imported = time.perf_counter()
torch.manual_seed(0)
model = open_clip.create_model(sys.argv[1], pretrained=None)
built = time.perf_counter()
model = model.to(sys.argv[2]).half()
torch.cuda.synchronize() if sys.argv[2].startswith("cuda") else None
moved = time.perf_counter()
print(imported_torch - started, imported - imported_torch, built - imported, moved - built)
"""


def model_load_parts(model: str, device: str) -> dict[str, float]:
    """Where a fresh process's model load goes: importing torch, then open_clip, building the
    model with random weights on the CPU, moving it to the device (its CUDA context made)."""
    wall, done = run_process([sys.executable, "-c", MODEL_LOAD_PARTS, model, device])
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    parts = [float(x) for x in done.stdout.split()]
    return {"wall": wall, **dict(zip(("import_torch", "import_open_clip", "build_random",
                                      "to_device"), parts))}


def run_process(argv: list[str], given: str | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, input=given,
                          env={**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"})
    return time.perf_counter() - started, done


def cached_rerun(root: Path, texts: tuple[Path, Path], cache: Path, device: str,
                 args: argparse.Namespace, model: str, out: Path,
                 precision: str | None = None) -> dict[str, Any]:
    """A fresh `descgen eval` whose features are all cached: wall time, less the start of a
    bare interpreter, and whether it built a model or imported torch."""
    interpreter, _ = run_process([sys.executable, "-c", "pass"])
    argv = ["eval", "--dataset", str(root), "--classes", str(texts[0]), "--descriptors",
            str(texts[1]), "--model", model, "--pretrained", "none", "--device", device,
            "--precision", precision or args.precision, "--batch-size", str(args.batch_size), "--workers",
            str(args.workers), "--cache-dir", str(cache), "--out", str(out)]
    code = ("import sys; from descriptor_gen.cli import main; code = main(%r); "
            "print('IMPORTED', 'torch' in sys.modules, 'open_clip' in sys.modules); "
            "sys.exit(code)" % argv)
    wall, done = run_process([sys.executable, "-c", code])
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(out.read_text())
    imported = done.stdout.strip().splitlines()[-1].split()[1:]
    return {"wall": wall, "interpreter": interpreter, "model_loaded": result["model_loaded"],
            "images_encoded": result["images_encoded"], "torch_imported": imported[0] == "True",
            "open_clip_imported": imported[1] == "True"}


def make_imagenet_shape(root: Path, per_class: int) -> None:
    """1,000 class folders named by class index (`000` ...), `per_class` tiny JPEGs each."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (120, 90, 60)).save(buffer, "JPEG")
    for c in range(1000):
        folder = root / f"{c:03d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"{c * per_class + i:08d}.jpg").write_bytes(buffer.getvalue())


def cached_imagenet_shape(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The cached re-evaluation at ImageNet validation's shape: 50,000 files in 1,000 class
    folders, 5 descriptors a class (`--small`: 2,000 files). The features are made once with
    the tiny CLIP (what is timed is the re-run, which builds no model: its size is moot)."""
    from descriptor_gen.score.tiny import TINY_CLIP_CONFIG, write_clip_checkpoint

    root = work / "imagenet-shape"
    per_class = args.shape_per_class or (2 if args.small else 50)
    make_imagenet_shape(root, per_class)
    texts = write_texts(work / "imagenet-shape-texts", 1000)  # folders name classes by index
    config, _ = write_clip_checkpoint(work / "tiny", "bench-tiny", TINY_CLIP_CONFIG)
    cache = work / "cache-imagenet-shape"
    first = cached_rerun(root, texts, cache, args.device, args, str(config),
                         work / "imagenet-shape-first.json", precision="fp32")
    again = cached_rerun(root, texts, cache, args.device, args, str(config),
                         work / "imagenet-shape-cached.json", precision="fp32")
    return {"images": 1000 * per_class, "first_wall": first["wall"], **again}


def startup(store: Path) -> dict[str, float]:
    """Wall seconds of commands that need no model, each in a fresh process (the median of
    three; each must succeed)."""
    out = {}
    for name, argv, given in [("--help", ["--help"], None), ("prompt", ["prompt", "tench"], None),
                              ("parse", ["parse", "-"], "- a red comb\n- a hooked beak\n"),
                              ("show", ["show", str(store)], None), ("datasets", ["datasets"], None)]:
        walls = []
        for _ in range(3):
            wall, done = run_process([sys.executable, "-m", "descriptor_gen", *argv], given)
            if done.returncode:
                raise RuntimeError(f"descgen {' '.join(argv)}: {done.stderr[-500:]}")
            walls.append(wall)
        out[name] = statistics.median(walls)
    out["python -c pass"] = statistics.median(run_process([sys.executable, "-c", "pass"])[0]
                                              for _ in range(3))
    return out


def hf_generation(folder: Path, classes: int, device: str, small: bool) -> dict[str, Any]:
    """Answers per second of `generate --backend hf`: the prompts of `classes` classes batched
    32 together against one at a time, on a random-weight Llama-architecture model."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_lm  # the tokenizer: a byte-level BPE trained here
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions
    from descriptor_gen.generation.backends import GenerationParams
    from descriptor_gen.generation.cache import ResponseCache
    from descriptor_gen.generation.generate import GenerationJob, generate
    from descriptor_gen.paths import CachePaths

    model_dir = build_tiny_lm(folder / "lm")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    size = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
            if small else dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                               num_attention_heads=16))
    import torch

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=size["num_attention_heads"],
                         max_position_embeddings=2048, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                         **size)
    model = LlamaForCausalLM(config)
    model.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    names = [f"object {i}" for i in range(classes)]
    out: dict[str, Any] = {"parameters": params}
    for label, batch, concurrency in [("one at a time", 1, 1), ("batched 32", 32, 32)]:
        job = GenerationJob(
            classes=names, out=folder / f"{batch}.jsonl", options=PromptOptions(),
            params=GenerationParams(backend="hf", model=str(model_dir), device=device,
                                    dtype="bf16" if device.startswith("cuda") else "fp32",
                                    batch_size=batch, max_tokens=64, temperature=0.0),
            library=PromptLibrary(CachePaths.resolve().prompts_dir),
            cache=ResponseCache(folder / f"{batch}.sqlite"), concurrency=concurrency,
            max_attempts=1, progress=False, log=lambda m: None)
        started = time.perf_counter()
        summary = generate(job)
        seconds = time.perf_counter() - started
        out[label] = {"seconds": seconds, "answers": summary.requests,
                      "answers_per_second": summary.requests / seconds}
    return out


def machine(device: str) -> dict[str, str]:
    import open_clip
    import torch
    import torchvision

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    return {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
            "cpus": str(os.cpu_count()), "python": platform.python_version(), "gpu": gpu,
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "open_clip": open_clip.__version__}


def bench_model(model: str, n: int, images: Path, texts: tuple[Path, Path], work: Path,
                args: argparse.Namespace) -> dict[str, Any]:
    from descriptor_gen.score.features import load_clip

    root = work / f"images-{model}"
    linked_subset(images, root, n)
    clip = load_clip(model, "none", args.device, args.precision)
    row: dict[str, Any] = {"model": model, "images": n}
    row["model_alone"] = model_alone(clip, args.batch_size)
    row["clip_benchmark_loop"] = clip_benchmark_loop(clip, root, args.batch_size, args.workers)
    cache = work / f"cache-{model}"
    preds = (work / f"{model}-pil.jsonl", work / f"{model}-torch.jsonl")
    for decode, pred in zip(("pil", "torch"), preds):
        result = descgen_eval(clip, root, texts, cache, decode, args, model, pred)
        row[f"descgen_{decode}"] = result.images_encoded / result.timings["images"]
        row[f"descgen_{decode}_timings"] = result.timings
    row["agreement"] = agreement(cache, clip, root, preds)
    row["cached"] = cached_rerun(root, texts, cache, clip.device, args, model,
                                 work / f"{model}-cached.json")
    again = descgen_eval(clip, root, texts, work / f"cache-again-{model}", "torch", args, model,
                         work / f"{model}-again.jsonl")
    row["descgen_torch_again"] = again.images_encoded / again.timings["images"]
    row["descgen_torch_again_timings"] = again.timings
    for name, part in (("stages", stage_rates), ("start_up", start_up_costs),
                       ("timeline", timeline),
                       ("fresh_process", lambda c, *_: eval_process(root, texts, work, c, args,
                                                                    model)),
                       ("model_load_parts", lambda c, *_: model_load_parts(model, c.device))):
        try:
            row[name] = part(clip, root, args)
        except Exception:  # noqa: BLE001 - the row's other numbers stand without it
            import traceback

            row[f"{name}_error"] = traceback.format_exc()
    del clip
    return row


def table(found: dict[str, Any]) -> str:
    info, rows, start, hf = found["machine"], found["rows"], found.get("startup") or {}, found.get("hf")
    lines = [f"{info['date']}, {info['gpu']}, {info['cpus']} CPUs ({info['machine']}), Python"
             f" {info['python']}, torch {info['torch']}, torchvision {info['torchvision']},"
             f" open_clip {info['open_clip']}; random weights, 500x375 JPEGs.", "",
             "| model | images | model alone | CLIP_benchmark-style loop | descgen `--decode pil` |"
             " descgen `--decode torch` | torch / loop | torch / model alone |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['images']:,} | {r['model_alone']:,.0f} img/s |"
                     f" {r['clip_benchmark_loop']:,.0f} img/s | {r['descgen_pil']:,.0f} img/s |"
                     f" {r['descgen_torch']:,.0f} img/s |"
                     f" {r['descgen_torch'] / r['clip_benchmark_loop']:.2f}x |"
                     f" {r['descgen_torch'] / r['model_alone']:.2f} |")
    lines += ["", "`--decode torch` by stage (each alone, over the same images, workers started"
              " each time):", "",
              "| model | workers hand bytes over | + decoded on the device | + resized and"
              " normalised there | + encoder (`encode_images`) | `encode_images`, steady"
              " (second half) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in (r for r in rows if "stages" in r):
        st = r["stages"]
        lines.append(f"| {r['model']} | {st['workers_hand_over']:,.0f} img/s |"
                     f" {st['decoded_on_device']:,.0f} img/s | {st['pixels_on_device']:,.0f} img/s | {st['encode_images']:,.0f} img/s |"
                     f" {st['encode_images_steady']:,.0f} img/s"
                     f" ({st['encode_images_steady'] / r['model_alone']:.2f} of model alone) |")
    timed = [r for r in rows if "timeline" in r and "start_up" in r]
    if timed:
        lines += ["", "Where a `--decode torch` run's time goes (seconds from its start; the"
                  " waits summed over the run; nvJPEG's calls in a fresh process; the"
                  " DataLoader's start and first batch):", "",
                  "| model | workers started | first from workers | first pixels | tenth |"
                  " last | end | workers stopped | thread waited for workers | thread making"
                  " pixels | encoder waited for pixels | nvJPEG first call, second |"
                  " DataLoader iter, first batch (by workers) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in timed:
            t, up = r["timeline"], r["start_up"]
            nvjpeg = (f"{up['nvjpeg_first_call']:.3f}, {up['nvjpeg_second_call']:.4f}"
                      if "nvjpeg_first_call" in up else "(no GPU)")
            loaders = "; ".join(f"{k.split('_')[2]}: {up[k]:.3f}, "
                                f"{up[k.replace('iter', 'first_batch')]:.3f}"
                                for k in up if k.startswith("loader_iter_"))
            lines.append(f"| {r['model']} | {t['workers_started']:.3f} |"
                         f" {t.get('first_from_workers', float('nan')):.3f} |"
                         f" {t['first_batch']:.3f} | {t['tenth_batch']:.3f} |"
                         f" {t['last_batch']:.3f} | {t['end']:.3f} |"
                         f" {t.get('workers_stopped', float('nan')):.3f} |"
                         f" {t.get('loader_wait', float('nan')):.3f} |"
                         f" {t.get('making', float('nan')):.3f} |"
                         f" {t.get('encoder_wait', float('nan')):.3f} | {nvjpeg} | {loaders} |")
    evals = [r for r in rows if "descgen_torch_timings" in r]
    if evals:
        lines += ["", "`eval --decode torch`'s image stage (seconds): the cache key, encoding,"
                  " saving; in the bench's process first, then again (a new cache), then a"
                  " user's first run in a fresh process (its model load apart; a CLIP whose identity is not"
                  " yet remembered is built during the key):", "",
                  "| model | run | key | model load | encode | save | image stage | img/s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in evals:
            runs = [("first in process", r["descgen_torch_timings"]),
                    ("again in process", r.get("descgen_torch_again_timings"))]
            for weights, fresh in (r.get("fresh_process") or {}).items():
                runs.append((f"fresh process, {weights} ({fresh['wall']:.1f} s wall)",
                             fresh["timings"]))
            for name, tm in runs:
                if not tm:
                    continue
                cells = " | ".join(f"{tm.get(k, float('nan')):.3f}" for k in
                                   ("images_key", "images_model", "images_encode", "images_save",
                                    "images"))
                lines.append(f"| {r['model']} | {name} | {cells} |"
                             f" {r['images'] / max(tm['images'] - tm.get('images_model', 0), 1e-9):,.0f} |")
        for r in (r for r in evals if r.get("model_load_parts")):
            m = r["model_load_parts"]
            lines.append(f"\n{r['model']}, a fresh process loading the model ({m['wall']:.1f} s"
                         f" wall): import torch {m['import_torch']:.2f} s, open_clip"
                         f" {m['import_open_clip']:.2f} s, build with random weights"
                         f" {m['build_random']:.2f} s, to the device {m['to_device']:.2f} s.")
    lines += ["", "| model | mean cosine (torch vs pil) | min cosine | top-1 agreement |"
              " cached re-eval: wall - interpreter | model built | torch imported |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        a, c = r["agreement"], r["cached"]
        lines.append(f"| {r['model']} | {a['mean_cosine']:.6f} | {a['min_cosine']:.6f} |"
                     f" {a['top1_agreement']:.4f} | {c['wall'] - c['interpreter']:.2f} s"
                     f" ({c['wall']:.2f} s - {c['interpreter']:.2f} s) | {c['model_loaded']} |"
                     f" {c['torch_imported']} |")
    shape = found.get("imagenet_shape")
    if shape:
        lines += ["", f"Fully cached re-evaluation at ImageNet validation's shape ({shape['images']:,}"
                  " images, 1,000 classes x 5 descriptors), a fresh process:"
                  f" {shape['wall'] - shape['interpreter']:.2f} s less the interpreter's start"
                  f" ({shape['wall']:.2f} s - {shape['interpreter']:.2f} s); model built:"
                  f" {shape['model_loaded']}, torch imported: {shape['torch_imported']}."]
    lines += ["", "| command (fresh process) | wall |", "| --- | --- |"]
    lines += [f"| `{k}` | {v:.2f} s |" for k, v in start.items()]
    if hf is not None:
        one, many = hf["one at a time"], hf["batched 32"]
        lines += ["", f"`generate --backend hf`, a random Llama ({hf['parameters'] / 1e6:.0f}M"
                  " parameters), 64 new tokens an answer, greedy:", "",
                  "| run | answers | seconds | answers/s |", "| --- | --- | --- | --- |",
                  f"| one at a time | {one['answers']} | {one['seconds']:.1f} | {one['answers_per_second']:.2f} |",
                  f"| batched 32 | {many['answers']} | {many['seconds']:.1f} | {many['answers_per_second']:.2f} |",
                  f"| speed-up | | | **{many['answers_per_second'] / one['answers_per_second']:.1f}x** |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CPU sizes: check the script")
    parser.add_argument("--models", default=None,
                        help="MODEL:IMAGES, comma-separated (default ViT-B-32:20000,ViT-L-14:8000;"
                             " ViT-B-32:48 with --small)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hf-classes", type=int, default=128)
    parser.add_argument("--shape-per-class", type=int, default=0,
                        help="images a class of the ImageNet-shaped cached re-run (default 50; 2"
                             " with --small)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_gpu.json"))
    args = parser.parse_args()
    if args.small:
        args.models, args.batch_size, args.precision = args.models or "ViT-B-32:48", 16, "fp32"
        args.device, args.hf_classes, args.workers = "cpu", 4, min(args.workers, 2)
    args.models = args.models or "ViT-B-32:20000,ViT-L-14:8000"
    os.environ.setdefault("DESCRIPTOR_GEN_CACHE", tempfile.mkdtemp(prefix="bench-gpu-cache-"))
    models = [(m, int(n)) for m, n in (item.split(":") for item in args.models.split(","))]
    found: dict[str, Any] = {"machine": machine(args.device), "rows": [], "errors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        make_images(work / "images", max(n for _, n in models), args.workers)
        print(f"images made in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        texts = write_texts(work)
        for model, n in models:
            row = attempt(found, model, lambda: bench_model(model, n, work / "images", texts,
                                                            work, args), args.out)
            if row is not None:
                found["rows"].append(row)
        found["imagenet_shape"] = attempt(found, "imagenet_shape",
                                          lambda: cached_imagenet_shape(work, args), args.out)
        found["startup"] = attempt(found, "startup", lambda: startup(texts[1]), args.out)
        found["hf"] = attempt(found, "hf", lambda: hf_generation(
            work, args.hf_classes, args.device, args.small), args.out) if args.hf_classes else None
    save(found, args.out)
    print(table(found))
    for name, error in found["errors"].items():
        print(f"\n{name} failed:\n{error}")


def attempt(found: dict[str, Any], name: str, part: Any, out: Path) -> Any:
    """One part of the run; a failure is recorded (and the rest still runs)."""
    import traceback

    started = time.perf_counter()
    try:
        result = part()
    except Exception:  # noqa: BLE001 - a benchmark run on a lent machine keeps what it has
        found["errors"][name] = traceback.format_exc()
        result = None
    print(f"{name}: {time.perf_counter() - started:.1f} s {json.dumps(result)}", file=sys.stderr,
          flush=True)
    found.setdefault("parts", {})[name] = result
    save(found, out)
    return result


def save(found: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({k: v for k, v in found.items() if k != "parts"}, indent=2) + "\n")

if __name__ == "__main__":
    main()
