"""Visual prompts drawn on images (Shtedritski, Rupprecht & Vedaldi, ICCV 2023): pure
functions of a PIL image and a box `[x, y, w, h]` in pixels, each returning a new image.

Shapes: `circle` (an ellipse fitted to the box), `arrow`, `box`, `cross`; `color_block`, CPT's
semi-transparent colour block over the region (Yao et al., "CPT: Colorful Prompt Tuning",
2021); image-side variants: `crop`, `blur_outside` (Gaussian blur outside the ellipse),
`grayscale_outside`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from PIL import Image, ImageColor, ImageDraw, ImageFilter, ImageOps

from descriptor_gen.errors import DescgenError

Box = Sequence[float]
Color = str | tuple[int, int, int]


def clip_box(image: Image.Image, box: Box) -> tuple[int, int, int, int]:
    """The box as integer corners (x0, y0, x1, y1) inside the image; degenerate boxes refused."""
    if len(box) != 4:
        raise DescgenError(f"box {list(box)}: expected [x, y, w, h]")
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise DescgenError(f"box {list(box)}: width and height must be positive")
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(image.width, math.ceil(x + w)), min(image.height, math.ceil(y + h))
    if x1 <= x0 or y1 <= y0:
        raise DescgenError(f"box {list(box)}: lies outside the {image.width}x{image.height} image")
    return x0, y0, x1, y1


CPT_COLOURS = {  # thunlp/CPT prompt_feat/.../gqadataset.py all_colors (RGB; alpha 127)
    "cpt-red": (240, 0, 30), "cpt-blue": (0, 10, 255), "cpt-yellow": (255, 255, 25),
    "cpt-purple": (155, 50, 210), "cpt-green": (0, 255, 0),
}
CPT_ALPHA = 127


def rgb(color: Color) -> tuple[int, int, int]:
    if isinstance(color, str) and color in CPT_COLOURS:
        return CPT_COLOURS[color]
    if isinstance(color, str):
        try:
            return ImageColor.getrgb(color)[:3]
        except ValueError as exc:
            raise DescgenError(f"unknown colour {color!r}") from exc
    return tuple(int(c) for c in color)[:3]  # type: ignore[return-value]


def line_width(image: Image.Image, thickness: float) -> int:
    """Thickness as a fraction of the shorter image side, at least one pixel."""
    return max(1, round(thickness * min(image.size)))


def circle(image: Image.Image, box: Box, color: Color = "red", thickness: float = 0.01) -> Image.Image:
    out = image.convert("RGB")
    x0, y0, x1, y1 = clip_box(out, box)
    ImageDraw.Draw(out).ellipse((x0, y0, x1 - 1, y1 - 1), outline=rgb(color),
                                width=line_width(out, thickness))
    return out


def rectangle(image: Image.Image, box: Box, color: Color = "red", thickness: float = 0.01) -> Image.Image:
    out = image.convert("RGB")
    x0, y0, x1, y1 = clip_box(out, box)
    ImageDraw.Draw(out).rectangle((x0, y0, x1 - 1, y1 - 1), outline=rgb(color),
                                  width=line_width(out, thickness))
    return out


def cross(image: Image.Image, box: Box, color: Color = "red", thickness: float = 0.01) -> Image.Image:
    out = image.convert("RGB")
    x0, y0, x1, y1 = clip_box(out, box)
    draw, width = ImageDraw.Draw(out), line_width(out, thickness)
    draw.line((x0, y0, x1 - 1, y1 - 1), fill=rgb(color), width=width)
    draw.line((x0, y1 - 1, x1 - 1, y0), fill=rgb(color), width=width)
    return out


def arrow(image: Image.Image, box: Box, color: Color = "red", thickness: float = 0.01) -> Image.Image:
    """An arrow from outside the box's upper-left corner to its centre, head at the centre."""
    out = image.convert("RGB")
    x0, y0, x1, y1 = clip_box(out, box)
    tip = ((x0 + x1) / 2, (y0 + y1) / 2)
    reach = max(x1 - x0, y1 - y0) * 0.75 + 4
    tail = (max(0.0, tip[0] - reach), max(0.0, tip[1] - reach))
    width = line_width(out, thickness)
    draw = ImageDraw.Draw(out)
    draw.line((tail, tip), fill=rgb(color), width=width)
    angle = math.atan2(tip[1] - tail[1], tip[0] - tail[0])
    head = 3 * width + 4
    wings = [(tip[0] - head * math.cos(angle + s), tip[1] - head * math.sin(angle + s))
             for s in (0.5, -0.5)]
    draw.polygon([tip, *wings], fill=rgb(color))
    return out


def color_block(image: Image.Image, box: Box, color: Color = "cpt-red", **_: object) -> Image.Image:
    """CPT's marker (its refcocodataset.py `draw_rectangles`): an RGBA block of the colour at
    alpha 127 pasted over the region through its own alpha. Its corners are theirs: the box
    [x, y, w, h] becomes x2 = x + w - 1, y2 = y + h - 1, each truncated by int(), so the block
    is (x2 - x1) x (y2 - y1), one pixel short of the box on the right and bottom."""
    out = image.convert("RGB")
    clip_box(out, box)  # the same refusals as every marker
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0, int(x)), max(0, int(y))
    x2, y2 = min(out.width, int(x + w - 1)), min(out.height, int(y + h - 1))
    if x2 <= x1 or y2 <= y1:
        raise DescgenError(f"box {list(box)}: too small for a colour block (CPT's block is the"
                           " box less one pixel)")
    block = Image.new("RGBA", (x2 - x1, y2 - y1), color=(*rgb(color), CPT_ALPHA))
    out.paste(block, (x1, y1), block)
    return out


def ellipse_mask(size: tuple[int, int], corners: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    x0, y0, x1, y1 = corners
    ImageDraw.Draw(mask).ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    return mask


def crop(image: Image.Image, box: Box, **_: object) -> Image.Image:
    return image.convert("RGB").crop(clip_box(image, box))


def blur_outside(image: Image.Image, box: Box, blur: float = 0.05, **_: object) -> Image.Image:
    """Gaussian blur (radius a fraction of the shorter side) everywhere outside the ellipse."""
    out = image.convert("RGB")
    blurred = out.filter(ImageFilter.GaussianBlur(max(0.5, blur * min(out.size))))
    return Image.composite(out, blurred, ellipse_mask(out.size, clip_box(out, box)))


def grayscale_outside(image: Image.Image, box: Box, **_: object) -> Image.Image:
    out = image.convert("RGB")
    gray = ImageOps.grayscale(out).convert("RGB")
    return Image.composite(out, gray, ellipse_mask(out.size, clip_box(out, box)))


MARKERS: dict[str, Callable[..., Image.Image]] = {
    "circle": circle, "arrow": arrow, "box": rectangle, "cross": cross,
    "color_block": color_block, "crop": crop, "blur_outside": blur_outside, "grayscale_outside": grayscale_outside,
}
SHAPES = ("circle", "arrow", "box", "cross")


def mark(image: Image.Image, box: Box, marker: str = "circle", color: Color = "red",
         thickness: float = 0.01, blur: float = 0.05) -> Image.Image:
    """Apply a marker by name; colour applies to shapes and the colour block (`cpt-red` and
    the other `CPT_COLOURS` are CPT's), thickness to shapes, blur to `blur_outside`."""
    if marker not in MARKERS:
        raise DescgenError(f"unknown marker {marker!r} (choose {', '.join(MARKERS)})")
    if marker == "color_block":
        return color_block(image, box, color=color)
    if marker in SHAPES:
        return MARKERS[marker](image, box, color=color, thickness=thickness)
    if marker == "blur_outside":
        return blur_outside(image, box, blur=blur)
    return MARKERS[marker](image, box)
