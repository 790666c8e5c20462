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

from descriptor_gen.cli import main as descgen
from descriptor_gen.experiments.demo import clip_weights

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


def main(out_dir: str = "results/refer-demo") -> int:
    out = Path(out_dir)
    make_scene(out / "images")
    boxes = [box for _, box, _, _ in OBJECTS]
    annotations = out / "annotations.jsonl"
    annotations.write_text("".join(json.dumps({"image": "scene.png", "expression": e,
                                               "proposals": boxes, "target": box}) + "\n"
                                   for e, box, _, _ in OBJECTS))
    model, weights = "ViT-L-14", clip_weights("ViT-L-14", "openai")
    if weights == "none":
        model = "ViT-B-32"
        print("!! using ViT-B-32 with random weights to keep the demo quick", flush=True)
    common = ["--model", model, "--pretrained", weights]
    print("== descgen refer, circle + blur_outside + grayscale_outside ensemble", flush=True)
    code = descgen(["refer", "--annotations", str(annotations), "--images", str(out / "images"),
                    "--ensemble", "circle,blur_outside,grayscale_outside", "--subtract", "2",
                    "--save-marked", str(out / "marked"), "--out", str(out / "refer.json"),
                    *common])
    if code:
        return code
    print(f"== marked images: {out / 'marked'}", flush=True)
    print("== marker ablation (a small grid)", flush=True)
    return descgen(["refer-sweep", "data/experiments/markers.yaml", "--out", str(out / "sweep"),
                    "--set", f"annotations={annotations}", "--set", f"images={out / 'images'}",
                    "--set", f"clip.model={model}", "--set", f"clip.pretrained={weights}",
                    "--set", "grid.marker=[circle, box, cross, crop]",
                    "--set", "grid.color=[red, green]"])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
