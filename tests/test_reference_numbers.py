"""Issue 19: the numbers of the few-shot and learned methods as the references compute them.
Each test names the released code or file it compares with; the references' outputs quoted
here were produced by running that code (dassl's scheduler on torch 2.x) or read from its files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from descriptor_gen.learn.train import coop_lr

# dassl.optim.lr_scheduler.build_lr_scheduler (KaiyangZhou/Dassl.pytorch) with CoCoOp's config
# (LR 0.002, MAX_EPOCH 10, cosine, WARMUP_EPOCH 1 constant 1e-5, WARMUP_RECOUNT True as the
# defaults have it), stepped once per epoch as dassl's trainer does: the rate of each epoch.
DASSL_COCOOP_LRS = [1e-05, 0.002, 0.00195106, 0.00180902, 0.00158779, 0.00130902, 0.001,
                    0.000690983, 0.000412215, 0.000190983]


def _dassl_schedule(lr: float, epochs: int) -> list[float]:
    """ConstantWarmupScheduler's behaviour with torch's own CosineAnnealingLR as its successor:
    epoch 0 at the warm-up rate, the successor first read (at its step 0) after the warm-up
    epoch and stepped after every later epoch."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.SGD([param], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, float(epochs))
    rates = [1e-5]
    for epoch in range(1, epochs):
        rates.append(cosine.get_last_lr()[0])
        optimiser.step()
        cosine.step()
    return rates


def test_coop_learning_rate_is_dasslls_for_cocoop() -> None:
    ours = [coop_lr(0.002, 10, e) for e in range(10)]
    assert ours == pytest.approx(DASSL_COCOOP_LRS, rel=1e-5)
    assert ours[-1] == pytest.approx(1.9098e-4, rel=1e-4)  # not 4.9e-5, one epoch ahead


@pytest.mark.parametrize("epochs", [10, 50, 100, 200])
def test_coop_learning_rate_is_dassls_for_every_length(epochs: int) -> None:
    ours = [coop_lr(0.002, epochs, e) for e in range(epochs)]
    assert ours == pytest.approx(_dassl_schedule(0.002, epochs), rel=1e-9, abs=1e-15)
    assert ours[1] == 0.002 and ours[0] == 1e-5
    assert ours[2] == pytest.approx(0.001 * (1 + math.cos(math.pi / epochs)))


# -- Comparative-CLIP's few-shot filter ----------------------------------------------------------

from conftest import make_image_folder  # noqa: E402
from descriptor_gen.data.datasets import load_image_folder  # noqa: E402
from descriptor_gen.describe.published import import_published  # noqa: E402
from descriptor_gen.describe.store import write_store  # noqa: E402
from descriptor_gen.score.evaluate import EvalConfig, evaluate  # noqa: E402
from descriptor_gen.score.features import encode_texts, load_clip  # noqa: E402
from descriptor_gen.score.methods import Inputs, build_filtered, FilterOptions  # noqa: E402
from descriptor_gen.score.scoring import TextForms, make_recipe  # noqa: E402
from descriptor_gen.paths import CachePaths  # noqa: E402

PROMPTS = CachePaths.resolve().prompts_dir
# Places365 keys as Comparative-CLIP's descriptors/comparative_descriptors/descriptors_places365.json
# spells them (underscores kept), and the card's class names (spaced).
KEYS = ["airplane_cabin", "amusement_park", "apartment_building-outdoor"]
NAMES = ["airplane cabin", "amusement park", "apartment building-outdoor"]
OWN = {"airplane_cabin": ["rows of seats", "a narrow aisle", "has small oval windows", "overhead bins"],
       "amusement_park": ["a roller coaster", "crowds of people", "a ferris wheel", "bright lights"],
       "apartment_building-outdoor": ["many windows", "balconies", "a tall facade", "used for housing"]}


def make_descriptor_sentence(descriptor: str) -> str:
    """Comparative-CLIP src/tools.py make_descriptor_sentence, written out as the oracle."""
    if descriptor.startswith("a") or descriptor.startswith("an"):
        return f"which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"which {descriptor}"
    if descriptor.startswith("used"):
        return f"which is {descriptor}"
    return f"which has {descriptor}"


@pytest.fixture
def places(tmp_path: Path, tiny_clip: tuple[Path, Path]) -> dict:
    config, checkpoint = tiny_clip
    test = make_image_folder(tmp_path / "test", {n: 3 for n in NAMES}, seed=0)
    train = make_image_folder(tmp_path / "train", {n: 5 for n in NAMES}, seed=1)
    published = tmp_path / "descriptors_places365.json"
    published.write_text(json.dumps(OWN))
    records, _ = import_published(published, "dclip", NAMES)
    store = tmp_path / "places.jsonl"
    write_store(store, records)
    clip = load_clip(str(config), str(checkpoint), "cpu")
    return {"test": test, "train": train, "store": store, "config": config,
            "checkpoint": checkpoint, "clip": clip, "cache": tmp_path / "cache"}


def _released_kept(places: dict, shots: int, keep: int, seed: int) -> dict[str, list[str]]:
    """filter_descriptors.py's steps on extract_image_features.py's features: Resize((S, S)),
    Grayscale(3), ToTensor, Normalize; the mean of the shots' features as encoded; threshold
    min(cos("A photo of a {key}."), 0.3); descriptors above it, the `keep` most similar."""
    import random

    from PIL import Image
    from torchvision import transforms

    clip = places["clip"]
    normalise = [t for t in clip.preprocess.transforms if isinstance(t, transforms.Normalize)][0]
    size = clip.model.visual.image_size[0]  # theirs: 224, the CLIP's own input size
    squash = transforms.Compose([transforms.Resize((size, size)), transforms.Grayscale(3),
                                 transforms.ToTensor(), normalise])
    data = load_image_folder(places["train"], NAMES)
    with torch.no_grad():
        images = torch.stack([squash(Image.open(p).convert("RGB")) for p in data.paths])
        raw = clip.model.encode_image(images).float().numpy()
    picker = random.Random(seed)
    labels = np.array(data.labels)
    kept = {}
    for index, key in enumerate(KEYS):
        rows = np.flatnonzero(labels == index)
        mean = raw[rows[picker.sample(range(len(rows)), shots)]].mean(axis=0)
        mean /= np.linalg.norm(mean)
        threshold = min(float(encode_texts(clip, [f"A photo of a {key}."])[0] @ mean), 0.3)
        scored = [(float(encode_texts(clip, [f"A photo of a {key}, {make_descriptor_sentence(d)}."])[0] @ mean), d)
                  for d in OWN[key]]
        kept[key] = [d for s, d in sorted(scored, key=lambda x: -x[0]) if s > threshold][:keep]
    return kept


def _filter_inputs(places: dict, seen: list[list[str]], concept: str | None) -> Inputs:
    from descriptor_gen.describe.store import read_store
    from descriptor_gen.score.evaluate import image_features
    from descriptor_gen.score.features import VIEWS
    from descriptor_gen.score.methods import store_keys

    records = read_store(places["store"])
    clip = places["clip"]

    def encode(texts: list[str]) -> np.ndarray:
        seen.append(texts)
        return encode_texts(clip, texts)

    def labelled(source: str, view: str = "clip") -> tuple[np.ndarray, np.ndarray]:
        data = load_image_folder(Path(source), NAMES)
        feats, _ = image_features(clip, data, places["cache"], 4, 0, view=VIEWS[view])
        return np.asarray(feats.features, np.float32), np.array(data.labels)

    recipe = make_recipe(TextForms.load(PROMPTS), "waffle", "waffle", concept=concept)
    return Inputs(NAMES, {r.class_index: r.descriptors for r in records}, [], recipe, PROMPTS,
                  encode, labelled, store_keys(records))


def test_released_filter_keeps_what_comparative_clips_filter_keeps(places: dict) -> None:
    seen: list[list[str]] = []
    inputs = _filter_inputs(places, seen, concept="place")
    options = FilterOptions(source=str(places["train"]), shots=3, keep=2)
    assert options.inputs == "released"
    texts, _ = build_filtered(inputs, options, 1)
    expected = _released_kept(places, 3, 2, 1)
    for index, key in enumerate(KEYS):
        kept = expected[key]
        assert texts.texts(index) == ([f"A photo of a place: a {NAMES[index]}, {make_descriptor_sentence(d)}."
                                       for d in kept] or [f"A photo of a place: a {NAMES[index]}."])
    # the filter's own texts: the raw key, no concept (the concept enters only at scoring)
    assert seen[0][0] == "A photo of a airplane_cabin."
    assert seen[0][1] == "A photo of a airplane_cabin, which has rows of seats."
    assert all("place" not in t for group in seen for t in group)


def test_principled_filter_is_the_named_variant(places: dict) -> None:
    seen: list[list[str]] = []
    inputs = _filter_inputs(places, seen, concept="place")
    build_filtered(inputs, FilterOptions(source=str(places["train"]), shots=3, keep=2,
                                         inputs="principled"), 1)
    assert seen[0][0] == "A photo of a place: a airplane cabin."
    released = _filter_inputs(places, [], None)
    features, _ = released.labelled(str(places["train"]), "comparative-released")
    colour, _ = released.labelled(str(places["train"]), "clip")
    assert not np.allclose(features, colour)  # other pixels, and not normalised
    assert np.linalg.norm(colour, axis=1) == pytest.approx(1.0, abs=1e-3)
    assert not np.linalg.norm(features, axis=1) == pytest.approx(1.0, abs=1e-3)


def test_released_filter_end_to_end(places: dict) -> None:
    cfg = EvalConfig(dataset=str(places["test"]), descriptors=places["store"], method="filtered",
                     options={"source": str(places["train"]), "shots": 3, "keep": 2, "repeats": 2},
                     model=str(places["config"]), pretrained=str(places["checkpoint"]),
                     device="cpu", workers=0, batch_size=4)
    result = evaluate(cfg, NAMES, places["cache"], PROMPTS, clip=places["clip"])
    assert result.options["inputs"] == "released" and len(result.repeats) == 2
    principled = evaluate(cfg.model_copy(update={"options": {**cfg.options, "inputs": "principled"}}),
                          NAMES, places["cache"], PROMPTS, clip=places["clip"])
    assert principled.options["inputs"] == "principled"


# -- the stored precision of image features ------------------------------------------------------


def test_fp32_evaluations_score_fp32_image_features(places: dict, tiny_clip: tuple[Path, Path]) -> None:
    from descriptor_gen.score.evaluate import image_features
    from descriptor_gen.score.features import ImageFeatureCache

    clip = places["clip"]
    data = load_image_folder(places["test"], NAMES)
    feats, encoded = image_features(clip, data, places["cache"], 4, 0)
    assert encoded == len(data.paths) and feats.features.dtype == np.float32
    stored = list((places["cache"] / "image_features").glob("*.npy"))
    assert len(stored) == 1 and np.load(stored[0]).dtype == np.float32
    from PIL import Image

    with torch.no_grad():
        direct = clip.model.encode_image(torch.stack([clip.preprocess(Image.open(p).convert("RGB"))
                                                      for p in data.paths])).float()
        direct = (direct / direct.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(feats.features, direct, rtol=0, atol=1e-6)  # fp16 would be ~1e-4
    again, encoded = image_features(clip, data, places["cache"], 4, 0)
    assert encoded == 0 and again.features.dtype == np.float32
    config, checkpoint = tiny_clip
    half = load_clip(str(config), str(checkpoint), "cpu", "bf16")
    cache = ImageFeatureCache(places["cache"] / "image_features")
    assert cache.key(half, data.identity()) != cache.key(clip, data.identity())
    feats16, encoded = image_features(half, data, places["cache"], 4, 0)
    assert encoded == len(data.paths) and feats16.features.dtype == np.float16


# -- CuPL's question sets ------------------------------------------------------------------------

from descriptor_gen.describe.styles import CuplStyle, cupl_prompts, cupl_questions  # noqa: E402

# sarahpratt/CuPL all_prompts/full_prompts/*_prompts_full.json: answers per class (every class
# has the same number), 10 per question (n=10 in generate_image_prompts.py).
CUPL_RELEASED_ANSWERS = {"flowers": 20, "cifar10": 30, "cifar100": 40, "cub": 30, "caltech101": 30,
                         "cars": 90, "food101": 30, "pets": 20, "dtd": 60, "sun397": 30,
                         "fgvc_aircraft": 20}
# vishaal27/SuS-X utils/prompts_helper.py CUPL_PROMPTS['flowers102'] and ['cifar10'], verbatim
SUSX_FLOWERS = ["What does {} {} flower look like", "Describe the appearance of {} {}",
                "A caption of an image of {} {}", "Visually describe {} {}, a type of flower"]
SUSX_CIFAR10_COUNT = 5
# The openings of answers in CuPL's released flower_prompts_full.json ('pink primrose', each
# block of 10): block 1 answers how to identify it, block 2 what the flower looks like.
CUPL_FLOWER_BLOCKS = [["The best way to identify a pink primrose is to look for a flower",
                       "To identify a pink primrose, a type of flower, look for a plant"],
                      ["A pink primrose flower looks like a small, pink rose."]]


@pytest.mark.parametrize("card", sorted(CUPL_RELEASED_ANSWERS))
def test_cupl_sets_ask_as_many_questions_as_cupls_released_answers(card: str) -> None:
    assert len(cupl_questions(PROMPTS, card)) * 10 == CUPL_RELEASED_ANSWERS[card]


def test_cupl_flower_questions_ask_what_the_released_answers_answer() -> None:
    texts = [p.text for p in cupl_prompts("pink primrose", CuplStyle(questions="flowers"),
                                          PROMPTS)]
    assert texts == ["How can you identify a pink primrose, a type of flower?",
                     "What does a pink primrose flower look like?"]
    assert "identify a pink primrose" in CUPL_FLOWER_BLOCKS[0][1]
    assert "pink primrose flower looks like" in CUPL_FLOWER_BLOCKS[1][0]


def test_susx_sets_stay_as_named_options_with_their_article() -> None:
    flowers = cupl_questions(PROMPTS, "sus-x:flowers")
    assert [q.replace("{a} {c}", "{} {}") for q in flowers] == SUSX_FLOWERS
    assert len(cupl_questions(PROMPTS, "sus-x:cifar10")) == SUSX_CIFAR10_COUNT
    # SuS-X generate_gpt3_prompts.py: "an" before any vowel; CuPL: before a capital one only
    assert cupl_prompts("apple", CuplStyle(questions="sus-x:cifar100"), PROMPTS)[0].text \
        == "Describe what an apple looks like"
    assert cupl_prompts("apple", CuplStyle(questions="cifar100"), PROMPTS)[0].text \
        == "Describe a photo of a apple"
    assert CuplStyle(questions="sus-x:pets").record()["article"] == "vowel"
    assert CuplStyle(questions="pets").record()["article"] == "cupl"
