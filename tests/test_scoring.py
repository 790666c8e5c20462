from __future__ import annotations

import math

import numpy as np
import pytest

from descriptor_gen.scoring import (
    class_texts,
    class_vectors,
    menon_sentence,
    metrics,
    rescaled_entropy,
    scores,
    topk,
)


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        ("a long tail", "tench, which is a long tail"),
        ("an olive body", "tench, which is an olive body"),
        ("aerodynamic shape", "tench, which is aerodynamic shape"),
        ("used for fishing", "tench, which is used for fishing"),
        ("has two fins", "tench, which has two fins"),
        ("often found in ponds", "tench, which often found in ponds"),
        ("typically green", "tench, which typically green"),
        ("two dorsal fins", "tench, which has two dorsal fins"),
    ],
)
def test_menon_sentence(descriptor: str, expected: str) -> None:
    assert menon_sentence("tench", descriptor) == expected


def test_metrics_by_hand() -> None:
    score = np.array([
        [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],   # label 0, top-1 hit
        [0.2, 0.3, 0.1, 0.0, 0.0, 0.0],   # label 0, 2nd: top-5 hit
        [0.1, 0.0, 0.1, 0.1, 0.1, 0.9],   # label 1, in last place: miss
        [0.1, 0.8, 0.0, 0.0, 0.0, 0.0],   # label 1, hit
        [0.0, 0.0, 0.5, 0.4, 0.0, 0.0],   # label 2, hit
    ])
    labels = np.array([0, 0, 1, 1, 2])
    m = metrics(score, labels)
    assert m.top1 == pytest.approx(3 / 5)
    assert m.top5 == pytest.approx(4 / 5)
    assert m.mean_per_class_recall == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert m.n_images == 5


def test_topk_ties_go_to_lower_index() -> None:
    assert topk(np.array([[0.5, 0.7, 0.7, 0.1]]), 3).tolist() == [[1, 2, 0]]


def test_entropy_formula() -> None:
    row = np.array([[0.30, 0.25, 0.20]])
    scaled = [-10 + 20 * (s - 0.20) / 0.10 for s in row[0]]
    z = sum(math.exp(v) for v in scaled)
    p = [math.exp(v) / z for v in scaled]
    expected = -sum(q * math.log(q) for q in p)
    assert rescaled_entropy(row)[0] == pytest.approx(expected, rel=1e-9)
    assert rescaled_entropy(np.array([[0.4, 0.4]]))[0] == pytest.approx(math.log(2))


def test_class_vectors_are_means_without_renormalising() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ct, fallback = class_texts("descriptors", ["a", "b"], {0: ["x", "y", "z"], 1: ["w", "v"]}, [])
    assert fallback == []
    vectors = class_vectors(feats, ct)
    np.testing.assert_allclose(vectors[0], feats[:3].mean(axis=0), rtol=1e-6)
    assert np.linalg.norm(vectors[0]) < 1
    image = rng.normal(size=(1, 8)).astype(np.float32)
    image /= np.linalg.norm(image)
    direct = [np.mean([feats[i] @ image[0] for i in rows]) for rows in ([0, 1, 2], [3, 4])]
    np.testing.assert_allclose(scores(image, vectors)[0], direct, rtol=1e-5)


def test_methods_and_fallback() -> None:
    templates = ["a photo of a {}.", "a drawing of a {}."]
    desc = {0: ["long tail"]}
    ct, fallback = class_texts("descriptors", ["lemur", "tv"], desc, templates)
    assert ct.texts == [["lemur, which has long tail"], ["tv"]] and fallback == [1]
    ct, _ = class_texts("classname", ["lemur", "tv"], desc, templates)
    assert ct.texts == [["lemur"], ["tv"]] and ct.renormalise == [False, False]
    ct, _ = class_texts("templates", ["lemur"], desc, templates)
    assert ct.texts == [["a photo of a lemur.", "a drawing of a lemur."]] and ct.renormalise == [True]
    ct, fallback = class_texts("descriptors+templates", ["lemur", "tv"], desc, templates)
    assert ct.texts[0] == ["lemur, which has long tail", "a photo of a lemur.", "a drawing of a lemur."]
    assert ct.texts[1] == ["a photo of a tv.", "a drawing of a tv."] and fallback == [1]
    ct, _ = class_texts("descriptors", ["lemur"], desc, templates, descriptor_template="{d} ({c})")
    assert ct.texts == [["long tail (lemur)"]]
