from __future__ import annotations

import pytest

from descriptor_gen.parse import dedupe, parse_descriptors

# (answer, class name, expected descriptors)
CASES = [
    pytest.param(  # seed appendix, |D(c)|=4 short: a completion continuing the dangling "-"
        " large, rounded scales\n- long, slender body\n- two barbels on the chin\n- two dorsal fins\n",
        "tench",
        ["large, rounded scales", "long, slender body", "two barbels on the chin", "two dorsal fins"],
        id="seed-count4",
    ),
    pytest.param(  # seed appendix, |D(c)|=3 detailed
        " Tench have a large, rounded head with a protruding lower jaw and a small, upturned mouth.\n"
        "- Tench have a large, flat, and slightly rounded tail fin. They also have two dorsal fins,"
        " the first being short and the second being longer and more pointed.",
        "tench",
        [
            "Tench have a large, rounded head with a protruding lower jaw and a small, upturned mouth",
            "Tench have a large, flat, and slightly rounded tail fin. They also have two dorsal fins,"
            " the first being short and the second being longer and more pointed",
        ],
        id="seed-detailed",
    ),
    pytest.param(  # seed appendix, role instruction
        " large scales\n- two dorsal fins\n- a long, slender body\n- a large, flat head\n"
        "- a large, upturned mouth\n- a barbel on the chin\n- a forked tail",
        "tench",
        ["large scales", "two dorsal fins", "a long, slender body", "a large, flat head",
         "a large, upturned mouth", "a barbel on the chin", "a forked tail"],
        id="seed-role",
    ),
    pytest.param(  # seed appendix, rule instruction, run on into the next question
        " large scales\n- two dorsal fins\n- a long, slender body\n- a large, flat head\n"
        "- a large, upturned mouth\n- barbels on the chin and lower jaw\n- a short, forked tail\n\n"
        "Q: What are useful visual features for distinguishing a goldfish in a photo?\n"
        "A: There are several useful visual features to tell there is a goldfish in a photo:\n- orange",
        "tench",
        ["large scales", "two dorsal fins", "a long, slender body", "a large, flat head",
         "a large, upturned mouth", "barbels on the chin and lower jaw", "a short, forked tail"],
        id="seed-rule-runs-on",
    ),
    pytest.param("* red breast\n* grey back\n* short beak", "robin",
                 ["red breast", "grey back", "short beak"], id="asterisk"),
    pytest.param("• striped tail\n• masked face\n• grey fur", "raccoon",
                 ["striped tail", "masked face", "grey fur"], id="bullet-dot"),
    pytest.param("1. tall mast\n2. white sails\n3. wooden hull", "schooner",
                 ["tall mast", "white sails", "wooden hull"], id="numbered-dot"),
    pytest.param("1) tall mast\n2) white sails\n10) wooden hull", "schooner",
                 ["tall mast", "white sails", "wooden hull"], id="numbered-paren"),
    pytest.param(
        "Here are some useful visual features of a goldfish:\n\n- bright orange body\n- flowing fins",
        "goldfish", ["bright orange body", "flowing fins"], id="chat-preamble-colon",
    ),
    pytest.param(
        "Sure! Let me help.\n\n1. bright orange body\n2. flowing fins\n\nI hope this helps!",
        "goldfish", ["bright orange body", "flowing fins"], id="chat-preamble-and-closing",
    ),
    pytest.param(
        " black and white stripes\n- horse-like body\n"
        "There are several useful visual features to tell there is a zebu in a photo:\n- hump",
        "zebra", ["black and white stripes", "horse-like body"], id="other-class-header",
    ),
    pytest.param("- long neck\n\n- spotted coat\n\n\n- ossicones\n", "giraffe",
                 ["long neck", "spotted coat", "ossicones"], id="stray-blank-lines"),
    pytest.param("- round face.\n- big ears..\n- grey fur;", "koala",
                 ["round face", "big ears", "grey fur"], id="trailing-punctuation"),
    pytest.param("- long tail\n- Long Tail\n- large eyes\n- long  tail.", "lemur",
                 ["long tail", "large eyes"], id="duplicates"),
    pytest.param(
        "- tench: olive-green body\n- Tench - two dorsal fins\n- a tench, which has small red eyes",
        "tench", ["olive-green body", "two dorsal fins", "small red eyes"], id="class-echo",
    ),
    pytest.param(
        "- Great white sharks: a white underside\n- great white shark - a conical snout",
        "great white shark", ["a white underside", "a conical snout"], id="class-echo-plural",
    ),
    pytest.param(
        "- a long, slender body covered in\n  small, smooth scales\n- red eyes",
        "tench", ["a long, slender body covered in small, smooth scales", "red eyes"],
        id="wrapped-indented",
    ),
    pytest.param(
        "- a long, slender body that is usually olive green\nwith a golden sheen\n- red eyes",
        "tench", ["a long, slender body that is usually olive green with a golden sheen", "red eyes"],
        id="wrapped-flush",
    ),
    pytest.param("", "tench", [], id="empty"),
    pytest.param("\n\n   \n", "tench", [], id="whitespace"),
    pytest.param("-\n-\n", "tench", [], id="bare-bullets"),
    pytest.param("%% ## 12 34 !! ?? ::", "tench", [], id="noise"),
    pytest.param(
        "Q: What are useful visual features for distinguishing a goldfish in a photo?", "tench", [],
        id="only-next-question",
    ),
    pytest.param("- **Colour:** olive green\n- `small` scales", "tench",
                 ["Colour: olive green", "small scales"], id="markdown"),
    pytest.param(" dark fins\r\n- thick lips\r\n", "tench", ["dark fins", "thick lips"], id="crlf"),
    pytest.param("olive green body\nsmall red eyes\nthick, rounded tail", "tench",
                 ["olive green body", "small red eyes", "thick, rounded tail"], id="no-bullets"),
    pytest.param("- a\n- b x\n\nThese features make a tench easy to spot.", None,
                 ["a", "b x"], id="trailing-prose"),
    pytest.param(
        "A: There are several useful visual features to tell there is a tench in a photo:\n"
        "- olive body\n- red eyes",
        "tench", ["olive body", "red eyes"], id="echoed-answer-header",
    ),
    pytest.param("– curved beak\n— webbed feet", "pelican", ["curved beak", "webbed feet"],
                 id="dashes"),
    pytest.param('- "a pouch under the bill"\n- \'white plumage\'', "pelican",
                 ["a pouch under the bill", "white plumage"], id="quoted"),
    pytest.param(" a thick body\n- a rounded tail fin\n- a large, ", "tench",
                 ["a thick body", "a rounded tail fin", "a large"], id="cut-at-max-tokens"),
    pytest.param("- 1.5 m long body\n- 2 barbels", "sturgeon", ["1.5 m long body", "2 barbels"],
                 id="numbers-inside"),
]


@pytest.mark.parametrize(("answer", "class_name", "expected"), CASES)
def test_parse_descriptors(answer: str, class_name: str | None, expected: list[str]) -> None:
    assert parse_descriptors(answer, class_name) == expected


@pytest.mark.parametrize("item", ["- tench:", "- Tench.", "- a tench", "- Tenches"])
def test_the_class_name_alone_is_not_a_descriptor(item: str) -> None:
    assert parse_descriptors(f"{item}\n- red eyes", "tench") == ["red eyes"]


def test_long_run_on_text_is_not_a_descriptor() -> None:
    rambling = " ".join(["word"] * 200)
    assert parse_descriptors(rambling, "tench") == []


def test_dedupe_keeps_first_spelling() -> None:
    assert dedupe(["Long tail", "long tail", "eyes"]) == ["Long tail", "eyes"]
