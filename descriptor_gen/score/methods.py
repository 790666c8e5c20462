"""Scoring methods: which texts make each class's vector, with their options (a registry).

Each method builds, per class, groups of texts (see :class:`~descriptor_gen.score.scoring.Group`);
a seeded method builds them once per seed and its metrics are averaged over the seeds.

- `classname`, `templates`, `descriptors`, `descriptors+templates`: CLIP and DCLIP
  (Menon & Vondrick, ICLR 2023); `descriptors+templates` is ½ s_descriptors + ½ s_templates.
- `waffle`: WaffleCLIP (Roth et al., ICCV 2023), random words and random character strings
  instead of LLM descriptors, the same set for every class, as released
  (`waffle_tools.load_gpt_descriptions`, mode `waffle`).
- `waffle+descriptors`: WaffleCLIP's `waffle_and_gpt`: random pairs and the class's descriptors.
- `swapped`: each class scored with another class's descriptors (a derangement fixed by seed).
- `no-name`: the descriptors alone, without the class name.
- `cupl`: CuPL (Pratt et al., ICCV 2023) sentences, renormalised mean (their
  `zeroshot_classifier_gpt`).
- `comparative`: comparative descriptors (Comparative-CLIP, 2024), scored as their mean.
- `filtered`: Comparative-CLIP's few-shot filtering (their `filter_descriptors.py`): descriptors
  kept by similarity to the mean image feature of K labelled shots per class.
- `autoclip`: AutoCLIP (Metzen et al., TMLR 2024) test-time weights over another method's texts.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, ValidationError, model_validator

from descriptor_gen.models import Model
from descriptor_gen.describe.prompts import wordify
from descriptor_gen.describe.store import DescriptorRecord
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import parse_json, read_text, validation_message
from descriptor_gen.limits import MAX_REPEATS, MAX_SEED, MAX_SHOTS, MAX_WAFFLE_COUNT
from descriptor_gen.score.autoclip import autoclip_scores
from descriptor_gen.score.blocks import ImageRows, MethodScores, PooledScores, RowScores
from descriptor_gen.score.scoring import (
    ClassTexts,
    Group,
    Pooling,
    TextRecipe,
    check_template,
    class_vectors,
    menon_which,
)

# The characters WaffleCLIP draws from when no descriptors are given (theirs are the characters
# of the dataset's DCLIP descriptors; on ImageNet these, but for H, X and Y).
ALPHABET = "\"'()-/0123456789:" + string.ascii_uppercase + string.ascii_lowercase
WORD_LISTS = {"waffle": "waffle/words.json"}


class MethodOptions(Model):
    """A method without options."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def seeds(self) -> list[int | None]:
        return [None]


Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Repeated(MethodOptions):
    """Seeded: scored once per seed (`seed`, `seed`+1, ... `repeats` of them, or the seeds a
    list names: `seed: [1, 2, 3]`), metrics averaged with their standard deviation.
    WaffleCLIP reports 7 repeats, seeds 0..6."""

    repeats: int = Field(default=7, ge=1, le=MAX_REPEATS)
    seed: Seed | list[Seed] = 0

    @model_validator(mode="after")
    def _seed_list(self) -> Repeated:
        if isinstance(self.seed, list):
            if not self.seed or len(set(self.seed)) != len(self.seed):
                raise ValueError(f"seed: a list of distinct seeds, got {self.seed}")
            if len(self.seed) > MAX_REPEATS:
                raise ValueError(f"seed: at most {MAX_REPEATS} seeds")
            if "repeats" in self.model_fields_set and self.repeats != len(self.seed):
                raise ValueError(f"repeats={self.repeats} beside {len(self.seed)} listed seeds;"
                                 " give one of them")
            object.__setattr__(self, "repeats", len(self.seed))
        elif self.seed + self.repeats - 1 > MAX_SEED:
            raise ValueError(f"seed {self.seed} with {self.repeats} repeats passes the largest"
                             f" seed, {MAX_SEED}")
        return self

    def seeds(self) -> list[int | None]:
        if isinstance(self.seed, list):
            return list(self.seed)
        return list(range(self.seed, self.seed + self.repeats))


class WaffleOptions(Repeated):
    """`count` pairs of a random-word and a random-character descriptor per class; `words`: a
    word list (`waffle`: WaffleCLIP's, or a JSON list / text file); `characters`: `alphabet`, or
    `descriptors` (as released: the characters of the dataset's LLM descriptors; needs a store)."""

    count: int = Field(default=15, ge=1, le=MAX_WAFFLE_COUNT)
    words: str = "waffle"
    characters: Literal["alphabet", "descriptors"] = "alphabet"


class SwappedOptions(Repeated):
    pass


class NoNameOptions(MethodOptions):
    """`template`: the descriptor's text, without `{c}` (default: the descriptor itself)."""

    template: str = "{d}"


class FilterOptions(Repeated):
    """Comparative-CLIP's few-shot filtering: `shots` labelled images per class from `source`
    (never the evaluated images) give a mean feature; a descriptor is kept when its text is
    closer to it than the class name's text (capped at `cap`), the `keep` closest at most.
    Their runs: 5 repeats, seeds 1..5. `inputs`: `released` feeds the filter what their
    scripts do (shots squashed to the CLIP's size and made grey, features averaged as encoded,
    texts "A photo of a {key}." and "A photo of a {key}, {which} {d}." with the store's own
    class key and no concept); `principled` uses the CLIP's own preprocessing, normalised
    features and the evaluation's text forms and concept."""

    source: str
    shots: int = Field(default=8, ge=1, le=MAX_SHOTS)
    keep: int = Field(default=20, ge=1)
    cap: float = 0.3
    repeats: int = Field(default=5, ge=1, le=MAX_REPEATS)
    seed: Seed | list[Seed] = 1
    inputs: Literal["released", "principled"] = "released"


class AutoClipOptions(MethodOptions):
    """AutoCLIP over the texts of `base`; `beta`: target entropy as a share of the uniform
    weights' (0.85 in the paper); `base_options`: the base method's own options."""

    base: str = "templates"
    beta: float = Field(default=0.85, gt=0.0, lt=1.0)
    base_options: dict[str, Any] = {}

    def seeds(self) -> list[int | None]:
        return METHODS[self.base].parse(self.base_options).seeds()


@dataclass
class Inputs:
    """What a method builds texts from.

    Attributes:
        encode: normalised text features of texts (cached), for methods that choose texts.
        labelled: (features, labels) of a labelled source's images, for few-shot methods.
    """

    classes: list[str]
    descriptors: dict[int, list[str]]
    templates: list[str]
    recipe: TextRecipe
    prompts_dir: Path
    encode: Callable[[list[str]], np.ndarray] | None = None
    labelled: Callable[[str, str], tuple[np.ndarray, np.ndarray]] | None = None
    keys: dict[int, str] = field(default_factory=dict)

    def own(self, index: int) -> list[str]:
        return self.descriptors.get(index) or []

    def key(self, index: int) -> str:
        """The class as the store's source file names it (a published file's own key, with
        its underscores), else the class list's name."""
        return self.keys.get(index) or self.classes[index]


def store_keys(records: list[DescriptorRecord]) -> dict[int, str]:
    """Each class's key in the file its descriptors were imported from (`import` records it)."""
    return {r.class_index: str(r.params.get("key") or r.class_name) for r in records}


Built = tuple[ClassTexts, list[int]]  # the texts, and the classes scored by a fallback


@dataclass(frozen=True)
class MethodDef:
    """One method: its options, how it builds texts, and what it needs.

    Attributes:
        descriptor_form, classname_form: what the `auto` text forms mean for it.
        pooling: the pooling it fixes (CuPL's renormalised mean), else the user's.
        store_style: the kind of store it scores (`cupl`, `comparative`), checked.
        aligned: its texts mean the same for every class (AutoCLIP shares weights then).
        base: for a method that weights another's texts (AutoCLIP), that method's name from
            its options; its `auto` text forms and templates are the base's.
        score: its own scoring of (options, image features, text features, texts); None:
            the similarity to the pooled class vectors.
    """

    build: Callable[[Inputs, Any, int | None], Built]
    summary: str
    options: type[MethodOptions] = MethodOptions
    needs_descriptors: Callable[[Any], bool] = lambda _: False
    descriptor_form: str = "dclip"
    classname_form: str = "clip"
    pooling: Pooling | None = None
    store_style: str | None = None
    parse_options: Callable[[dict[str, Any]], MethodOptions] | None = None
    base: Callable[[Any], str] | None = None
    score: Callable[[Any, np.ndarray, np.ndarray, ClassTexts], np.ndarray] | None = None

    def parse(self, raw: dict[str, Any]) -> Any:
        """Validate options; an unknown or bad one is one line naming it."""
        if self.parse_options is not None:
            return self.parse_options(raw)
        try:
            return self.options.model_validate(raw)
        except ValidationError as exc:
            raise DescgenError(f"method option {validation_message(exc)}") from exc


def _descriptor_group(inputs: Inputs, index: int, own: list[str], weight: float = 1.0) -> Group:
    """A class's descriptor texts; none: the class-name text, or DCLIP's blank descriptor."""
    recipe = inputs.recipe
    name = inputs.classes[index]
    own = own or ([""] if recipe.on_empty == "blank" else [])
    if not own:
        return _classname_group(inputs, index, weight)
    texts = [recipe.descriptor(name, d) for d in own]
    return Group(texts, list(own), recipe.pooling == "renormalised", weight)


def _classname_group(inputs: Inputs, index: int, weight: float = 1.0) -> Group:
    text = inputs.recipe.classname(inputs.classes[index])
    return Group([text], [text], False, weight, aligned=True)


def _templates_group(inputs: Inputs, index: int, weight: float = 1.0) -> Group:
    texts = [inputs.recipe.template(t, inputs.classes[index]) for t in inputs.templates]
    return Group(texts, list(inputs.templates), True, weight, aligned=True)


def _empty(inputs: Inputs) -> list[int]:
    return [i for i in range(len(inputs.classes)) if not inputs.own(i)]


def _check_empty(inputs: Inputs, empty: list[int]) -> list[int]:
    if empty and inputs.recipe.on_empty == "error":
        names = ", ".join(f"{i} {inputs.classes[i]}" for i in empty)
        raise DescgenError(f"classes without descriptors (--on-empty error): {names}")
    return empty


def _per_class(inputs: Inputs, make: Callable[[int], list[Group]]) -> ClassTexts:
    return ClassTexts(groups=[make(i) for i in range(len(inputs.classes))])


def build_classname(inputs: Inputs, _: Any, __: int | None) -> Built:
    return _per_class(inputs, lambda i: [_classname_group(inputs, i)]), []


def build_templates(inputs: Inputs, _: Any, __: int | None) -> Built:
    return _per_class(inputs, lambda i: [_templates_group(inputs, i)]), []


def build_descriptors(inputs: Inputs, _: Any, __: int | None) -> Built:
    empty = _check_empty(inputs, _empty(inputs))
    return _per_class(inputs, lambda i: [_descriptor_group(inputs, i, inputs.own(i))]), empty


def build_descriptors_templates(inputs: Inputs, _: Any, __: int | None) -> Built:
    empty = _check_empty(inputs, _empty(inputs))
    return _per_class(inputs, lambda i: [_descriptor_group(inputs, i, inputs.own(i), 0.5),
                                         _templates_group(inputs, i, 0.5)]), empty


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation without fixed points, fixed by seed: numpy's `RandomState(seed).shuffle`
    redrawn until no class keeps its own (WaffleCLIP's swap is the first draw, fixed points and
    all)."""
    if n < 2:
        raise DescgenError("swapped needs at least two classes")
    rng = np.random.RandomState(seed)
    while True:
        order = np.arange(n)
        rng.shuffle(order)
        if not (order == np.arange(n)).any():
            return order


def build_swapped(inputs: Inputs, _: SwappedOptions, seed: int | None) -> Built:
    order = derangement(len(inputs.classes), seed or 0)
    _check_empty(inputs, _empty(inputs))
    empty = [i for i in range(len(order)) if not inputs.own(int(order[i]))]
    return _per_class(inputs, lambda i: [_descriptor_group(inputs, i, inputs.own(int(order[i])))]), empty


def check_no_name_template(template: str) -> None:
    check_template(template, "descriptor")
    if "{c}" in template:
        raise DescgenError(f"no-name template {template!r}: must not name the class ({{c}})")


def build_no_name(inputs: Inputs, options: NoNameOptions, _: int | None) -> Built:
    check_no_name_template(options.template)
    empty = _check_empty(inputs, _empty(inputs))
    recipe = inputs.recipe.model_copy(update={"descriptor_text": options.template})
    named = Inputs(inputs.classes, inputs.descriptors, inputs.templates, recipe, inputs.prompts_dir)
    return _per_class(named, lambda i: [_descriptor_group(named, i, named.own(i))]), empty


def load_words(spec: str, prompts_dir: Path) -> list[str]:
    """A word list: a name (`waffle`: WaffleCLIP's `word_list.pkl`, as JSON), a JSON list of
    strings, or a text file with one word a line."""
    path = prompts_dir / WORD_LISTS[spec] if spec in WORD_LISTS else Path(spec)
    text = read_text(path, "word list")
    if path.suffix == ".json":
        words = parse_json(text, path)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DescgenError(f"{path}: expected a JSON list of words")
    else:
        words = [w.strip() for w in text.split("\n") if w.strip()]
    if not words:
        raise DescgenError(f"{path}: the word list is empty")
    return words


class _Waffle:
    """WaffleCLIP's random descriptors, drawn exactly as `waffle_tools.load_gpt_descriptions`
    draws them with numpy's legacy generator seeded by the repeat (same calls, same order)."""

    def __init__(self, inputs: Inputs, options: WaffleOptions, seed: int) -> None:
        keys = inputs.classes
        spaced = [k.replace("_", " ").split(" ") for k in keys]
        self.n_words = int(max(np.round(np.mean([len(w) for w in spaced])), 1))
        word_length = int(np.round(np.mean([np.mean([len(y) for y in w]) for w in spaced])))
        self.words = [w[:word_length] for w in load_words(options.words, inputs.prompts_dir)]
        self.characters = self._characters(inputs, options)
        num_spaces = int(np.round(np.mean([k.count(" ") for k in keys]))) + 1
        num_chars = int(np.ceil(np.mean([max(len(y) for y in k.split(" ")) for k in keys])))
        num_chars += num_spaces - num_chars % num_spaces
        self.shape = " ".join("a" * (num_chars // num_spaces) for _ in range(num_spaces))
        self.rng = np.random.RandomState(seed)

    @staticmethod
    def _characters(inputs: Inputs, options: WaffleOptions) -> list[str]:
        if options.characters == "alphabet":
            return sorted(ALPHABET)
        texts = [d for i in range(len(inputs.classes)) for d in (inputs.own(i) or [""])]
        words = np.unique([w for t in texts for w in t.split(" ")])
        cleaned = "".join(w.replace(",", "").replace(".", "") for w in words)
        found = [str(c) for c in np.unique(list(cleaned))]
        if not found:
            raise DescgenError("waffle characters=descriptors: the descriptors hold no characters")
        return found

    def _pick(self, pool: list[str]) -> str:
        # np.random.choice(pool, 1, replace=False)[0]: one permutation of the whole pool
        return pool[int(self.rng.permutation(len(pool))[0])]

    def pair(self) -> tuple[str, str]:
        word = " ".join(self._pick(self.words) for _ in range(self.n_words))
        noise = "".join(self._pick(self.characters) if ch != " " else ", " for ch in self.shape)
        return word, noise

    def shared(self, n_classes: int, pairs: int) -> tuple[list[list[str]], int]:
        """Every class's random descriptors (drawn to keep the generator's sequence) and the
        class whose set all classes share (WaffleCLIP's `match_key`)."""
        drawn = [[d for _ in range(pairs) for d in self.pair()] for _ in range(n_classes)]
        return drawn, int(self.rng.randint(0, n_classes))


def _renamed(inputs: Inputs, match: int, descriptors: list[str], index: int) -> list[str]:
    """The match class's texts with its name replaced by this class's (WaffleCLIP's
    `str.replace`, kept: it also rewrites the name where a random word happens to hold it)."""
    recipe = inputs.recipe
    source, target = wordify(inputs.classes[match]), wordify(inputs.classes[index])
    return [recipe.descriptor(inputs.classes[match], d).replace(source, target) for d in descriptors]


def build_waffle(inputs: Inputs, options: WaffleOptions, seed: int | None) -> Built:
    waffle = _Waffle(inputs, options, seed or 0)
    drawn, match = waffle.shared(len(inputs.classes), options.count)
    shared = drawn[match]
    return _per_class(inputs, lambda i: [Group(_renamed(inputs, match, shared, i), list(shared),
                                               False, aligned=True)]), []


def build_waffle_descriptors(inputs: Inputs, options: WaffleOptions, seed: int | None) -> Built:
    """WaffleCLIP's `waffle_and_gpt`: ⌊2/3·count⌋ random pairs shared by all classes, as many
    pairs of the class's own descriptors drawn with replacement, then 3·⌊2/3·count⌋ of these
    texts drawn without replacement per class."""
    waffle = _Waffle(inputs, options, seed or 0)
    pairs = int(2 / 3 * options.count)
    drawn, match = waffle.shared(len(inputs.classes), pairs)
    shared = drawn[match]
    rng = waffle.rng
    per_class: list[tuple[list[str], list[str]]] = []
    for index in range(len(inputs.classes)):
        texts, labels = _renamed(inputs, match, shared, index), list(shared)
        own = inputs.own(index) or [""]
        for _ in range(pairs):
            for _ in range(2):
                picked = own[int(rng.randint(0, len(own)))]
                texts.append(inputs.recipe.descriptor(inputs.classes[index], picked))
                labels.append(picked)
        per_class.append((texts, labels))
    groups = []
    for texts, labels in per_class:
        chosen = rng.permutation(len(texts))[: pairs * 3]
        groups.append([Group([texts[j] for j in chosen], [labels[j] for j in chosen], False)])
    return ClassTexts(groups=groups), _empty(inputs)


def build_filtered(inputs: Inputs, options: FilterOptions, seed: int | None) -> Built:
    """Comparative-CLIP's filter: per class, the mean feature of `shots` random labelled images
    (Python's `random.sample`, seeded once); threshold = min(cos(class-name text, mean), cap);
    descriptors above it, the `keep` most similar first. A class left with none is scored by
    its class-name text (their empty list becomes the class-name prompt)."""
    if inputs.labelled is None or inputs.encode is None:
        raise DescgenError("filtered: needs labelled images and a text encoder")
    released = options.inputs == "released"
    features, labels = inputs.labelled(options.source,
                                       "comparative-released" if released else "clip")
    picker = random.Random(seed)
    kept: dict[int, list[str]] = {}
    for index, name in enumerate(inputs.classes):
        rows = np.flatnonzero(labels == index)
        if len(rows) < options.shots:
            raise DescgenError(f"filtered: {options.source} has {len(rows)} images of class"
                               f" {index} ({name!r}), fewer than shots={options.shots}")
        mean = features[rows[picker.sample(range(len(rows)), options.shots)]].astype(np.float32).mean(axis=0)
        mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        own = list(dict.fromkeys(inputs.own(index)))
        if not own:
            kept[index] = []
            continue
        encoded = inputs.encode(_filter_texts(inputs, index, own, released))
        sims = encoded @ mean
        threshold = min(float(sims[0]), options.cap)
        above = [(float(s), d) for s, d in zip(sims[1:], own) if s > threshold]
        above.sort(key=lambda pair: -pair[0])
        kept[index] = [d for _, d in above[: options.keep]]
    filtered = Inputs(inputs.classes, kept, inputs.templates,
                      inputs.recipe.model_copy(update={"on_empty": "classname"}), inputs.prompts_dir)
    return build_descriptors(filtered, None, None)


RELEASED_FILTER_TEXTS = ("A photo of a {c}.", "A photo of a {c}, {which} {d}.")
"""filter_descriptors.py's threshold and descriptor sentences (their `{which}` is
make_descriptor_sentence, ours `menon_which`)."""


def _filter_texts(inputs: Inputs, index: int, own: list[str], released: bool) -> list[str]:
    """The class-name text, then each descriptor's: the released filter's with the store's raw
    key, or the evaluation's own forms."""
    if not released:
        name = inputs.classes[index]
        return [inputs.recipe.classname(name)] + [inputs.recipe.descriptor(name, d) for d in own]
    key = inputs.key(index)
    threshold, form = RELEASED_FILTER_TEXTS
    return [threshold.format(c=key)] + [form.format(c=key, which=menon_which(d), d=d) for d in own]


def _autoclip_options(raw: dict[str, Any]) -> AutoClipOptions:
    own = {k: raw[k] for k in ("base", "beta") if k in raw}
    try:
        options = AutoClipOptions.model_validate(own)
    except ValidationError as exc:
        raise DescgenError(f"method option {validation_message(exc)}") from exc
    weighable = [m for m, d in METHODS.items() if d.base is None]
    if options.base not in weighable:
        raise DescgenError(f"autoclip: base {options.base!r} is not a method to weight"
                           f" (choose {', '.join(weighable)})")
    base = METHODS[options.base].parse({k: v for k, v in raw.items() if k not in own})
    return options.model_copy(update={"base_options": base.model_dump()})


def build_autoclip(inputs: Inputs, options: AutoClipOptions, seed: int | None) -> Built:
    base = METHODS[options.base]
    built, empty = base.build(inputs, base.parse(options.base_options), seed)
    if any(len(groups) != 1 for groups in built.groups):
        raise DescgenError(f"autoclip: base {options.base!r} mixes groups of texts; choose one"
                           " whose classes each have one set of texts")
    return built, empty


def _any_descriptors(_: Any) -> bool:
    return True


def _waffle_needs(options: WaffleOptions) -> bool:
    return options.characters == "descriptors"


def _autoclip_needs(options: AutoClipOptions) -> bool:
    base = METHODS[options.base]
    return base.needs_descriptors(base.parse(options.base_options))


METHODS: dict[str, MethodDef] = {
    "classname": MethodDef(build_classname, "the class-name text alone (CLIP)"),
    "templates": MethodDef(build_templates, "the dataset's templates, renormalised mean (CLIP)"),
    "descriptors": MethodDef(build_descriptors, "mean over the class's descriptors (DCLIP)",
                             needs_descriptors=_any_descriptors),
    "descriptors+templates": MethodDef(build_descriptors_templates,
                                       "½ descriptors + ½ templates",
                                       needs_descriptors=_any_descriptors),
    "waffle": MethodDef(build_waffle, "random words and characters (WaffleCLIP)", WaffleOptions,
                        needs_descriptors=_waffle_needs, descriptor_form="waffle",
                        classname_form="waffle"),
    "waffle+descriptors": MethodDef(build_waffle_descriptors,
                                    "random pairs with the class's descriptors (WaffleCLIP+GPT)",
                                    WaffleOptions, needs_descriptors=_any_descriptors,
                                    descriptor_form="waffle", classname_form="waffle"),
    "swapped": MethodDef(build_swapped, "another class's descriptors (control, WaffleCLIP's"
                         " swapped_descriptions)", SwappedOptions,
                         needs_descriptors=_any_descriptors, descriptor_form="waffle",
                         classname_form="waffle"),
    "no-name": MethodDef(build_no_name, "the descriptors without the class name (control)",
                         NoNameOptions, needs_descriptors=_any_descriptors),
    "cupl": MethodDef(build_descriptors, "CuPL sentences, renormalised mean",
                      needs_descriptors=_any_descriptors, descriptor_form="sentence",
                      pooling="renormalised", store_style="cupl"),
    "comparative": MethodDef(build_descriptors, "comparative descriptors (Comparative-CLIP)",
                             needs_descriptors=_any_descriptors, descriptor_form="waffle",
                             classname_form="waffle", store_style="comparative"),
    "filtered": MethodDef(build_filtered, "descriptors filtered by labelled shots"
                          " (Comparative-CLIP's few-shot filtering)", FilterOptions,
                          needs_descriptors=_any_descriptors, descriptor_form="waffle",
                          classname_form="waffle"),
    "autoclip": MethodDef(build_autoclip, "per-image weights over a base method's texts (AutoCLIP)",
                          AutoClipOptions, needs_descriptors=_autoclip_needs,
                          parse_options=_autoclip_options, base=lambda o: o.base,
                          score=lambda o, i, t, ct: autoclip_scores(i, t, ct, o.beta)),
}


def method(name: str) -> MethodDef:
    if name not in METHODS:
        raise DescgenError(f"unknown method {name!r} (choose {', '.join(METHODS)})")
    return METHODS[name]


def base_name(name: str, options: Any) -> str:
    """The method whose texts a method scores: its base for one that weights another's
    (AutoCLIP), else itself."""
    mdef = method(name)
    return mdef.base(options) if mdef.base is not None else name


def form_defaults(name: str, options: Any) -> MethodDef:
    """The method whose `auto` text forms apply: AutoCLIP uses its base's."""
    return METHODS[base_name(name, options)]


def class_texts(name: str, classes: list[str], descriptors: dict[int, list[str]],
                templates: list[str], recipe: TextRecipe, options: dict[str, Any] | None = None,
                seed: int | None = None, prompts_dir: Path | None = None) -> Built:
    """A method's texts with its options (defaults when None), for one seed."""
    mdef = method(name)
    parsed = mdef.parse(options or {})
    from descriptor_gen.paths import PROJECT_ROOT

    inputs = Inputs(classes, descriptors, templates, recipe, prompts_dir or PROJECT_ROOT / "prompts")
    return mdef.build(inputs, parsed, seed if seed is not None else parsed.seeds()[0])


def method_scores(name: str, options: Any, images: ImageRows, text_features: np.ndarray,
                  ct: ClassTexts) -> RowScores:
    """(N, C) scores, made a block of images at a time: the method's own (AutoCLIP's weighted
    similarities), else the pooled class vectors'."""
    mdef = method(name)
    own = mdef.score
    if own is not None:
        texts = np.asarray(text_features, np.float32)  # made once, read by every block
        return MethodScores(images, len(ct.groups), lambda block: own(options, block, texts, ct))
    return PooledScores(images, class_vectors(text_features, ct))
