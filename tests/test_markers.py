from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from descriptor_gen.errors import DescgenError
from descriptor_gen.markers import MARKERS, blur_outside, circle, clip_box, crop, grayscale_outside, mark


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


def test_blur_and_grayscale_leave_the_inside_unchanged() -> None:
    image = scene()
    box = [30, 20, 50, 40]
    for out in (blur_outside(image, box), grayscale_outside(image, box)):
        diff = changed(image, out)
        assert not diff[40, 55]  # the centre
        assert diff[2, 2] and diff[85, 115]  # far outside
    gray = np.asarray(grayscale_outside(image, box), int)
    assert (gray[0, 0] == gray[0, 0, 0]).all()


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
    out = mark(image, [0, 0, 40, 30], marker, color=(0, 255, 0), thickness=0.02)
    assert out.mode == "RGB"
    assert out.size == ((40, 30) if marker == "crop" else image.size)


def test_unknown_marker_and_colour() -> None:
    with pytest.raises(DescgenError, match="unknown marker 'star'"):
        mark(scene(), [1, 1, 10, 10], "star")
    with pytest.raises(DescgenError, match="unknown colour 'reddish'"):
        mark(scene(), [1, 1, 10, 10], "circle", color="reddish")
