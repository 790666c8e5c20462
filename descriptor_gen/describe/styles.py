"""Prompt styles: how a class's questions to the language model are made.

- `dclip`: one few-shot prompt per class (Menon & Vondrick's frame, the study's options).
- `cupl`: CuPL's questions, each asked as it stands (`prompts/cupl/questions.yaml`).
- `comparative`: one question per (class, nearest class) pair, Comparative-CLIP's prompt
  (`prompts/comparative/prompt.yaml`); the nearest classes by CLIP text similarity of the names.
- the high-level concept of a dataset (WaffleCLIP's `generate_concepts.py`), one question.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import numpy as np
from pydantic import ConfigDict, Field, TypeAdapter

from descriptor_gen.models import Model
from descriptor_gen.describe.prompts import (
    Messages,
    Prompt,
    PromptLibrary,
    PromptOptions,
    build_prompt,
    indefinite_article,
)
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_yaml, validated

StyleName = Literal["dclip", "cupl", "comparative"]
DEFAULT_QUESTIONS = "imagenet"
SUSX_SETS = "sus-x:"  # SuS-X's transcription of CuPL's questions, `sus-x:<card>`
STYLE_FILES = {"cupl": "cupl/questions.yaml", "comparative": "comparative/prompt.yaml"}
"""The file under the prompts folder that a generated style's prompts are made from."""


NeighbourFinder = Callable[[list[str], int], tuple[list[list[int]], dict[str, str]]]
"""(classes, n) -> each class's n nearest classes and the identity of the CLIP that chose them."""


class DclipStyle(Model):
    """One few-shot prompt per class, made from the prompt options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["dclip"] = "dclip"
    preset: ClassVar[str | None] = None  # generated with the run's own sampling settings

    @staticmethod
    def dataset_defaults(prompts_dir: Path, dataset: str | None) -> dict[str, Any]:
        """CachePaths that follow from the dataset (none)."""
        return {}

    def record(self, neighbours: list[str] | None = None) -> dict[str, Any] | None:
        """What a record keeps: nothing (its prompt options say it all)."""
        return None

    def prompt_options(self, options: PromptOptions) -> PromptOptions | None:
        """The few-shot options this style's prompts are made from (None: not from options)."""
        return options

    def prepare(self, classes: list[str], find: NeighbourFinder | None) -> tuple[Style, None]:
        """What the prompts need beyond the classes, found now: nothing."""
        return self, None

    def prompts(self, classes: list[str], options: PromptOptions, library: PromptLibrary,
                neighbours: list[list[int]] | None = None) -> list[list[Prompt]]:
        return [[build_prompt(name, options, library)] for name in classes]

    def files(self, prompts_dir: Path) -> list[Path]:
        """The data files the prompts are made of, beside the options (none: the bank's
        examples are in the prompt options' own identity)."""
        return []

    def class_requests(self, name: str, prompts_dir: Path) -> list[Prompt] | int:
        """A class's prompts where its name alone makes them, else how many it asks (one:
        the few-shot prompt follows from the options)."""
        return 1


class CuplStyle(Model):
    """CuPL's questions, each asked as it stands.

    Attributes:
        questions: the question set (a dataset card name in the questions file).
        article: `cupl` ("an" before a capital vowel only, as released), `vowel` (any vowel,
            as SuS-X) or `sound` (by sound, as our few-shot prompts); `auto`: `vowel` for
            SuS-X's sets (`sus-x:...`), else `cupl`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["cupl"] = "cupl"
    questions: str = DEFAULT_QUESTIONS
    article: Literal["auto", "cupl", "vowel", "sound"] = "auto"
    preset: ClassVar[str | None] = "cupl"  # its sampling settings (prompts/presets/cupl.yaml)

    @staticmethod
    def dataset_defaults(prompts_dir: Path, dataset: str | None) -> dict[str, Any]:
        """The dataset's own question set where CuPL has one."""
        return {"questions": cupl_question_set(prompts_dir, dataset)}

    def article_rule(self) -> str:
        if self.article != "auto":
            return self.article
        return "vowel" if self.questions.startswith(SUSX_SETS) else "cupl"

    def record(self, neighbours: list[str] | None = None) -> dict[str, Any] | None:
        return {"name": "cupl", "questions": self.questions, "article": self.article_rule()}

    def prompt_options(self, options: PromptOptions) -> PromptOptions | None:
        return None

    def prepare(self, classes: list[str], find: NeighbourFinder | None) -> tuple[Style, None]:
        return self, None

    def prompts(self, classes: list[str], options: PromptOptions, library: PromptLibrary,
                neighbours: list[list[int]] | None = None) -> list[list[Prompt]]:
        return [cupl_prompts(name, self, library.prompts_dir) for name in classes]

    def files(self, prompts_dir: Path) -> list[Path]:
        return [prompts_dir / STYLE_FILES["cupl"]]

    def class_requests(self, name: str, prompts_dir: Path) -> list[Prompt] | int:
        return cupl_prompts(name, self, prompts_dir)


class ComparativeStyle(Model):
    """One question per (class, nearest class) pair, Comparative-CLIP's prompt.

    Attributes:
        neighbours: nearest classes asked about per class.
        example_seed: the seed of the examples drawn for each pair (theirs: 42).
        clip: the CLIP that chose the neighbours (its identity).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["comparative"] = "comparative"
    neighbours: int = Field(default=10, ge=1)
    example_seed: int = 42
    clip: dict[str, str] | None = None
    preset: ClassVar[str | None] = "comparative"

    @staticmethod
    def dataset_defaults(prompts_dir: Path, dataset: str | None) -> dict[str, Any]:
        return {}

    def record(self, neighbours: list[str] | None = None) -> dict[str, Any] | None:
        return {"name": "comparative", "neighbours": neighbours or [], "n": self.neighbours,
                "example_seed": self.example_seed, "clip": self.clip}

    def prompt_options(self, options: PromptOptions) -> PromptOptions | None:
        return None

    def prepare(self, classes: list[str],
                find: NeighbourFinder | None) -> tuple[Style, list[list[int]]]:
        """Each class's nearest classes by `find`'s CLIP, which the style records (unless it
        already names one)."""
        if find is None:
            raise DescgenError("comparative prompts need each class's nearest classes")
        lists, identity = find(classes, self.neighbours)
        return (self if self.clip is not None else self.model_copy(update={"clip": identity}),
                lists)

    def prompts(self, classes: list[str], options: PromptOptions, library: PromptLibrary,
                neighbours: list[list[int]] | None = None) -> list[list[Prompt]]:
        if neighbours is None:
            raise DescgenError("comparative prompts need each class's nearest classes")
        return comparative_prompts(classes, neighbours, self, library.prompts_dir)

    def files(self, prompts_dir: Path) -> list[Path]:
        return [prompts_dir / STYLE_FILES["comparative"]]

    def class_requests(self, name: str, prompts_dir: Path) -> list[Prompt] | int:
        """One question per neighbour; the questions wait for the neighbours."""
        return self.neighbours


Style = Annotated[Union[DclipStyle, CuplStyle, ComparativeStyle], Field(discriminator="name")]
"""A prompt style and its settings; all of it is provenance (records keep it)."""

STYLES: dict[str, type[DclipStyle | CuplStyle | ComparativeStyle]] = {"dclip": DclipStyle, "cupl": CuplStyle,
                                      "comparative": ComparativeStyle}
_STYLE = TypeAdapter(Style)


def make_style(settings: dict[str, Any]) -> Style:
    """A style from its settings (`name` picks the kind, `dclip` by default); a setting of
    another style is a ValidationError."""
    return _STYLE.validate_python({"name": "dclip", **settings})


class ComparativeExample(Model):
    model_config = ConfigDict(extra="forbid")

    target: str
    similar: str
    features: list[str] = Field(min_length=1)


class ComparativePrompt(Model):
    model_config = ConfigDict(extra="forbid")

    system: str
    question: str
    examples_per_prompt: int = Field(ge=0)
    examples: list[ComparativeExample]


class ConceptPrompt(Model):
    model_config = ConfigDict(extra="forbid")

    question: str
    names: int = Field(ge=1)
    seed: int


def cupl_questions(prompts_dir: Path, questions: str) -> list[str]:
    path = prompts_dir / STYLE_FILES["cupl"]
    data = read_yaml(path, "CuPL questions")
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(q, str) for q in v)
                                             for v in data.values()):
        raise DescgenError(f"{path}: expected question sets: a name, then a list of questions")
    if questions not in data:
        raise DescgenError(f"no CuPL question set {questions!r} (known: {', '.join(data)})")
    return list(data[questions])


def cupl_question_set(prompts_dir: Path, dataset: str | None) -> str:
    """The question set for a dataset: its own where CuPL has one, else ImageNet's."""
    data = read_yaml(prompts_dir / "cupl" / "questions.yaml", "CuPL questions")
    return dataset if dataset and isinstance(data, dict) and dataset in data else DEFAULT_QUESTIONS


def cupl_article(name: str, rule: str) -> str:
    if rule == "cupl":
        return "an" if name[:1] in "AEIOU" and name[:1] else "a"
    if rule == "vowel":
        return "an" if name[:1].lower() in "aeiou" and name[:1] else "a"
    return indefinite_article(name)


def _plain(class_name: str, text: str, system: str | None = None) -> Prompt:
    messages: Messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return Prompt(class_name=class_name, text=text, messages=messages, dangling=False)


def cupl_prompts(class_name: str, style: CuplStyle, prompts_dir: Path) -> list[Prompt]:
    """CuPL's questions about one class; the name as given (CuPL does not rewrite it)."""
    article = cupl_article(class_name, style.article_rule())
    return [_plain(class_name, q.format(a=article, c=class_name))
            for q in cupl_questions(prompts_dir, style.questions)]


def load_comparative(prompts_dir: Path) -> ComparativePrompt:
    path = prompts_dir / STYLE_FILES["comparative"]
    return validated(ComparativePrompt, read_yaml(path, "comparative prompt"), path)


def comparative_prompts(classes: list[str], neighbours: list[list[int]], style: ComparativeStyle,
                        prompts_dir: Path) -> list[list[Prompt]]:
    """Per class, one prompt per neighbour: the examples drawn in class order, then neighbour
    order, from one Python generator seeded once (so a run's prompts are theirs exactly)."""
    spec = load_comparative(prompts_dir)
    fmt = spec.question
    worked = [fmt.format(target=e.target, similar=e.similar,
                         features="\n".join(f"- {f}" for f in e.features)) for e in spec.examples]
    if spec.examples_per_prompt > len(worked):
        raise DescgenError(f"comparative prompt: {spec.examples_per_prompt} examples asked, the"
                           f" file has {len(worked)}")
    rng = random.Random(style.example_seed)
    out = []
    for index, name in enumerate(classes):
        prompts = []
        for other in neighbours[index]:
            chosen = rng.sample(worked, spec.examples_per_prompt)
            target = fmt.format(target=name, similar=classes[other], features="")
            prompts.append(_plain(name, "\n\n".join([*chosen, target]), spec.system))
        out.append(prompts)
    return out


def nearest_classes(classes: list[str], n: int,
                    encode: Callable[[list[str]], np.ndarray]) -> list[list[int]]:
    """Each class's n most similar classes by the cosine similarity of the CLIP text features
    of the bare names, in Comparative-CLIP's order (ascending similarity: the nearest last)."""
    if n >= len(classes):
        raise DescgenError(f"--neighbours {n}: must be fewer than the {len(classes)} classes")
    features = encode(list(classes)).astype(np.float64)
    features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    sims = features @ features.T
    np.fill_diagonal(sims, -1.0)
    return [[int(j) for j in np.argsort(row, kind="stable")[-n:]] for row in sims]


def concept_prompt(classes: list[str], prompts_dir: Path) -> Prompt:
    """WaffleCLIP's question for a dataset's shared concept."""
    path = prompts_dir / "concept.yaml"
    spec = validated(ConceptPrompt, read_yaml(path, "concept prompt"), path)
    rng = np.random.RandomState(spec.seed)
    drawn = rng.choice(np.array(classes), min(spec.names, len(classes)), replace=False)
    names = ", ".join(str(x).replace("_", " ") for x in drawn)
    return _plain("concept", spec.question.format(names=names))


def concept_from_answer(text: str) -> str:
    """WaffleCLIP's cleaning of the concept answer."""
    concept = text.replace("\n", "").replace(".", "").replace("?", "").lower().strip()
    if concept.endswith("s"):
        concept = concept[:-1]
    if not concept:
        raise DescgenError("the language model's concept answer is empty")
    return concept
