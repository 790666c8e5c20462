from __future__ import annotations

import pytest

from descriptor_gen.describe.parse import PARSERS, dedupe, parse_dclip, parse_descriptors

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
    pytest.param(" a thick body\n- a rounded tail fin\n- a large and", "tench",
                 ["a thick body", "a rounded tail fin"], id="ends-on-a-dangling-word"),
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


# Shapes real models write (issue 9). Each group: several wordings, one expectation each.
TRAILING_NOTES = [
    "- olive body\n- red eyes\nNote: colours vary with the water the fish lives in.",
    "- olive body\n- red eyes\nOverall, the tench is a stocky, slimy fish.",
    "- olive body\n- red eyes\n\nIn summary, look for a thick olive body.",
    "- olive body\n- red eyes\n(Note: juveniles are paler.)",
    "- olive body\n- red eyes\n**Note:** these are general traits.",
    "- olive body\n- red eyes\nThese features help tell a tench from a carp.",
    "- olive body\n- red eyes\nI hope this helps!",
    "1. olive body\n2. red eyes\nOverall these are the most useful features.",
]


@pytest.mark.parametrize("answer", TRAILING_NOTES)
def test_a_trailing_note_is_not_a_descriptor(answer: str) -> None:
    assert parse_descriptors(answer, "tench") == ["olive body", "red eyes"]


RUN_ON = [
    "- olive body\n- red eyes\nQ: What are useful visual features for distinguishing a goldfish"
    " in a photo?\nA: There are several useful visual features to tell there is a goldfish in a"
    " photo:\n- orange body",
    "- olive body\n- red eyes\nA: There are several useful visual features to tell there is a"
    " goldfish in a photo:\n- orange body",
    "- olive body\n- red eyes\n- A: There are several useful visual features to tell there is a"
    " goldfish in a photo:\n- orange body",
    "- olive body\n- red eyes\n- Q: What are useful features for distinguishing a goldfish?\n"
    "- orange body",
    " olive body\n- red eyes\n\nQ: What are useful visual features for distinguishing a"
    " goldfish in a photo?",
    "- olive body\n- red eyes\nQuestion: What does a goldfish look like?\n- orange body",
]


@pytest.mark.parametrize("answer", RUN_ON)
def test_a_model_that_runs_on_into_the_next_block_stops_there(answer: str) -> None:
    assert parse_descriptors(answer, "tench") == ["olive body", "red eyes"]


SECOND_CLASS = [
    "- olive body\n- red eyes\nGoldfish:\n- orange body\n- long fins",
    "- olive body\n- red eyes\nGoldfish (Carassius auratus):\n- orange body",
    " olive body\n- red eyes\nGreat white shark:\n- grey back",
    "1. olive body\n2. red eyes\nGoldfish:\n1. orange body",
]


@pytest.mark.parametrize("answer", SECOND_CLASS)
def test_a_second_class_header_ends_the_list(answer: str) -> None:
    assert parse_descriptors(answer, "tench") == ["olive body", "red eyes"]


PREAMBLES = [
    "Tench (Tinca tinca)\n- olive body\n- red eyes",
    "The tench is a freshwater fish found across Europe.\n- olive body\n- red eyes",
    "Tench\n- olive body\n- red eyes",
    "# Tench\n- olive body\n- red eyes",
    "**Tench (Tinca tinca)**\n- olive body\n- red eyes",
    "Visual features of a tench\n- olive body\n- red eyes",
    "Here are some features that distinguish a tench:\n- olive body\n- red eyes",
    "Certainly! A tench is easy to recognise.\n\n- olive body\n- red eyes",
    "Tench are stocky fish of slow rivers.\n\n1. olive body\n2. red eyes",
    "Tench (Tinca tinca)\nolive body\nred eyes",
]


@pytest.mark.parametrize("answer", PREAMBLES)
def test_a_preamble_or_title_before_the_list_is_dropped(answer: str) -> None:
    assert parse_descriptors(answer, "tench") == ["olive body", "red eyes"]


MARKDOWN = [
    ("**Body:**\n- olive body\n**Head:**\n- red eyes", ["olive body", "red eyes"]),
    ("### Body\n- olive body\n### Head\n- red eyes", ["olive body", "red eyes"]),
    ("- **olive** body\n- *red* eyes", ["olive body", "red eyes"]),
    ("- _olive_ body\n- __red__ eyes", ["olive body", "red eyes"]),
    ("- **Body:**\n  - olive body\n  - slimy skin\n- **Head:**\n  - red eyes",
     ["olive body", "slimy skin", "red eyes"]),
    ("- Body\n    - olive body\n- Head\n    - red eyes", ["olive body", "red eyes"]),
    ("1. Body:\n   a) olive body\n2. Head:\n   a) red eyes", ["olive body", "red eyes"]),
    ("- Body:\n- olive body\n- red eyes", ["olive body", "red eyes"]),
    ("- **Colour:** olive body\n- red_eyes", ["Colour: olive body", "red_eyes"]),
]


@pytest.mark.parametrize(("answer", "expected"), MARKDOWN)
def test_markdown_is_read_as_structure_not_kept_as_text(answer: str, expected: list[str]) -> None:
    assert parse_descriptors(answer, "tench") == expected


HYPHENATED = [
    ("- tench-like barbels\n- red eyes", ["tench-like barbels", "red eyes"]),
    (" tench-like barbels\n- red eyes", ["tench-like barbels", "red eyes"]),
    ("- Tench-shaped body\n- red eyes", ["Tench-shaped body", "red eyes"]),
    ("- great white shark-like teeth", ["great white shark-like teeth"]),
    ("- tench - olive body\n- tench: red eyes", ["olive body", "red eyes"]),
]


@pytest.mark.parametrize(("answer", "expected"), HYPHENATED)
def test_an_item_starting_with_a_hyphenated_word_keeps_it(answer: str, expected: list[str]) -> None:
    name = "great white shark" if "shark" in answer else "tench"
    assert parse_descriptors(answer, name) == expected


ANSWER_ON_THE_HEADER_LINE = [
    "A: - olive body\n- red eyes",
    "A: olive body\n- red eyes",
    "A:- olive body\n- red eyes",
    "A: There are several useful visual features to tell there is a tench in a photo:\n"
    "- olive body\n- red eyes",
]


@pytest.mark.parametrize("answer", ANSWER_ON_THE_HEADER_LINE)
def test_an_answer_header_followed_by_the_first_item_keeps_it(answer: str) -> None:
    assert parse_descriptors(answer, "tench") == ["olive body", "red eyes"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (" a thick body\n- a rounded tail fin\n- a large, ", ["a thick body", "a rounded tail fin"]),
        (" a thick body\n- a rounded tail fin\n- a lar", ["a thick body", "a rounded tail fin"]),
        ("- Tench have an olive body.\n- Their eyes are small and red, set", ["Tench have an olive body"]),
        # cut right after a newline: every item is whole
        (" a thick body\n- a rounded tail fin\n", ["a thick body", "a rounded tail fin"]),
        # cut inside the next question: the list itself is whole
        (" a thick body\n- red eyes\nQ: What are useful", ["a thick body", "red eyes"]),
    ],
)
def test_a_cut_last_item_is_dropped_when_the_answer_was_truncated(answer: str,
                                                                  expected: list[str]) -> None:
    assert parse_descriptors(answer, "tench", truncated=True) == expected


def test_without_truncation_the_last_item_stays() -> None:
    assert parse_descriptors(" a thick body\n- a large", "tench") == ["a thick body", "a large"]


@pytest.mark.parametrize(
    ("answer", "dangling", "expected"),
    [
        ("olive body\n- red eyes", True, ["olive body", "red eyes"]),
        ("olive body\n- red eyes", False, ["red eyes"]),
        (" olive body\n- red eyes", None, ["olive body", "red eyes"]),
        ("Olive body.\n- red eyes", None, ["red eyes"]),
    ],
)
def test_dangling_bullet_decides_the_first_line(answer: str, dangling: bool | None,
                                                expected: list[str]) -> None:
    assert parse_descriptors(answer, "tench", dangling=dangling) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Menon & Vondrick's stringtolist: lines starting with "- ", kept exactly as written
        ("- a freshwater fish\n- olive green.\n- olive green.\n", ["a freshwater fish", "olive green.", "olive green."]),
        (" first line has no bullet\n- second", ["second"]),
        ("-no space\n- ok\n  - indented", ["ok"]),
        ("- tench: olive\nQ: next\n- goldfish item", ["tench: olive", "goldfish item"]),
        ("- \n- x", ["x"]),  # a blank item cannot be stored
        ("", []),
    ],
)
def test_dclip_parser_is_stringtolist(answer: str, expected: list[str]) -> None:
    assert parse_dclip(answer, "tench") == expected


def test_parsers_merge_samples_their_own_way() -> None:
    assert PARSERS["default"].merge([["a", "b"], ["B", "c"]]) == ["a", "b", "c"]
    assert PARSERS["dclip"].merge([["a", "b"], ["b", "c"]]) == ["a", "b", "b", "c"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c"])
def test_unicode_line_breaks_do_not_split_items(separator: str) -> None:
    assert parse_descriptors(f"- olive{separator}body\n- red eyes", "tench") == [
        "olive body", "red eyes"]
