"""Where the time of turning JPEG files into CLIP pixels goes, per image and end to end through
a DataLoader, for each way of doing it (the choices behind `--decode torch`):

- `pil`: open_clip's preprocessing in the workers (today's reference);
- `gpu-decode`: workers read bytes, the main process decodes in batches on the GPU (nvJPEG)
  and resizes there;
- `cpu-decode+gpu-resize`: workers decode with libjpeg-turbo (`decode_jpeg` on the CPU), the
  main process sends the 8-bit images up and resizes there;
- `cpu-decode+cpu-resize`: workers decode and resize with torch on the CPU.

    python bench/bench_decode.py [--images 4096] [--workers 16] [--device cuda]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import photo_like  # noqa: E402

from descriptor_gen.score.decode import (  # noqa: E402
    Geometry,
    decode_many,
    decode_one,
    normalise_batch,
    to_pixels,
)


class Files(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], mode: str, preprocess: Any, geometry: Geometry) -> None:
        self.paths, self.mode, self.preprocess, self.geometry = paths, mode, preprocess, geometry

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        if self.mode == "pil":
            with Image.open(self.paths[i]) as image:
                return self.preprocess(image.convert("RGB"))
        data = torch.frombuffer(bytearray(Path(self.paths[i]).read_bytes()), dtype=torch.uint8)
        if self.mode == "gpu-decode":
            return data
        image = decode_one(data)
        if self.mode == "cpu-decode+gpu-resize":
            return image
        return to_pixels(image, self.geometry)


def end_to_end(paths: list[str], mode: str, preprocess: Any, geometry: Geometry, device: str,
               workers: int, batch: int) -> float:
    loader = torch.utils.data.DataLoader(Files(paths, mode, preprocess, geometry),
                                         batch_size=batch, num_workers=workers,
                                         collate_fn=lambda items: items,
                                         pin_memory=False)
    started, n = time.perf_counter(), 0
    for items in loader:
        if mode == "gpu-decode":
            images = decode_many(items, device)
            pixels = torch.stack([to_pixels(im, geometry) for im in images])
        elif mode == "cpu-decode+gpu-resize":
            pixels = torch.stack([to_pixels(im.to(device, non_blocking=True), geometry)
                                  for im in items])
        elif mode == "cpu-decode+gpu-resize, one normalise":
            pixels = normalise_batch(torch.stack([to_pixels(im.to(device, non_blocking=True),
                                                            geometry, normalise=False)
                                                  for im in items]), geometry)
        else:
            pixels = torch.stack(items).to(device, non_blocking=True)
        n += len(pixels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - started)


def per_image(paths: list[str], preprocess: Any, geometry: Geometry, device: str) -> dict[str, float]:
    from PIL import Image

    sample = paths[:64]
    blobs = [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in sample]
    out = {}
    started = time.perf_counter()
    for p in sample:
        with Image.open(p) as image:
            image.convert("RGB").load()
    out["PIL decode (ms)"] = (time.perf_counter() - started) / len(sample) * 1e3
    started = time.perf_counter()
    for p in sample:
        with Image.open(p) as image:
            preprocess(image.convert("RGB"))
    out["PIL decode+preprocess (ms)"] = (time.perf_counter() - started) / len(sample) * 1e3
    started = time.perf_counter()
    decoded = [decode_one(b) for b in blobs]
    out["decode_jpeg cpu (ms)"] = (time.perf_counter() - started) / len(sample) * 1e3
    started = time.perf_counter()
    for image in decoded:
        to_pixels(image, geometry)
    out["torch resize cpu (ms)"] = (time.perf_counter() - started) / len(sample) * 1e3
    if device.startswith("cuda"):
        for _ in range(2):
            decode_many(blobs, device)
        torch.cuda.synchronize()
        started = time.perf_counter()
        images = decode_many(blobs, device)
        torch.cuda.synchronize()
        out["decode_jpeg cuda batched (ms)"] = (time.perf_counter() - started) / len(sample) * 1e3
        started = time.perf_counter()
        for image in images:
            to_pixels(image, geometry)
        torch.cuda.synchronize()
        out["resize cuda per image (ms)"] = (time.perf_counter() - started) / len(sample) * 1e3
    return out


def draft(preprocess: Any, geometry: Geometry, width: int, height: int,
          n: int = 32) -> dict[str, float]:
    """`pil-draft` against `pil` on photos of one size: ms an image and pixel differences."""
    from PIL import Image

    from descriptor_gen.score.decode import open_draft

    blobs = [photo_like((width, height, i)) for i in range(n)]
    std = torch.tensor(geometry.std).view(3, 1, 1)
    out: dict[str, float] = {}
    for name, use_draft in (("pil", False), ("pil-draft", True)):
        started = time.perf_counter()
        pixels = []
        for data in blobs:
            with Image.open(io.BytesIO(data)) as image:
                if use_draft:
                    open_draft(image, geometry.size)
                pixels.append(preprocess(image.convert("RGB")))
        out[f"{name} (ms)"] = (time.perf_counter() - started) / n * 1e3
        out[name] = torch.stack(pixels)  # type: ignore[assignment]
    levels = ((out.pop("pil") - out.pop("pil-draft")) * std * 255).abs()  # type: ignore[operator]
    out["max |diff| (8-bit levels)"] = float(levels.max())
    out["mean |diff| (8-bit levels)"] = float(levels.mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    import open_clip

    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    geometry = Geometry.of(preprocess)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(Path(tmp) / f"{i:06d}.jpg") for i in range(args.images)]
        with multiprocessing.Pool(args.workers) as pool:
            for path, data in zip(paths, pool.imap(photo_like, [(500, 375, i) for i in
                                                                 range(args.images)], 64)):
                Path(path).write_bytes(data)
        for width, height in ((500, 375), (1600, 1200), (4000, 3000)):
            found = draft(preprocess, geometry, width, height)
            print(f"{width}x{height}: " + ", ".join(f"{k} {v:.3f}" for k, v in found.items()),
                  flush=True)
        for name, value in per_image(paths, preprocess, geometry, args.device).items():
            print(f"{name}: {value:.3f}", flush=True)
        for mode in ("pil", "gpu-decode", "cpu-decode+gpu-resize",
                     "cpu-decode+gpu-resize, one normalise", "cpu-decode+cpu-resize"):
            if mode not in ("pil", "cpu-decode+cpu-resize") and not args.device.startswith("cuda"):
                continue
            rate = end_to_end(paths, mode, preprocess, geometry, args.device, args.workers,
                              args.batch_size)
            print(f"{mode}: {rate:,.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
