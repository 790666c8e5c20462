"""How close `--decode torch`'s pixels and features are to open_clip's PIL preprocessing (the
reference), against the straightforward tensor resize (one antialiased bicubic resize of both
axes, rounded once) that `--decode torch` used before 2026-11-28, in one run on one machine.

Photo-like JPEGs (smooth colour fields, texture, an edge) in ImageNet's sizes and others,
landscape and portrait, shrunk and enlarged; each decoded once (torchvision's or TorchCodec's
`decode_jpeg`, as `--decode torch` finds it), then made into pixels three ways. Pixels are
compared in 8-bit levels; features by a ViT-B-32 with random weights (speed and agreement do not
need the real ones; a random classifier's near-ties make top-1 agreement a pessimistic figure)
against 100 random class vectors.

    python bench/bench_agreement.py [--images 512] [--device cpu]
    python bench/bench_agreement.py --images 1000 --device cuda --pixels-on cuda   # a GPU's
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import photo_like  # noqa: E402

from descriptor_gen.score.decode import (  # noqa: E402
    Geometry,
    decode_many,
    normalise_batch,
    pass_order,
    resized_shape,
    to_pixels,
    to_pixels_many,
)
from descriptor_gen.score.jpeg import jpeg_decoder  # noqa: E402

SIZES = [(500, 375), (375, 500), (500, 333), (333, 500), (640, 480), (1024, 768), (300, 900),
         (900, 300), (160, 120), (250, 250)]


def one_rounding(image: Any, g: Geometry) -> Any:
    """The straightforward way: both axes in one antialiased resize, rounded once."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    out_h, out_w = resized_shape(height, width, g.size)
    x = F.interpolate(image.unsqueeze(0).float(), size=(out_h, out_w), mode=g.mode,
                      antialias=True, align_corners=False).round_().clamp_(0, 255)
    top, left = int(round((out_h - g.crop) / 2.0)), int(round((out_w - g.crop) / 2.0))
    return normalise_batch(x[0, :, top : top + g.crop, left : left + g.crop], g)


def levels(pixels: Any, reference: Any, g: Geometry) -> Any:
    return ((pixels - reference) * torch.tensor(g.std).view(3, 1, 1) * 255).abs()


def made_here(decoded: Any, g: Geometry, pixels_on: str) -> Any:
    """`--decode torch`'s pixels of a decoded image as the run on `pixels_on` makes them: in a
    CPU worker one image at a time (`to_pixels`), on a GPU a batch's images of one size at once
    (`to_pixels_many`, then normalised)."""
    if pixels_on == "cpu":
        return to_pixels(decoded, g)
    return normalise_batch(to_pixels_many([decoded], g), g)[0]


def measure(n: int, device: str, pixels_on: str = "cpu") -> dict[str, Any]:
    import open_clip
    from PIL import Image

    torch.manual_seed(0)  # the same random weights in every run
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model = model.eval().to(device)
    g = Geometry.of(preprocess)
    ways = {"PIL": [], "one rounding": [], "ours": []}
    started = time.perf_counter()
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        data = photo_like((width, height, i))
        with Image.open(io.BytesIO(data)) as image:
            ways["PIL"].append(preprocess(image.convert("RGB")))
        decoded = decode_many([torch.frombuffer(bytearray(data), dtype=torch.uint8)], pixels_on)[0]
        ways["one rounding"].append(one_rounding(decoded, g).cpu())
        ways["ours"].append(made_here(decoded, g, pixels_on).cpu())
    pixels = {k: torch.stack(v) for k, v in ways.items()}
    found: dict[str, Any] = {"images": n, "sizes": SIZES, "pass_order": pass_order(),
                             "pixels_on": pixels_on,
                             "decoder": jpeg_decoder().name, "pixels": {}, "features": {}}
    for way in ("one rounding", "ours"):
        diff = levels(pixels[way], pixels["PIL"], g)
        found["pixels"][way] = {"mean_levels": float(diff.mean()), "max_levels": float(diff.max()),
                                "share_differing": float((diff > 0.5).float().mean())}
    with torch.no_grad():
        feats = {k: F.normalize(torch.cat([model.encode_image(v[s : s + 64].to(device)).float()
                                           for s in range(0, n, 64)]), dim=-1).cpu()
                 for k, v in pixels.items()}
    classes = F.normalize(torch.randn(100, feats["PIL"].shape[1],
                                      generator=torch.Generator().manual_seed(0)), dim=-1)
    reference = (feats["PIL"] @ classes.T).argmax(1)
    for way in ("one rounding", "ours"):
        cosines = (feats[way] * feats["PIL"]).sum(1)
        found["features"][way] = {
            "mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()),
            "top1_agreement": float(((feats[way] @ classes.T).argmax(1) == reference).float().mean())}
    found["seconds"] = time.perf_counter() - started
    return found


def table(found: dict[str, Any], device: str) -> str:
    lines = [f"{date.today()}, {platform.machine()}, device {device}, torch {torch.__version__},"
             f" decoder {found['decoder']} (pixels made on {found['pixels_on']}), Pillow pass"
             f" order {found['pass_order']};"
             f" {found['images']} JPEGs, ViT-B-32 random weights:", "",
             "| way | mean difference (8-bit levels) | largest | values differing |"
             " mean cosine | smallest cosine | top-1 agreement |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for way in ("one rounding", "ours"):
        p, f = found["pixels"][way], found["features"][way]
        lines.append(f"| {way} | {p['mean_levels']:.5f} | {p['max_levels']:.0f} |"
                     f" {100 * p['share_differing']:.3f}% | {f['mean_cosine']:.7f} |"
                     f" {f['min_cosine']:.7f} | {f['top1_agreement']:.4f} |")
    before, after = found["pixels"]["one rounding"], found["pixels"]["ours"]
    lines += ["", f"values differing from PIL's: {before['share_differing'] / max(after['share_differing'], 1e-12):.0f}x fewer"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the CLIP encodes")
    parser.add_argument("--pixels-on", default="cpu",
                        help="where JPEGs are decoded and resized: cpu (libjpeg-turbo, as in a CPU"
                             " run's workers) or cuda (nvJPEG and the batch resize, as on a GPU)")
    args = parser.parse_args()
    print(table(measure(args.images, args.device, args.pixels_on), args.device))


if __name__ == "__main__":
    main()
