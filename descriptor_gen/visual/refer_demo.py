"""`make refer-demo`: a generated scene, marked and scored end to end; marked images are saved.

The scene holds three drawn objects; each has an expression, and the three boxes are the
proposals. CLIP is ViT-L-14 with OpenAI's weights (the paper's model) when they load, else
ViT-B-32 with random weights, said aloud.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.errors import REFUSED, DescgenError
from descriptor_gen.experiments.demo import clip_weights
from descriptor_gen.experiments.report import write_refer_report
from descriptor_gen.experiments.specs import load_yaml_model
from descriptor_gen.score.features import load_clip
from descriptor_gen.paths import CachePaths
from descriptor_gen.visual.refer import (
    ReferSweepSpec,
    Variant,
    evaluate_refer,
    read_annotations,
    run_refer_sweep,
)

OBJECTS = [  # expression, box [x, y, w, h], colour, shape
    ("a blue square on the left", [20, 80, 90, 90], (30, 60, 220), "square"),
    ("a red circle in the middle", [150, 60, 110, 110], (220, 30, 30), "circle"),
    ("a green triangle on the right", [300, 90, 90, 80], (30, 170, 60), "triangle"),
]


def make_scene(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (420, 260), (245, 240, 230))
    draw = ImageDraw.Draw(image)
    for _, (x, y, w, h), colour, shape in OBJECTS:
        if shape == "square":
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        elif shape == "circle":
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        else:
            draw.polygon([(x + w / 2, y), (x + w, y + h), (x, y + h)], fill=colour)
    path = folder / "scene.png"
    image.save(path)
    return path


def run_demo(out: Path) -> None:
    """`descgen refer` with a three-marker ensemble, then `descgen refer-sweep` over a small
    grid, called as the CLI calls them."""
    make_scene(out / "images")
    boxes = [box for _, box, _, _ in OBJECTS]
    annotations = out / "annotations.jsonl"
    write_text_atomically(annotations, "".join(json.dumps({"image": "scene.png", "expression": e,
                                               "proposals": boxes, "target": box}) + "\n"
                                   for e, box, _, _ in OBJECTS))
    model, weights = "ViT-L-14", clip_weights("ViT-L-14", "openai")
    if weights == "none":
        model = "ViT-B-32"
        print("!! using ViT-B-32 with random weights to keep the demo quick", flush=True)
    cache = CachePaths.resolve(None, writable=True).cache_dir
    clip = load_clip(model, weights, "auto", "fp32")
    print("== descgen refer, circle + blur_outside + grayscale_outside ensemble", flush=True)
    variants = [Variant(m) for m in ("circle", "blur_outside", "grayscale_outside")]
    result = evaluate_refer(read_annotations(annotations, out / "images"), out / "images", clip,
                            variants, cache, subtract=2, save_marked=out / "marked",
                            model=model, pretrained=weights)
    write_text_atomically(out / "refer.json", result.model_dump_json(indent=2) + "\n")
    print(f"accuracy {result.accuracy:.4f}  crop baseline {result.crop_accuracy:.4f}"
          f"  expressions {result.n_expressions}", flush=True)
    print(f"== marked images: {out / 'marked'}", flush=True)
    print("== marker ablation (a small grid)", flush=True)
    sweep = load_yaml_model(Path("data/experiments/markers.yaml"), ReferSweepSpec, [
        f"annotations={annotations}", f"images={out / 'images'}", f"clip.model={model}",
        f"clip.pretrained={weights}", "grid.marker=[circle, box, cross, crop]",
        "grid.color=[red, green]"])
    folder = out / "sweep"
    if (sweep.clip.device, sweep.clip.precision) != ("auto", "fp32"):
        clip = load_clip(model, weights, sweep.clip.device, sweep.clip.precision)
    run_refer_sweep(sweep, folder, cache, clip)
    for path in write_refer_report(folder):
        print(path, flush=True)


def main(out_dir: str = "results/refer-demo") -> int:
    try:
        run_demo(Path(out_dir))
    except DescgenError as exc:
        print(f"descgen: error: {exc}", file=sys.stderr)
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
