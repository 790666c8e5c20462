from __future__ import annotations

import math

import numpy as np
import pytest

from descriptor_gen.errors import DescgenError
from descriptor_gen.score.scoring import (
    TextForms,
    check_template,
    class_vectors,
    make_recipe,
    metrics,
    ranked,
    rescaled_entropy,
    scores,
)
from descriptor_gen.score.methods import class_texts
from descriptor_gen.paths import CachePaths

FORMS = TextForms.load(CachePaths.resolve().prompts_dir)
DCLIP = make_recipe(FORMS, "dclip", "bare")


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
    assert DCLIP.descriptor("tench", descriptor) == expected


@pytest.mark.parametrize(
    ("form", "class_name", "descriptor", "expected"),
    [
        ("dclip", "tench", "two fins", "tench, which has two fins"),
        ("dclip-imagenet", "tench", "two fins", "tench, which has two fins."),
        ("dclip-imagenet", "dishrag", "used for cleaning dishes, countertops, etc.",
         "dishrag, which is used for cleaning dishes, countertops, etc.."),
        ("dclip-imagenet", "tench", "", "tench, which has ."),  # DCLIP's [''] for an empty list
        ("waffle", "tench", "a long tail", "A photo of a tench, which is a long tail."),
        ("sentence", "tench", "A tench is a green fish.", "A tench is a green fish."),
        ("dclip", "airplane_cabin", "rows of seats", "airplane cabin, which has rows of seats"),
        ("a photo of a {c}, {which} {d}!", "tench", "may be green", "a photo of a tench, which may be green!"),
        ("{d} ({c})", "tench", "long {tail}", "long {tail} (tench)"),
    ],
)
def test_descriptor_forms(form: str, class_name: str, descriptor: str, expected: str) -> None:
    assert make_recipe(FORMS, form).descriptor(class_name, descriptor) == expected


@pytest.mark.parametrize(
    ("form", "expected"),
    [("clip", "a photo of a great white shark."), ("bare", "great white shark"),
     ("dclip-imagenet", "great white shark."), ("waffle", "A photo of a great white shark."),
     ("itap of a {c}", "itap of a great white shark")],
)
def test_classname_forms(form: str, expected: str) -> None:
    assert make_recipe(FORMS, classname_template=form).classname("great_white shark") == expected


@pytest.mark.parametrize(
    ("kind", "template", "message"),
    [
        ("descriptor", "{c} has {x}", "field {x} is not allowed"),
        ("descriptor", "{c} has {0}", "field {0} is not allowed"),
        ("descriptor", "{c} has {}", "field {} is not allowed"),
        ("descriptor", "{d!r}", "field {d!r} is not allowed"),
        ("descriptor", "{d:>10}", "field {d:>10} is not allowed"),
        ("descriptor", "{c}, which {d", "expected '}'"),
        ("descriptor", "{c} only", "needs a {d} field"),
        ("descriptor", "dclipp", "no text form named 'dclipp'"),
        ("classname", "a photo of {d}", "field {d} is not allowed"),
        ("classname", "a photo}", "Single '}'"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(kind: str, template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")
                       .replace("(", r"\(").replace("!", "!").replace(">", ">")):
        check_template(template, kind)
    with pytest.raises(DescgenError, match=f"--{kind}-template"):
        FORMS.resolve(kind, template)  # type: ignore[arg-type]


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


def test_ranked_ties_go_to_lower_index() -> None:
    assert ranked(np.array([[0.5, 0.7, 0.7, 0.1]]))[0].tolist() == [[1, 2, 0, 3]]


def test_entropy_formula() -> None:
    row = np.array([[0.30, 0.25, 0.20]])
    scaled = [-10 + 20 * (s - 0.20) / 0.10 for s in row[0]]
    z = sum(math.exp(v) for v in scaled)
    p = [math.exp(v) / z for v in scaled]
    expected = -sum(q * math.log(q) for q in p)
    assert rescaled_entropy(row)[0] == pytest.approx(expected, rel=1e-9)
    assert rescaled_entropy(np.array([[0.4, 0.4]]))[0] == pytest.approx(math.log(2))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the rows with an infinity
def test_metrics_in_threaded_blocks_equal_the_straightforward_computation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`summarise` works a block of rows at a time, the rows shared among threads: its top-5,
    entropy and per-class recall are those of the full sort and the whole-matrix formula, to
    the bit, whatever the split; rows with a NaN or an infinity sort as the full sort does."""
    from descriptor_gen.score import blocks, scoring

    rng = np.random.default_rng(3)
    score = rng.standard_normal((3000, 40)).astype(np.float32)
    score[7, 3] = score[7, 9] = score[7].max() + 1  # a tie: the lower index first
    score[100, 5], score[2000, 2] = np.nan, np.inf
    labels = rng.integers(0, 40, 3000)
    want = np.argsort(-score, axis=1, kind="stable")[:, :5]
    hit1, hit5 = want[:, 0] == labels, (want == labels[:, None]).any(axis=1)
    y = (score - score.min(1, keepdims=True)) * (20 / np.ptp(score, 1, keepdims=True)) - 20
    entropy = np.log(np.exp(y).sum(1)) - (np.exp(y) * y).sum(1) / np.exp(y).sum(1)
    for cells in (10**9, 4000, 1):  # one thread, a few, as many as allowed
        monkeypatch.setattr(blocks, "PARALLEL_CELLS", cells)
        best, ent = scoring.ranked(score)
        assert np.array_equal(best, want)
        finite = np.isfinite(score).all(axis=1)
        np.testing.assert_allclose(ent[finite], entropy[finite], rtol=1e-4)
        assert np.array_equal(ent, rescaled_entropy(score), equal_nan=True)
        found, best5 = scoring.summarise(score, labels)
        assert found.top1 == float(hit1.mean()) and found.top5 == float(hit5.mean())
        assert np.array_equal(best5, want)
        recall = [float(hit1[labels == c].mean()) if (labels == c).any() else None
                  for c in range(40)]
        assert scoring.per_class_recall(labels, 40, best5[:, 0]) == recall
    spans = scoring._row_spans(50_000, 1_000)
    assert spans[0][0] == 0 and spans[-1][1] == 50_000
    assert all(a[1] == b[0] and a[1] % scoring.BLOCK_ROWS == 0 for a, b in zip(spans, spans[1:]))
    assert scoring._row_spans(0, 5) == [(0, 0)] and scoring.ranked(score[:0])[0].shape == (0, 5)


def test_class_vectors_are_means_without_renormalising() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ct, fallback = class_texts("descriptors", ["a", "b"], {0: ["x", "y", "z"], 1: ["w", "v"]}, [],
                               DCLIP)
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
    recipe = make_recipe(FORMS, "dclip", "clip")
    ct, fallback = class_texts("descriptors", ["lemur", "tv"], desc, templates, recipe)
    assert [ct.texts(i) for i in (0, 1)] == [["lemur, which has long tail"], ["a photo of a tv."]]
    assert fallback == [1]
    ct, _ = class_texts("classname", ["lemur", "tv"], desc, templates, recipe)
    assert [ct.texts(i) for i in (0, 1)] == [["a photo of a lemur."], ["a photo of a tv."]]
    ct, _ = class_texts("templates", ["lemur"], desc, templates, recipe)
    assert ct.texts(0) == ["a photo of a lemur.", "a drawing of a lemur."]
    assert [g.renormalise for g in ct.groups[0]] == [True]
    ct, fallback = class_texts("descriptors+templates", ["lemur", "tv"], desc, templates, recipe)
    assert ct.texts(0) == ["lemur, which has long tail", "a photo of a lemur.", "a drawing of a lemur."]
    assert [g.weight for g in ct.groups[0]] == [0.5, 0.5] and fallback == [1]
    ct, _ = class_texts("descriptors", ["lemur"], desc, templates, make_recipe(FORMS, "{d} ({c})"))
    assert ct.texts(0) == ["long tail (lemur)"]


def test_on_empty_policies() -> None:
    desc = {0: ["long tail"]}
    blank = make_recipe(FORMS, "dclip-imagenet", on_empty="blank")
    ct, fallback = class_texts("descriptors", ["lemur", "tv"], desc, [], blank)
    assert ct.texts(1) == ["tv, which has ."] and fallback == [1]
    with pytest.raises(DescgenError, match="1 tv"):
        class_texts("descriptors", ["lemur", "tv"], desc, [], make_recipe(FORMS, on_empty="error"))
    ct, fallback = class_texts("classname", ["lemur", "tv"], desc, [], make_recipe(FORMS, on_empty="error"))
    assert fallback == []


def _unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.normal(size=(n, 8)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_descriptors_and_templates_weigh_half_each_whatever_their_sizes() -> None:
    rng = np.random.default_rng(1)
    templates = [f"t{i} {{}}" for i in range(80)]
    recipe = make_recipe(FORMS, "dclip")
    ct, _ = class_texts("descriptors+templates", ["lemur"], {0: ["a", "b", "c"]}, templates, recipe)
    feats = _unit_rows(rng, 83)
    image = _unit_rows(rng, 1)
    s_desc = np.mean(feats[:3] @ image[0])
    template_mean = feats[3:].mean(axis=0)
    s_templates = template_mean @ image[0] / np.linalg.norm(template_mean)
    got = scores(image, class_vectors(feats, ct))[0, 0]
    assert got == pytest.approx(0.5 * s_desc + 0.5 * s_templates, rel=1e-5)
    pooled = feats.mean(axis=0) @ image[0]  # the old pooling, 80 templates outweighing 3 texts
    assert got != pytest.approx(pooled, rel=1e-3)


def test_renormalised_pooling_is_cupls() -> None:
    rng = np.random.default_rng(2)
    ct, _ = class_texts("descriptors", ["lemur"], {0: ["s1", "s2", "s2"]}, [],
                        make_recipe(FORMS, "sentence", pooling="renormalised"))
    feats = _unit_rows(rng, 3)
    vector = class_vectors(feats, ct)[0]
    expected = feats.mean(axis=0) / np.linalg.norm(feats.mean(axis=0))
    np.testing.assert_allclose(vector, expected, rtol=1e-6)
    assert ct.texts(0) == ["s1", "s2", "s2"]  # a repeated sentence counts twice, as in CuPL


@pytest.mark.parametrize(("n_classes", "defined"), [(2, False), (4, False), (5, True), (7, True)])
def test_top5_is_undefined_below_five_classes(n_classes: int, defined: bool) -> None:
    score = np.eye(n_classes)[:2]
    m = metrics(score, np.array([0, 1]))
    assert (m.top5 is not None) == defined and m.top1 == 1.0
    if defined:
        assert m.top5 == 1.0


def test_per_class_recall_is_each_classes_top1_recall() -> None:
    from descriptor_gen.score.scoring import per_class_recall

    best = np.array([0, 1, 1])  # each row's best class
    assert per_class_recall(np.array([0, 0, 1]), 3, best) == [0.5, 1.0, None]
    assert per_class_recall(np.array([], dtype=int), 2, best[:0]) == [None, None]


def _integer_features(rng: np.random.Generator, rows: int, width: int) -> np.ndarray:
    """Small whole numbers: every product sums exactly in fp32, so scores made in blocks
    equal the one-matrix product to the bit whatever BLAS's order."""
    return rng.integers(-3, 4, (rows, width)).astype(np.float32)


def test_scores_made_a_block_at_a_time_give_the_one_matrix_metrics(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics of `PooledScores` (blocks of images, unreadable rows skipped in the
    memory-mapped order) are those of the whole score matrix: top-5, entropy, recall."""
    from descriptor_gen.score import blocks as blocks_module
    from descriptor_gen.score import scoring
    from descriptor_gen.score.blocks import ImageRows, PooledScores, blocks

    rng = np.random.default_rng(5)
    feats = _integer_features(rng, 2000, 12).astype(np.float16)
    vectors = _integer_features(rng, 37, 12)
    ok = rng.random(2000) > 0.1
    labels = rng.integers(0, 37, int(ok.sum()))
    whole = feats[ok].astype(np.float32) @ vectors.T
    want, want_best = scoring.summarise(whole, labels)
    monkeypatch.setattr(blocks_module, "PARALLEL_CELLS", 1)  # blocks of SCORE_CELLS on any machine
    for cells in (10**9, 37 * 256, 1):  # one block, a few, as small as allowed (256 rows)
        monkeypatch.setattr(blocks_module, "SCORE_CELLS", cells)
        pooled = PooledScores(ImageRows.of(feats, ok), vectors)
        got, best = scoring.summarise(pooled, labels)
        assert got == want and np.array_equal(best, want_best)
        assert np.array_equal(np.concatenate([b.copy() for _, b in blocks(pooled)]), whole)
    assert ImageRows.of(feats, np.ones(2000, bool)).keep is None  # all kept: slices, no index


def test_scoring_holds_a_block_of_scores_not_the_whole_matrix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """16,384 images x 2,000 classes would be 131 MB of fp32 scores (and a fp32 copy of the
    features); the metrics of `PooledScores` peak at a small part of that."""
    import tracemalloc

    from descriptor_gen.score import blocks as blocks_module
    from descriptor_gen.score import scoring
    from descriptor_gen.score.blocks import ImageRows, PooledScores

    monkeypatch.setattr(blocks_module, "SCORE_CELLS", 1024 * 2000)  # blocks of 8 MB
    monkeypatch.setattr(blocks_module, "PARALLEL_CELLS", 1)  # on any number of cores
    rng = np.random.default_rng(6)
    feats = rng.standard_normal((16_384, 16)).astype(np.float16)
    vectors = rng.standard_normal((2000, 16)).astype(np.float32)
    labels = rng.integers(0, 2000, 16_384)
    tracemalloc.start()
    try:
        found, _ = scoring.summarise(PooledScores(ImageRows.of(feats), vectors), labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.n_images == 16_384
    whole = 16_384 * 2000 * 4
    assert peak < whole / 4, f"peak {peak / 1e6:.1f} MB against {whole / 1e6:.0f} MB of scores"
