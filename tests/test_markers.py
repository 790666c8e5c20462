from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from descriptor_gen.errors import DescgenError
from descriptor_gen.visual.markers import (
    MARKERS,
    arrow,
    blur_outside,
    circle,
    clip_box,
    cross,
    crop,
    ellipse_mask,
    grayscale_outside,
    mark,
    rectangle,
)


def scene(w: int = 120, h: int = 90) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 200, (h, w, 3), dtype=np.uint8))


def changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    return (np.asarray(a, int) != np.asarray(b, int)).any(axis=2)


def test_circle_pixels_lie_on_the_fitted_ellipse() -> None:
    image = scene()
    box = [30, 20, 50, 40]
    marked = circle(image, box, color="red", thickness=0.03)
    ys, xs = np.nonzero(changed(image, marked))
    assert len(xs) > 50
    cx, cy, a, b = 30 + 25 - 0.5, 20 + 20 - 0.5, 25, 20
    r = np.sqrt(((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2)
    width = max(1, round(0.03 * 90))
    assert r.max() <= 1.0 + 1.5 / b
    assert r.min() >= 1.0 - (width + 1.5) / b
    assert (np.asarray(marked)[ys, xs] == [255, 0, 0]).all()


def test_thickness_is_relative_to_the_shorter_side() -> None:
    image = scene(200, 100)
    thin = changed(image, circle(image, [50, 20, 60, 60], thickness=0.01)).sum()
    thick = changed(image, circle(image, [50, 20, 60, 60], thickness=0.05)).sum()
    assert thick > 3 * thin


def test_blur_and_grayscale_change_only_outside_the_ellipse() -> None:
    image = scene()
    box = [30, 20, 50, 40]
    inside = np.asarray(ellipse_mask(image.size, clip_box(image, box))) > 0
    assert inside.sum() > 0.7 * 50 * 40 * np.pi / 4
    source = np.asarray(image, int)
    gray = np.asarray(grayscale_outside(image, box), int)
    assert (gray[inside] == source[inside]).all()
    outside = gray[~inside]
    assert (outside[:, 0] == outside[:, 1]).all() and (outside[:, 1] == outside[:, 2]).all()
    expected = np.asarray(image.convert("L"), int)[~inside]
    assert np.abs(outside[:, 0] - expected).max() <= 1
    blurred = np.asarray(blur_outside(image, box), int)
    assert (blurred[inside] == source[inside]).all()
    assert changed(image, blur_outside(image, box))[~inside].mean() > 0.9
    # blurred noise is smoother: neighbouring pixels differ far less outside
    assert np.abs(np.diff(blurred, axis=1))[~inside[:, 1:]].mean() < 0.5 * np.abs(np.diff(source, axis=1))[~inside[:, 1:]].mean()


def _band(shape: tuple[int, int], test) -> np.ndarray:  # noqa: ANN001
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return test(xs, ys)


@pytest.mark.parametrize("marker", ["box", "cross", "arrow"])
def test_shapes_draw_only_their_colour_where_they_belong(marker: str) -> None:
    image = scene()
    box = [30, 20, 50, 40]
    draw = {"box": rectangle, "cross": cross, "arrow": arrow}[marker]
    out = draw(image, box, color=(0, 255, 0), thickness=0.03)
    diff = changed(image, out)
    assert diff.sum() > 40
    assert (np.asarray(out)[diff] == [0, 255, 0]).all()
    w = max(1, round(0.03 * 90)) + 1
    x0, y0, x1, y1 = 30, 20, 79, 59
    if marker == "box":
        on_border = _band(diff.shape, lambda x, y: (
            ((np.abs(x - x0) <= w) | (np.abs(x - x1) <= w)) & (y >= y0 - w) & (y <= y1 + w)
            | ((np.abs(y - y0) <= w) | (np.abs(y - y1) <= w)) & (x >= x0 - w) & (x <= x1 + w)))
        assert not (diff & ~on_border).any()
    elif marker == "cross":
        slope = (y1 - y0) / (x1 - x0)
        near = _band(diff.shape, lambda x, y: (np.abs((y - y0) - slope * (x - x0)) <= w + 1)
                     | (np.abs((y - y1) + slope * (x - x0)) <= w + 1))
        assert not (diff & ~near).any()
    else:
        ys, xs = np.nonzero(diff)
        tip = ((x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2)
        assert xs.max() <= tip[0] + w and ys.max() <= tip[1] + w  # nothing beyond the tip
        assert diff[int(tip[1]), int(tip[0]) - 2]  # the head reaches the centre


def test_crop_equals_the_box_and_is_clipped_at_the_border() -> None:
    image = scene()
    assert np.array_equal(np.asarray(crop(image, [10, 5, 30, 20])), np.asarray(image)[5:25, 10:40])
    assert crop(image, [100, 80, 50, 50]).size == (20, 10)
    assert clip_box(image, [-5, -5, 20, 20]) == (0, 0, 15, 15)


@pytest.mark.parametrize("box", [[10, 10, 0, 20], [10, 10, 20, 0], [500, 500, 10, 10], [1, 2, 3]])
def test_degenerate_boxes_are_refused(box: list[float]) -> None:
    with pytest.raises(DescgenError, match="box"):
        mark(scene(), box, "circle")


@pytest.mark.parametrize("marker", sorted(MARKERS))
def test_every_marker_on_a_border_box(marker: str) -> None:
    image = scene()
    box = [-10, -5, 50, 35]  # reaches past the top-left corner: clipped to [0, 0, 40, 30]
    out = mark(image, box, marker, color=(0, 255, 0), thickness=0.02)
    assert out.mode == "RGB"
    if marker == "crop":
        assert np.array_equal(np.asarray(out), np.asarray(image)[0:30, 0:40])
        return
    assert out.size == image.size
    diff = changed(image, out)
    assert diff.any()
    if marker in ("circle", "box", "cross", "arrow"):
        assert (np.asarray(out)[diff] == [0, 255, 0]).all()
        assert not diff[:, 45:].any() and not diff[35:, :].any()  # nothing far from the box


def test_unknown_marker_and_colour() -> None:
    with pytest.raises(DescgenError, match="unknown marker 'star'"):
        mark(scene(), [1, 1, 10, 10], "star")
    with pytest.raises(DescgenError, match="unknown colour 'reddish'"):
        mark(scene(), [1, 1, 10, 10], "circle", color="reddish")


def reference_draw_rectangles(img: Image.Image, box_xywh: list[float], color: tuple) -> None:
    """CPT's refcocodataset.py: the det box to x2 = x + w - 1, y2 = y + h - 1 (as a float
    BoxList), then `draw_rectangles` verbatim but for the mask branch."""
    dets = np.asarray([box_xywh], dtype=np.float64)
    dets[:, 2] = dets[:, 0] + dets[:, 2] - 1
    dets[:, 3] = dets[:, 1] + dets[:, 3] - 1
    box = dets[0]
    x1, y1, x2, y2 = int(box[0]), int(box[1]), int(box[2]), int(box[3])
    foreground = Image.new('RGBA', (x2-x1, y2-y1), color=color)
    img.paste(foreground, (x1, y1), foreground)


@pytest.mark.parametrize("box", [[30, 20, 50, 40], [10.7, 5.2, 33.9, 21.5], [0, 0, 120, 90]])
@pytest.mark.parametrize("colour", ["cpt-red", "cpt-blue", "cpt-yellow"])
def test_the_colour_block_is_cpts_pixel_for_pixel(box: list[float], colour: str) -> None:
    from descriptor_gen.visual.markers import CPT_COLOURS, color_block

    image = scene()
    expected = image.copy()
    reference_draw_rectangles(expected, box, (*CPT_COLOURS[colour], 127))
    ours = mark(image, box, "color_block", colour)
    assert np.array_equal(np.asarray(ours), np.asarray(expected))
    assert np.array_equal(np.asarray(color_block(image, box)), np.asarray(
        mark(image, box, "color_block", "cpt-red")))  # CPT's red is the block's own default
    inside = changed(image, ours)
    assert inside[int(box[1]) + 1, int(box[0]) + 1] and not inside[int(box[1] + box[3]) - 1 :, :].any()


def test_the_colour_block_blends_rather_than_covers() -> None:
    image = Image.new("RGB", (40, 40), (0, 200, 0))
    out = np.asarray(mark(image, [5, 5, 20, 20], "color_block", "cpt-red"))[10, 10]
    assert 100 < out[0] < 140 and 80 < out[1] < 120  # about half red, half green


def test_a_box_too_small_for_the_block_is_one_line() -> None:
    with pytest.raises(DescgenError, match="too small for a colour block"):
        mark(scene(), [10, 10, 1, 1], "color_block", "cpt-red")
