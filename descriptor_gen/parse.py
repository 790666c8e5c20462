"""LLM answers -> descriptor lists.

Answers come from completion models that continue a dangling `-` (so the first item has no
bullet), from chat models that add a preamble, and from models that run on into the next
question; the parser keeps the one answer list and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_BULLET = re.compile(
    r"^\s*(?:[-*•‣◦▪●–—+]|\d{1,3}[.)](?=\s|$)|\(\d{1,3}\)|[a-z]\)(?=\s))\s*(?P<body>.*)$"
)
_STOP = re.compile(
    r"^\s*(?:Q\s*:|A\s*:|Question\s*:|Answer\s*:|There are several useful visual features\b)",
    re.IGNORECASE,
)
_CHATTY = re.compile(r"^(?:sure|certainly|of course|here (?:are|is)|okay|ok)\b", re.IGNORECASE)
_OPEN_ENDINGS = (",", ";", " and", " or", " with", " of", " the", " a", " an", " to", " in")
_EMPHASIS = re.compile(r"\*\*|__|`")
_MAX_WORDS = 80


def parse_descriptors(text: str, class_name: str | None = None) -> list[str]:
    """Parse one answer into descriptors: cleaned, deduplicated, in first-seen order.

    Args:
        text: the model's answer (a completion's continuation or a chat reply).
        class_name: the class asked about; an echo of it before each item is removed.

    Returns:
        The descriptors; an empty list when the answer holds none.
    """
    lines = _answer_lines(text)
    items = _items(lines, bulleted=any(_BULLET.match(line) for line in lines))
    return dedupe(c for c in (_clean(item, class_name) for item in items) if c)


def _answer_lines(text: str) -> list[str]:
    """The lines of the first answer: leading echoes of the Q/A header dropped, cut at the next."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    for line in lines:
        if _STOP.match(line):
            if any(x.strip() for x in out):
                break
            continue
        out.append(line)
    return out


def _items(lines: list[str], bulleted: bool) -> list[str]:
    items: list[str] = []
    current: str | None = None
    blank_before = False
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            blank_before = True
            continue
        match = _BULLET.match(line)
        if match:
            if current is not None:
                items.append(current)
            current, blank_before = match["body"], False
            continue
        if current is None and not items:
            if not _is_preamble(stripped, lines[index + 1 :], bulleted):
                current = stripped
        elif blank_before and bulleted:
            break
        elif current is not None and _continues(current, line, bulleted, blank_before):
            current = f"{current} {stripped}"
        else:
            if current is not None:
                items.append(current)
            current = stripped
        blank_before = False
    if current is not None:
        items.append(current)
    return items


def _is_preamble(line: str, rest: list[str], bulleted: bool) -> bool:
    """A chat model's lead-in ("Here are some features:") rather than a first descriptor."""
    if line.endswith(":") or _CHATTY.match(line):
        return True
    following = next((x for x in rest if x.strip()), None)
    blank_follows = bool(rest) and not rest[0].strip()
    return bulleted and blank_follows and following is not None and bool(_BULLET.match(following))


def _continues(current: str, line: str, bulleted: bool, blank_before: bool) -> bool:
    """Whether a bullet-less line wraps the item before it instead of starting a new one."""
    if blank_before:
        return False
    if bulleted or line[:1].isspace():
        return True
    return current.rstrip().lower().endswith(_OPEN_ENDINGS)


def _clean(item: str, class_name: str | None) -> str:
    text = " ".join(_EMPHASIS.sub("", item).split())
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
    name = r"\s+".join(re.escape(w) for w in class_name.split())
    prefix = re.compile(
        rf"^(?:(?:a|an|the)\s+)?{name}(?:e?s)?\s*(?::|-|–|—|,)\s*(?:which\s+(?:is|are|has|have)\s+)?",
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
