from __future__ import annotations

from pathlib import Path

import pytest

from descriptor_gen.errors import DescgenError
from descriptor_gen.describe.prompts import (
    PromptLibrary,
    PromptOptions,
    build_prompt,
    indefinite_article,
    prompt_sha256,
)
from descriptor_gen.paths import CachePaths

# The study's prompt at |D(c)| = 7: Menon & Vondrick's two examples, ordered as in the study's
# appendix (its first four lines of each), seven lines each, "visual" in every question.
STUDY_DEFAULT = """\
Q: What are useful visual features for distinguishing a lemur in a photo?
A: There are several useful visual features to tell there is a lemur in a photo:
- four-limbed primate
- wet and hairless nose with curved nostrils
- long tail
- large eyes
- black, grey, white, brown, or red-brown
- furry bodies
- clawed hands and feet

Q: What are useful visual features for distinguishing a television in a photo?
A: There are several useful visual features to tell there is a television in a photo:
- electronic device
- a large, rectangular screen
- a stand or mount to support the screen
- input ports for connecting to other devices
- black or grey
- one or more speakers
- a power cord

Q: What are useful visual features for distinguishing a tench in a photo?
A: There are several useful visual features to tell there is a tench in a photo:
-"""

ROLE = (
    "You are a visual description generator. For a given category or object, create visual"
    " descriptions that distinctly explain that category or object."
)
RULE_START = "Create only static visual features."


@pytest.fixture(scope="module")
def library() -> PromptLibrary:
    return PromptLibrary(CachePaths.resolve().prompts_dir)


def _bullets(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines() if line.startswith("- ")]


def test_default_prompt_is_the_studys(library: PromptLibrary) -> None:
    assert build_prompt("tench", PromptOptions(), library).text == STUDY_DEFAULT


# generate_prompt("tench") of classify_by_description_release/generate_descriptors.py, as released.
DCLIP_TENCH = """\
Q: What are useful visual features for distinguishing a lemur in a photo?
A: There are several useful visual features to tell there is a lemur in a photo:
- four-limbed primate
- black, grey, white, brown, or red-brown
- wet and hairless nose with curved nostrils
- long tail
- large eyes
- furry bodies
- clawed hands and feet

Q: What are useful visual features for distinguishing a television in a photo?
A: There are several useful visual features to tell there is a television in a photo:
- electronic device
- black or grey
- a large, rectangular screen
- a stand or mount to support the screen
- one or more speakers
- a power cord
- input ports for connecting to other devices
- a remote control

Q: What are useful features for distinguishing a tench in a photo?
A: There are several useful visual features to tell there is a tench in a photo:
-
"""


def dclip_generate_prompt(category_name: str) -> str:
    """The released function's output for any name: the tench text with the name swapped."""
    head, tail = DCLIP_TENCH.rsplit("Q: What are useful features", 1)
    return head + ("Q: What are useful features" + tail).replace("tench", category_name)


def test_dclip_bank_is_the_released_prompt_byte_for_byte(library: PromptLibrary) -> None:
    options = library.options(bank="dclip")
    assert (options.per_example, options.examples, options.detailed) == ("all", 2, False)
    assert build_prompt("tench", options, library).text == DCLIP_TENCH


@pytest.mark.parametrize("name", ["electric ray", "axolotl", "hourglass", "great white shark",
                                  "Black_footed_Albatross", "St. Bernard", "potter's wheel"])
def test_dclip_bank_for_any_class(library: PromptLibrary, name: str) -> None:
    # their script replaces underscores before building the prompt; the article is always "a"
    prompt = build_prompt(name, library.options(bank="dclip"), library)
    assert prompt.text == dclip_generate_prompt(name.replace("_", " "))
    assert not prompt.dangling  # the prompt ends "-\n": the answer's first line is its own


def test_dclip_bank_with_the_studys_options(library: PromptLibrary) -> None:
    text = build_prompt("tench", library.options(bank="dclip", per_example=3), library).text
    assert _bullets(text) == [
        "four-limbed primate", "black, grey, white, brown, or red-brown",
        "wet and hairless nose with curved nostrils", "electronic device", "black or grey",
        "a large, rectangular screen"]
    with pytest.raises(DescgenError, match="asks for more"):
        build_prompt("tench", library.options(bank="dclip", per_example=8), library)
    with pytest.raises(DescgenError, match="no detailed descriptors"):
        build_prompt("tench", library.options(bank="dclip", detailed=True), library)
    assert library.options(bank="default").per_example == 7


def test_per_example_all_takes_every_line(library: PromptLibrary) -> None:
    text = build_prompt("tench", PromptOptions(per_example="all"), library).text
    assert len(_bullets(text)) == 16
    with pytest.raises(ValueError):
        PromptOptions(per_example="some")  # type: ignore[arg-type]


def test_seed_appendix_count4_examples(library: PromptLibrary) -> None:
    text = build_prompt("tench", PromptOptions(per_example=4), library).text
    assert _bullets(text) == [
        "four-limbed primate", "wet and hairless nose with curved nostrils", "long tail",
        "large eyes", "electronic device", "a large, rectangular screen",
        "a stand or mount to support the screen", "input ports for connecting to other devices",
    ]


@pytest.mark.parametrize("k", range(1, 9))
def test_per_example_sets_bullets_per_object(library: PromptLibrary, k: int) -> None:
    text = build_prompt("tench", PromptOptions(per_example=k), library).text
    assert len(_bullets(text)) == 2 * k


def test_neighbouring_counts_differ_by_one_line_per_object(library: PromptLibrary) -> None:
    three = _bullets(build_prompt("tench", PromptOptions(per_example=3), library).text)
    four = _bullets(build_prompt("tench", PromptOptions(per_example=4), library).text)
    assert four[:3] == three[:3] and four[4:7] == three[3:6]


def test_detailed_uses_sentences(library: PromptLibrary) -> None:
    text = build_prompt("tench", PromptOptions(per_example=3, detailed=True), library).text
    bullets = _bullets(text)
    assert bullets[0].startswith("Lemurs often have distinct facial markings.")
    assert bullets[2].startswith("Unique to lemurs, they often cling to trees")
    assert all(b.endswith(".") and len(b.split()) >= 8 for b in bullets)


@pytest.mark.parametrize("n", range(0, 7))
def test_examples_sets_number_of_objects(library: PromptLibrary, n: int) -> None:
    text = build_prompt("tench", PromptOptions(examples=n), library).text
    assert text.count("Q: ") == n + 1
    assert len(_bullets(text)) == 7 * n
    assert text.endswith("there is a tench in a photo:\n-")


@pytest.mark.parametrize(
    ("instruction", "expected_start"),
    [("role", ROLE), ("rule", RULE_START), ("role+rule", ROLE), ("Only colours, please.", "Only")],
)
def test_instruction_opens_the_prompt(
    library: PromptLibrary, instruction: str, expected_start: str
) -> None:
    prompt = build_prompt("tench", PromptOptions(instruction=instruction), library)
    assert prompt.text.startswith(expected_start)
    assert prompt.text.split("\n\n", 1)[1].startswith("Q: ") or instruction == "role+rule"
    assert prompt.messages[0] == {"role": "system", "content": prompt.text.split("\n\nQ: ")[0]}
    if instruction == "role+rule":
        assert prompt.messages[0]["content"] == ROLE + "\n\n" + library.instructions["rule"]


def test_instruction_from_file(library: PromptLibrary, tmp_path: Path) -> None:
    path = tmp_path / "inst.txt"
    path.write_text("Describe shapes only.\n")
    prompt = build_prompt("tench", PromptOptions(instruction=f"@{path}"), library)
    assert prompt.text.startswith("Describe shapes only.\n\nQ: ")


def test_no_instruction_means_no_system_message(library: PromptLibrary) -> None:
    prompt = build_prompt("tench", PromptOptions(), library)
    assert [m["role"] for m in prompt.messages] == ["user"]
    assert prompt.messages[0]["content"] == STUDY_DEFAULT[: -len("\n-")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (PromptOptions(instruction="rol"), "unknown instruction 'rol'"),
        (PromptOptions(per_example=9), "per_example=9 asks for more"),
        (PromptOptions(examples=99), "examples=99 asks for more"),
        (PromptOptions(bank="nope"), "unknown example bank 'nope'"),
        (PromptOptions(instruction="@/no/such/file"), "no such instruction file"),
    ],
)
def test_bad_options_name_the_problem(
    library: PromptLibrary, options: PromptOptions, message: str
) -> None:
    with pytest.raises(DescgenError, match=message):
        build_prompt("tench", options, library)


def test_options_reject_out_of_range_and_unknown_fields() -> None:
    with pytest.raises(ValueError):
        PromptOptions(per_example=0)
    with pytest.raises(ValueError):
        PromptOptions(examples=-1)
    with pytest.raises(ValueError):
        PromptOptions(detail=True)  # type: ignore[call-arg]


def test_bank_meets_the_study_needs(library: PromptLibrary) -> None:
    bank = library.bank("default")
    assert len(bank.objects) >= 6
    assert [o.name for o in bank.objects[:2]] == ["lemur", "television"]
    for obj in bank.objects:
        assert len(obj.short) >= 7 and len(obj.detailed) >= 7
        assert len({d.lower() for d in obj.short}) == len(obj.short)


def test_bank_objects_avoid_target_class_names(library: PromptLibrary) -> None:
    repo = Path(__file__).resolve().parent.parent
    targets = set()
    for name in ("imagenet", "cifar10", "cifar100"):
        targets |= set((repo / "data" / "classes" / f"{name}.txt").read_text().splitlines())
    extra = [o.name for o in library.bank("default").objects[2:]]
    assert not set(extra) & targets


def test_bank_from_file_and_bad_bank_file(library: PromptLibrary, tmp_path: Path) -> None:
    good = tmp_path / "mini.yaml"
    good.write_text("name: mini\nobjects:\n  - {name: kite, short: [diamond shape], detailed: [A kite.]}\n")
    prompt = build_prompt("tench", PromptOptions(bank=str(good), per_example=1, examples=1), library)
    assert "- diamond shape\n" in prompt.text
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nobjects:\n  - {name: kite, short: []}\n")
    with pytest.raises(DescgenError, match="bad.yaml: objects.0.short: List should have at least 1"):
        build_prompt("tench", PromptOptions(bank=str(bad), examples=1), library)


@pytest.mark.parametrize(
    ("phrase", "article"),
    [
        ("axolotl", "an"), ("tench", "a"), ("eel", "an"), ("ice cream", "an"), ("orange", "an"),
        ("unicorn", "a"), ("ukulele", "a"), ("umbrella", "an"), ("hourglass", "an"),
        ("European robin", "a"), ("one-horned rhino", "a"), ("hen", "a"), ("Indian cobra", "an"),
    ],
)
def test_indefinite_article(phrase: str, article: str) -> None:
    assert indefinite_article(phrase) == article


def test_article_in_prompt(library: PromptLibrary) -> None:
    text = build_prompt("electric ray", PromptOptions(), library).text
    assert "distinguishing an electric ray in a photo?" in text
    assert "there is an electric ray in a photo:\n-" in text


def test_prompt_hash_depends_on_form(library: PromptLibrary) -> None:
    prompt = build_prompt("tench", PromptOptions(), library)
    assert prompt.sha256(chat=False) == prompt_sha256(prompt.text)
    assert prompt.sha256(chat=True) != prompt.sha256(chat=False)
    other = build_prompt("tench", PromptOptions(per_example=6), library)
    assert other.sha256(chat=False) != prompt.sha256(chat=False)
