"""The methods beyond the mean (issue 13): each against the released code it reproduces where
that code could be run here, and against a direct computation of its formula on the tiny
random-weights CLIP."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import bisect
from scipy.special import softmax

from conftest import make_image_folder, write_classes_and_store
from descriptor_gen.data.datasets import load_image_folder
from descriptor_gen.describe.store import DescriptorRecord, write_store
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.autoclip import autoclip_scores
from descriptor_gen.score.evaluate import EvalConfig, evaluate
from descriptor_gen.score.features import encode_images, encode_texts, load_clip
from descriptor_gen.score.methods import ALPHABET, METHODS, class_texts, derangement
from descriptor_gen.score.scoring import ClassTexts, Group, TextForms, make_recipe
from descriptor_gen.paths import CachePaths

PROMPTS = CachePaths.resolve().prompts_dir
FORMS = TextForms.load(PROMPTS)
WAFFLE = make_recipe(FORMS, "waffle", "waffle", on_empty="blank")
CLASSES = ["tench", "goldfish", "great white shark", "eel"]
DESCRIPTORS = {
    0: ["olive-green body", "a thick tail", "small red eyes"],
    1: ["bright orange scales", "long flowing fins"],
    2: ["a grey back", "rows of sharp teeth", "a pointed snout", "a tall dorsal fin"],
    3: ["a long, snake-like body", "slimy skin"],
}


def which(descriptor: str) -> str:
    """Menon & Vondrick's connective, written out again as the oracle."""
    if descriptor.startswith(("a", "an", "used")):
        return f"which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"which {descriptor}"
    return f"which has {descriptor}"


# -- fidelity to the released code -------------------------------------------------------------

# WaffleCLIP's waffle_tools.load_gpt_descriptions (commit 7a1b8ee4) run on the published
# descriptor files with np.random.seed(rep): the first three texts of the first and last class.
WAFFLE_RELEASED = {
    ("dclip/descriptors_cub.json", "waffle", 0): {
        "Black-footed Albatross": ["A photo of a Black-footed Albatross, which has husk fenced.",
                                   "A photo of a Black-footed Albatross, which has lw6w(c, adiAmN.",
                                   "A photo of a Black-footed Albatross, which has pendant digging."],
        "Common Yellowthroat": ["A photo of a Common Yellowthroat, which has husk fenced.",
                                "A photo of a Common Yellowthroat, which has lw6w(c, adiAmN.",
                                "A photo of a Common Yellowthroat, which has pendant digging."]},
    ("dclip/descriptors_dtd.json", "waffle+descriptors", 1): {
        "banded": ["A photo of a banded, which has the bands are of different widths.",
                   "A photo of a banded, which has dug.", "A photo of a banded, which has dy-rkeyyi."],
        "zigzagged": ["A photo of a zigzagged, which has usually black and white.",
                      "A photo of a zigzagged, which often used to create a sense of movement or energy.",
                      "A photo of a zigzagged, which has valves."]},
    # seed 1's first permutation has no fixed point, so their swap and our derangement agree
    ("dclip/descriptors_imagenet.json", "swapped", 1): {
        "tench": ["A photo of a tench, which is a metal or plastic housing.",
                  "A photo of a tench, which is a keypad or dial with numbers or symbols.",
                  "A photo of a tench, which is a shackle to secure the lock to an object."],
        "toilet paper": ["A photo of a toilet paper, which is a turtle with a hard, hinged shell.",
                         "A photo of a toilet paper, which is a head and legs that can retract into the shell.",
                         "A photo of a toilet paper, which is a brown, black, or green shell."]},
}


@pytest.mark.parametrize("case", list(WAFFLE_RELEASED))
def test_waffle_texts_are_waffleclips_released_ones(shared_data: Path, case: tuple) -> None:
    file, name, seed = case
    published = json.loads((shared_data / file).read_text())
    classes = list(published)
    descriptors = dict(enumerate(published.values()))
    options = {"characters": "descriptors"} if name.startswith("waffle") else {}
    ct, _ = class_texts(name, classes, descriptors, [], WAFFLE, options, seed=seed)
    for class_name, expected in WAFFLE_RELEASED[case].items():
        assert ct.texts(classes.index(class_name))[:3] == expected


def test_waffle_shares_one_random_set_across_classes() -> None:
    ct, _ = class_texts("waffle", CLASSES, {}, [], WAFFLE, {"count": 4}, seed=3)
    labels = [ct.labels(i) for i in range(len(CLASSES))]
    assert all(lab == labels[0] for lab in labels) and len(labels[0]) == 8
    words, noise = labels[0][0::2], labels[0][1::2]
    assert all(set(n.replace(", ", "")) <= set(ALPHABET) for n in noise)
    for i, name in enumerate(CLASSES):
        assert ct.texts(i) == [f"A photo of a {name}, {which(d)}." for d in labels[0]]
    assert all(g.aligned for groups in ct.groups for g in groups)
    again, _ = class_texts("waffle", CLASSES, {}, [], WAFFLE, {"count": 4}, seed=3)
    other, _ = class_texts("waffle", CLASSES, {}, [], WAFFLE, {"count": 4}, seed=4)
    assert again.flat() == ct.flat() and other.flat() != ct.flat()
    assert all(len(w.split(" ")) == 2 for w in words)  # np.round(mean words a name: 1.5) = 2


@pytest.mark.parametrize("n", [2, 3, 5, 17, 100])
def test_swap_is_a_derangement_fixed_by_seed(n: int) -> None:
    for seed in range(30):
        order = derangement(n, seed)
        assert sorted(order.tolist()) == list(range(n))
        assert not (order == np.arange(n)).any()
        assert np.array_equal(order, derangement(n, seed))
    distinct = len({tuple(derangement(n, s)) for s in range(30)})
    assert distinct == {2: 1, 3: 2}.get(n, distinct) and (n < 4 or distinct > 5)


def test_swapped_texts_name_the_class_with_another_class_s_descriptors() -> None:
    recipe = make_recipe(FORMS, "dclip")
    ct, _ = class_texts("swapped", CLASSES, DESCRIPTORS, [], recipe, seed=5)
    order = derangement(len(CLASSES), 5)
    for i, name in enumerate(CLASSES):
        assert ct.labels(i) == DESCRIPTORS[int(order[i])]
        assert ct.texts(i) == [f"{name}, {which(d)}" for d in DESCRIPTORS[int(order[i])]]
    with pytest.raises(DescgenError, match="at least two classes"):
        derangement(1, 0)


def test_no_name_texts_leave_the_class_out() -> None:
    recipe = make_recipe(FORMS, "dclip")
    ct, _ = class_texts("no-name", CLASSES, DESCRIPTORS, [], recipe)
    for i in range(len(CLASSES)):
        assert ct.texts(i) == DESCRIPTORS[i]
    ct, _ = class_texts("no-name", CLASSES, DESCRIPTORS, [], recipe, {"template": "a photo, {which} {d}"})
    assert ct.texts(0)[1] == "a photo, which is a thick tail"
    with pytest.raises(DescgenError, match="must not name the class"):
        class_texts("no-name", CLASSES, DESCRIPTORS, [], recipe, {"template": "{c}: {d}"})


def test_concept_prefixes_every_class_name() -> None:
    recipe = make_recipe(FORMS, "waffle", "waffle", concept="fish")
    assert recipe.classname("great_white shark") == "A photo of a fish: a great white shark."
    assert recipe.descriptor("eel", "slimy skin") == "A photo of a fish: a eel, which has slimy skin."
    ct, _ = class_texts("templates", ["eel"], {}, ["itap of a {}."], recipe)
    assert ct.texts(0) == ["itap of a fish: a eel."]


# -- each method scored, against a direct computation ------------------------------------------


@pytest.fixture
def world(tmp_path: Path, tiny_clip: tuple[Path, Path]) -> dict:
    counts = {name: 3 for name in CLASSES}
    images = make_image_folder(tmp_path / "test", counts, seed=0)
    train = make_image_folder(tmp_path / "train", {name: 4 for name in CLASSES}, seed=1)
    classes, store = write_classes_and_store(tmp_path, CLASSES, DESCRIPTORS)
    config, checkpoint = tiny_clip
    clip = load_clip(str(config), str(checkpoint), "cpu")
    data = load_image_folder(images, CLASSES)
    feats = encode_images(clip, data.paths, batch_size=4, workers=0).features.astype(np.float32)
    return {"images": images, "train": train, "classes": classes, "store": store, "config": config,
            "checkpoint": checkpoint, "cache": tmp_path / "cache", "clip": clip,
            "features": feats, "labels": np.array(data.labels), "tmp": tmp_path}


def _eval(world: dict, method: str, descriptors: Path | None = None, **kw) -> object:
    cfg = EvalConfig(dataset=str(world["images"]), descriptors=descriptors, method=method,
                     model=str(world["config"]), pretrained=str(world["checkpoint"]),
                     device="cpu", workers=0, batch_size=4, **kw)
    return evaluate(cfg, CLASSES, world["cache"], PROMPTS, clip=world["clip"])


def _mean_cosines(world: dict, texts: list[list[str]], renormalise: bool = False) -> np.ndarray:
    """s(c, x) written out: for each class, each text's cosine with each image, averaged
    (or the renormalised mean of the text embeddings, CuPL's)."""
    out = np.zeros((len(world["features"]), len(texts)))
    for c, class_texts_ in enumerate(texts):
        encoded = encode_texts(world["clip"], class_texts_)
        if renormalise:
            mean = encoded.mean(axis=0)
            out[:, c] = world["features"] @ (mean / np.linalg.norm(mean))
        else:
            out[:, c] = np.mean([world["features"] @ t for t in encoded], axis=0)
    return out


def _top1(world: dict, score: np.ndarray) -> float:
    return float(np.mean(score.argmax(axis=1) == world["labels"]))


def test_waffle_scores_and_repeats_match_the_direct_mean(world: dict) -> None:
    result = _eval(world, "waffle", options={"count": 3, "repeats": 3, "seed": 2})
    per_seed = []
    for seed in (2, 3, 4):
        ct, _ = class_texts("waffle", CLASSES, {}, [], WAFFLE, {"count": 3}, seed=seed)
        assert ct.labels(0)[0].count(" ") == 1  # two random words: round(mean words a name) = 2
        per_seed.append(_top1(world, _mean_cosines(world, [ct.texts(i) for i in range(4)])))
    assert [r["top1"] for r in result.repeats] == pytest.approx(per_seed)
    assert [r["seed"] for r in result.repeats] == [2, 3, 4]
    assert result.metrics["top1"] == pytest.approx(np.mean(per_seed))
    assert result.metrics_std["top1"] == pytest.approx(np.std(per_seed))
    assert result.text.descriptor_text == "A photo of a {c}, {which} {d}."
    assert result.options == {"repeats": 3, "seed": 2, "count": 3, "words": "waffle",
                              "characters": "alphabet"}


def test_waffle_with_descriptors_matches_the_direct_mean(world: dict) -> None:
    result = _eval(world, "waffle+descriptors", world["store"], options={"count": 6, "repeats": 2})
    recipe = make_recipe(FORMS, "waffle", "waffle")
    tops = []
    for seed in (0, 1):
        ct, _ = class_texts("waffle+descriptors", CLASSES, DESCRIPTORS, [], recipe, {"count": 6},
                            seed=seed)
        for c in range(4):  # 4 random pairs and 4 pairs of own descriptors, 12 of them drawn
            assert len(ct.texts(c)) == 12
            own = [t for t in ct.texts(c) if any(t == f"A photo of a {CLASSES[c]}, {which(d)}."
                                                 for d in DESCRIPTORS[c])]
            assert 0 < len(own) <= 8
        tops.append(_top1(world, _mean_cosines(world, [ct.texts(i) for i in range(4)])))
    assert result.metrics["top1"] == pytest.approx(np.mean(tops))


def test_swapped_and_no_name_match_the_direct_mean(world: dict) -> None:
    """Swapped with default forms is WaffleCLIP's row (base_main.py's label_before_text
    'A photo of a ' and label_after_text '.', mode swapped_descriptions), as the README puts it
    beside 59.63."""
    result = _eval(world, "swapped", world["store"], options={"repeats": 2, "seed": 7})
    tops = []
    for seed in (7, 8):
        order = derangement(4, seed)
        texts = [[f"A photo of a {CLASSES[c]}, {which(d)}." for d in DESCRIPTORS[int(order[c])]]
                 for c in range(4)]
        tops.append(_top1(world, _mean_cosines(world, texts)))
    assert result.metrics["top1"] == pytest.approx(np.mean(tops))
    assert result.text.descriptor_text == "A photo of a {c}, {which} {d}."
    assert result.text.classname_text == "A photo of a {c}."
    result = _eval(world, "no-name", world["store"])
    direct = _mean_cosines(world, [DESCRIPTORS[c] for c in range(4)])
    assert result.metrics["top1"] == pytest.approx(_top1(world, direct))
    assert result.metrics_std is None and result.repeats == []


def _styled_store(path: Path, style: dict, params: dict | None = None) -> Path:
    write_store(path, [DescriptorRecord(class_index=i, class_name=CLASSES[i], descriptors=d,
                                        backend="openai", style=style, params=params or {})
                       for i, d in DESCRIPTORS.items()])
    return path


def test_cupl_and_comparative_score_their_own_stores_as_their_papers(world: dict) -> None:
    cupl = _styled_store(world["tmp"] / "cupl.jsonl", {"name": "cupl", "questions": "imagenet"})
    result = _eval(world, "cupl", cupl)
    direct = _mean_cosines(world, [DESCRIPTORS[c] for c in range(4)], renormalise=True)
    assert result.metrics["top1"] == pytest.approx(_top1(world, direct))
    assert (result.text.pooling, result.text.descriptor_text) == ("renormalised", "{d}")
    comparative = _styled_store(world["tmp"] / "cmp.jsonl", {"name": "comparative", "n": 2})
    result = _eval(world, "comparative", comparative)
    texts = [[f"A photo of a {CLASSES[c]}, {which(d)}." for d in DESCRIPTORS[c]] for c in range(4)]
    assert result.metrics["top1"] == pytest.approx(_top1(world, _mean_cosines(world, texts)))
    with pytest.raises(DescgenError, match="holds cupl descriptors"):
        _eval(world, "comparative", cupl)
    published = _styled_store(world["tmp"] / "pub.jsonl", None, {"format": "cupl"})
    assert _eval(world, "cupl", published).metrics == _eval(world, "cupl", cupl).metrics


def test_filtered_keeps_what_the_shots_support(world: dict) -> None:
    options = {"source": str(world["train"]), "shots": 2, "keep": 2, "cap": 0.3, "repeats": 2,
               "seed": 1, "inputs": "principled"}
    result = _eval(world, "filtered", world["store"], options=options)
    train = load_image_folder(world["train"], CLASSES)
    feats = encode_images(world["clip"], train.paths, batch_size=4, workers=0).features
    labels = np.array(train.labels)
    tops = []
    for seed in (1, 2):
        picker = random.Random(seed)
        texts = []
        for c, name in enumerate(CLASSES):
            rows = np.flatnonzero(labels == c)
            mean = feats[rows[picker.sample(range(len(rows)), 2)]].mean(axis=0)
            mean /= np.linalg.norm(mean)
            base = float(encode_texts(world["clip"], [f"A photo of a {name}."])[0] @ mean)
            scored = [(float(encode_texts(world["clip"], [f"A photo of a {name}, {which(d)}."])[0] @ mean), d)
                      for d in DESCRIPTORS[c]]
            kept = [d for s, d in sorted(scored, key=lambda x: -x[0]) if s > min(base, 0.3)][:2]
            texts.append([f"A photo of a {name}, {which(d)}." for d in kept] or [f"A photo of a {name}."])
        tops.append(_top1(world, _mean_cosines(world, texts)))
    assert result.metrics["top1"] == pytest.approx(np.mean(tops))


def test_concept_evaluation_uses_the_prefixed_names(world: dict) -> None:
    result = _eval(world, "classname", concept="fish")
    direct = _mean_cosines(world, [[f"A photo of a fish: a {c}."] for c in CLASSES])
    assert result.metrics["top1"] == pytest.approx(_top1(world, direct))
    assert result.concept == "fish"


# -- AutoCLIP ------------------------------------------------------------------------------------


def _reference_autoclip(sims: np.ndarray, beta: float) -> np.ndarray:
    """AutoCLIP for one image, as their reference computes it: the gradient by autograd of the
    log-sum-exp of the weighted logits, the step size by scipy's bisection on the entropy."""
    logits_w = torch.zeros(sims.shape[1], requires_grad=True)
    weights = logits_w.softmax(dim=0)
    lse = torch.logsumexp((weights[None, :] * torch.from_numpy(sims)).sum(-1), dim=0)
    grad = torch.autograd.grad(lse, logits_w)[0].numpy().astype(np.float64)
    target = beta * -(weights.detach().numpy() * np.log2(weights.detach().numpy())).sum()

    def f(step: float) -> float:
        w = softmax(step * grad)
        return -(w * np.log2(w + 1e-10)).sum() - target

    step = bisect(f, 0.0, 1e7, maxiter=100, xtol=1e-2, rtol=1e-2)
    return (softmax(step * grad)[None, :] * sims).sum(-1)


def test_autoclip_on_aligned_texts_is_the_reference_algorithm() -> None:
    rng = np.random.default_rng(0)
    n, c, k, d = 6, 5, 7, 16
    images = rng.normal(size=(n, d))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts = rng.normal(size=(c * k, d))
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    ct = ClassTexts(groups=[[Group([f"t{i}{j}" for j in range(k)], [], False, aligned=True)]
                            for i in range(c)])
    ours = autoclip_scores(images, texts, ct, beta=0.85)
    sims = (images @ texts.T).reshape(n, c, k)
    expected = np.stack([_reference_autoclip(s, 0.85) for s in sims])
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert not np.allclose(ours, sims.mean(-1), atol=1e-5)  # the weights did move


def test_autoclip_on_class_specific_texts_reaches_the_target_entropy() -> None:
    rng = np.random.default_rng(1)
    counts = [3, 1, 4, 2]
    images = rng.normal(size=(5, 8))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts = rng.normal(size=(sum(counts), 8))
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    ct = ClassTexts(groups=[[Group([f"t{j}" for j in range(k)], [], False)] for k in counts])
    ours = autoclip_scores(images, texts, ct, beta=0.6)
    starts = np.cumsum([0] + counts)
    for row, image in enumerate(images):
        sims = [texts[starts[i]:starts[i + 1]] @ image for i in range(len(counts))]
        means = np.array([s.mean() for s in sims])
        p = softmax(means)
        grads = [p[i] * (s - means[i]) / len(s) for i, s in enumerate(sims)]

        def excess(step: float) -> float:
            normalised = [-(w * np.log2(w + 1e-10)).sum() / np.log2(len(w))
                          for w in (softmax(step * g) for g in grads) if len(w) > 1]
            return float(np.mean(normalised)) - 0.6

        step = bisect(excess, 0.0, 1e7, maxiter=100, xtol=1e-2, rtol=1e-2)
        expected = [(softmax(step * g) * s).sum() for g, s in zip(grads, sims)]
        np.testing.assert_allclose(ours[row], expected, atol=1e-5)


def test_autoclip_end_to_end_over_templates_and_waffle(world: dict) -> None:
    result = _eval(world, "autoclip", options={"base": "classname"})
    plain = _eval(world, "classname")
    assert result.metrics == plain.metrics  # one text a class: nothing to weight
    result = _eval(world, "autoclip", options={"base": "waffle", "count": 2, "repeats": 2})
    assert len(result.repeats) == 2 and result.options["base"] == "waffle"
    assert result.options["base_options"]["count"] == 2
    result = _eval(world, "autoclip", world["store"], options={"base": "descriptors", "beta": 0.5})
    assert 0.0 <= result.metrics["top1"] <= 1.0


def test_every_method_has_a_summary_and_parses_its_defaults() -> None:
    for name, mdef in METHODS.items():
        assert mdef.summary
        if name != "filtered":
            mdef.parse({})
    with pytest.raises(DescgenError, match="source"):
        METHODS["filtered"].parse({})


def test_cli_eval_with_method_options(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from descriptor_gen.cli import main

    out = world["tmp"] / "r.json"
    args = ["eval", "--dataset", str(world["images"]), "--classes", str(world["classes"]),
            "--model", str(world["config"]), "--pretrained", str(world["checkpoint"]),
            "--device", "cpu", "--workers", "0", "--cache-dir", str(world["cache"]),
            "--method", "waffle", "--option", "repeats=2", "--option", "count=3",
            "--concept", "fish", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("waffle: top-1 ") and "(mean ± std over 2 seeds)" in printed
    result = json.loads(out.read_text())
    assert result["options"]["count"] == 3 and len(result["repeats"]) == 2
    assert result["text"]["concept"] == "fish" and result["metrics_std"]["acc1"] is not None
    assert all("acc1" in r and "top1" not in r for r in result["repeats"])
