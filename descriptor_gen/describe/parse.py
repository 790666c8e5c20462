"""LLM answers -> descriptor lists.

Two parsers, chosen by name (`PARSERS`):

- `default`: reads what real models write. Completion models continue a dangling `-` (so the
  first item has no bullet) and may run on into the next question; chat models add preambles,
  titles, markdown, nested lists and closing notes. The parser keeps the one answer list and
  nothing else, and drops a last item that the token limit cut.
- `dclip`: Menon & Vondrick's `stringtolist` exactly: every line that starts with `- `, as written
  (no cleaning, no deduplication), for reproducing their descriptors.
- `cupl`: CuPL's: each answer is one sentence, newline pairs removed and a period appended.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

_BULLET = re.compile(
    r"^(?P<indent>\s*)(?:[-•‣◦▪●–—]|[*+](?=\s|$)|\d{1,3}[.)](?=\s|$)|\(\d{1,3}\)|[a-z]\)(?=\s))"
    r"\s*(?P<body>.*)$"
)
_STOP = re.compile(
    r"^\s*(?:Q\s*:|Question\s*:|Answer\s*:|A\s*:\s*There are several|There are several useful"
    r" (?:visual )?features\b)",
    re.IGNORECASE,
)
_ANSWER_PREFIX = re.compile(r"^\s*A\s*:\s*(?P<rest>.*)$")
_NOTE = re.compile(
    r"^\(?\s*(?:note|notes|n\.b\.|overall|in summary|summary|in conclusion|to summari[sz]e|in short"
    r"|these (?:visual |useful |distinctive |key )?(?:features|characteristics|traits|details)"
    r"|this list|i hope|hope this|let me know|keep in mind|remember|please note)\b",
    re.IGNORECASE,
)
_CHATTY = re.compile(r"^(?:sure|certainly|of course|here (?:are|is)|okay|ok|absolutely|great)\b",
                     re.IGNORECASE)
_MD_HEADING = re.compile(r"^\s*#{1,6}\s+\S")
_MD_BOLD_LINE = re.compile(r"^\s*(\*\*|__)(?P<text>[^*_].*?)\1\s*:?\s*$")
_CUT_ENDINGS = (" and", " or", " with", " of", " the", " a", " an", " to", " in")
_OPEN_ENDINGS = (",", ";", *_CUT_ENDINGS)
_EMPHASIS = re.compile(r"\*\*|__|`")
_STAR_EM = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])")
_UNDERSCORE_EM = re.compile(r"(?<![\w_])_(?!\s)([^_\n]+?)(?<!\s)_(?![\w_])")
_MAX_WORDS = 80
_TITLE_WORDS = 8
_SECTION_WORDS = 4


class Kind(Enum):
    BLANK = "blank"
    STOP = "stop"
    NOTE = "note"
    HEADER = "header"  # markdown heading or bold line: a section within the answer
    LABEL = "label"  # a plain line ending with ':'
    BULLET = "bullet"
    TEXT = "text"


@dataclass
class Line:
    kind: Kind
    body: str
    indent: int
    raw: str
    after_answer_header: bool = False  # "A: olive body": what follows "A:" starts the answer


def parse_descriptors(text: str, class_name: str | None = None, *, truncated: bool = False,
                      dangling: bool | None = None) -> list[str]:
    """Parse one answer into descriptors: cleaned, deduplicated, in first-seen order.

    Args:
        text: the model's answer (a completion's continuation or a chat reply).
        class_name: the class asked about; an echo of it before each item is removed.
        truncated: the answer stopped at the token limit (`finish_reason` "length"): a last item
            still open at the end of the text is cut and dropped.
        dangling: the prompt ended with a bullet for the model to continue, so the answer's
            first line is an item without its bullet. None: decided by the answer (a leading
            space, as completion models write after "-").

    Returns:
        The descriptors; an empty list when the answer holds none.
    """
    lines = [_classify(raw) for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    items, open_at_end = _Reader(lines, class_name, dangling).read()
    if items and open_at_end and (_ends_open(items[-1]) or (truncated and not text.endswith("\n"))):
        items.pop()
    return dedupe(c for c in (_clean(item, class_name) for item in items) if c)


def parse_dclip(text: str, class_name: str | None = None, *, truncated: bool = False,
                dangling: bool | None = None) -> list[str]:
    """Menon & Vondrick's `stringtolist`: the text after `- ` of every line that starts with it.

    Kept as written (no cleaning, no deduplication, a cut last item kept); blank items, which the
    store cannot hold, are dropped.
    """
    return [line[2:] for line in text.split("\n") if line.startswith("- ") and line[2:].strip()]


def parse_cupl(text: str, class_name: str | None = None, *, truncated: bool = False,
               dangling: bool | None = None) -> list[str]:
    """CuPL's `result.replace("\\n\\n", "") + "."`: the answer (stopped at the first period)
    as one sentence, kept even when the token limit cut it, as released."""
    return [text.replace("\n\n", "") + "."]


def _classify(raw: str) -> Line:
    prefix = _ANSWER_PREFIX.match(raw)
    after_header = bool(prefix and not _STOP.match(raw) and prefix["rest"].strip())
    if after_header:
        raw = prefix["rest"]  # "A: - olive body": the answer header and the first item on one line
    stripped = raw.strip()
    indent = len(raw.expandtabs(4)) - len(raw.expandtabs(4).lstrip())
    if not stripped:
        return Line(Kind.BLANK, "", indent, raw)
    if _STOP.match(raw) or (prefix and not prefix["rest"].strip()):
        return Line(Kind.STOP, stripped, indent, raw)
    bullet = _BULLET.match(raw)
    if bullet:
        body = bullet["body"].strip()
        if _STOP.match(body) or _ANSWER_PREFIX.match(body):
            return Line(Kind.STOP, body, indent, raw)
        return Line(Kind.BULLET, body, indent, raw)
    plain = _EMPHASIS.sub("", stripped)
    if _NOTE.match(plain):
        return Line(Kind.NOTE, stripped, indent, raw)
    if _MD_HEADING.match(raw) or _MD_BOLD_LINE.match(raw):
        return Line(Kind.HEADER, stripped, indent, raw)
    if stripped.endswith(":"):
        return Line(Kind.LABEL, stripped, indent, raw)
    return Line(Kind.TEXT, stripped, indent, raw, after_header)


class _Reader:
    """One pass over classified lines, keeping the first answer list."""

    def __init__(self, lines: list[Line], class_name: str | None, dangling: bool | None) -> None:
        self.lines = lines
        self.class_name = class_name
        self.bulleted = any(line.kind is Kind.BULLET for line in lines)
        first = next((line for line in lines if line.kind is not Kind.BLANK), None)
        self.dangling = dangling if dangling is not None else bool(
            first and first.kind is Kind.TEXT and first.raw[:1].isspace())
        # An answer that opens with a short section label ("Shape:") is organised in sections;
        # otherwise a label after the list starts another class's list.
        self.sectioned = bool(first and (first.kind is Kind.HEADER or (
            first.kind is Kind.LABEL and len(first.body.split()) <= _SECTION_WORDS)))
        self.items: list[str] = []
        self.current: str | None = None

    def read(self) -> tuple[list[str], bool]:
        """The items, and whether the last one was still open when the text ended."""
        blank_before = False
        first_content = True
        for index, line in enumerate(self.lines):
            if line.kind is Kind.BLANK:
                blank_before = True
                continue
            started = self.current is not None or bool(self.items)
            if not self._take(index, line, started, blank_before, first_content):
                self._close()
                return self.items, False
            first_content = False
            blank_before = False
        open_at_end = self.current is not None
        self._close()
        return self.items, open_at_end

    def _take(self, index: int, line: Line, started: bool, blank_before: bool,
              first_content: bool) -> bool:
        """Use one non-blank line; False when the answer ends before it."""
        kind = line.kind
        if kind in (Kind.STOP, Kind.NOTE):
            return not started
        if kind is Kind.HEADER or (kind is Kind.LABEL and (not started or self.sectioned)):
            self._close()
            return True
        if kind is Kind.LABEL:
            return False  # "Goldfish:" after the list: another class's list begins
        if kind is Kind.BULLET:
            self._close()
            if line.body and not self._is_parent_label(index, line):
                self.current = line.body
            return True
        if not started:
            if self._is_first_item(line, first_content):
                self.current = line.body
            return True
        if blank_before and self.bulleted:
            return False  # prose after the list
        if self.current is not None and _continues(self.current, line, self.bulleted):
            self.current = f"{self.current} {line.body}"
        else:
            self._close()
            self.current = line.body
        return True

    def _is_first_item(self, line: Line, first_content: bool) -> bool:
        """Whether a bullet-less line before any item is an item, not a preamble or title."""
        if _CHATTY.match(line.body):
            return False
        if self.bulleted:
            return first_content and (self.dangling or line.after_answer_header)
        return not self._is_title(line.body)

    def _is_title(self, text: str) -> bool:
        """A heading that names the class ("Tench (Tinca tinca)", "Key features of a tench")."""
        if not self.class_name or len(text.split()) > _TITLE_WORDS:
            return False
        if text.rstrip().endswith((".", "!", "?")):
            return False
        name = r"\s+".join(re.escape(w) for w in self.class_name.split())
        alone = rf"(?:(?:the|a|an)\s+)?{name}(?:e?s)?\s*(?:\([^)]*\))?"
        heading = rf".*\b(?:features?|characteristics?|traits?|descriptions?)\b.*\b{name}(?:e?s)?"
        return any(re.fullmatch(p, text.strip(), re.IGNORECASE) for p in (alone, heading))

    def _is_parent_label(self, index: int, line: Line) -> bool:
        """A bullet whose children follow it: "- Body:" or "- Body" above indented bullets."""
        following = next((x for x in self.lines[index + 1 :] if x.kind is not Kind.BLANK), None)
        if following is None or following.kind is not Kind.BULLET:
            return False
        label = _EMPHASIS.sub("", line.body).strip()
        return following.indent > line.indent or label.endswith(":")

    def _close(self) -> None:
        if self.current is not None:
            self.items.append(self.current)
            self.current = None


def _continues(current: str, line: Line, bulleted: bool) -> bool:
    """Whether a bullet-less line wraps the item before it instead of starting a new one."""
    if bulleted or line.raw[:1].isspace():
        return True
    return current.rstrip().lower().endswith(_OPEN_ENDINGS)


def _ends_open(item: str) -> bool:
    """An item the text ended in the middle of ("a large and"): no feature ends like that."""
    return item.rstrip().lower().endswith(_CUT_ENDINGS)


def _clean(item: str, class_name: str | None) -> str:
    text = _STAR_EM.sub(r"\1", item)
    text = _UNDERSCORE_EM.sub(r"\1", text)
    text = " ".join(_EMPHASIS.sub("", text).split())
    text = text.strip("\"'“”‘’ ")
    if class_name:
        text = _strip_class_prefix(text, class_name)
    text = text.rstrip(" .;,:")
    if class_name and _is_just_the_name(text, class_name):
        return ""
    return text if _looks_like_descriptor(text) else ""


def _is_just_the_name(text: str, class_name: str) -> bool:
    words = text.casefold().split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    name = " ".join(class_name.casefold().split())
    return " ".join(words) in (name, f"{name}s", f"{name}es")


def _strip_class_prefix(text: str, class_name: str) -> str:
    """Remove "tench: ", "Tench - ", "a tench, which has " before an item; a hyphenated word
    that starts with the name ("tench-like barbels") is the item itself."""
    name = r"\s+".join(re.escape(w) for w in class_name.split())
    prefix = re.compile(
        rf"^(?:(?:a|an|the)\s+)?{name}(?:e?s)?(?:\s*[:,]|\s+[-–—])\s*"
        rf"(?:which\s+(?:is|are|has|have)\s+)?",
        re.IGNORECASE,
    )
    stripped = prefix.sub("", text, count=1)
    return stripped if stripped.strip() else text


def _looks_like_descriptor(text: str) -> bool:
    """Reject noise: no letters, mostly symbols, or far too long for one visual feature."""
    if not text or not any(ch.isalpha() for ch in text):
        return False
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    return letters / len(visible) >= 0.6 and len(text.split()) <= _MAX_WORDS


def dedupe(items: Iterable[str]) -> list[str]:
    """Drop repeats (ignoring case), keeping the first-seen order."""
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        key = item.casefold()
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _concatenate(lists: Iterable[list[str]]) -> list[str]:
    return [item for items in lists for item in items]


@dataclass(frozen=True)
class Parser:
    """How answers become one class's descriptors: each answer parsed, then the samples merged."""

    parse: Callable[..., list[str]]
    merge: Callable[[Iterable[list[str]]], list[str]]


PARSERS: dict[str, Parser] = {
    "default": Parser(parse_descriptors, lambda lists: dedupe(_concatenate(lists))),
    "dclip": Parser(parse_dclip, _concatenate),
    "cupl": Parser(parse_cupl, _concatenate),
}
