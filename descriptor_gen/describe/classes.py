"""Class lists: one name a line; a class is its line's index, so repeated names stay apart."""

from __future__ import annotations

from pathlib import Path

from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import lines_of, read_text


def load_classes(path: Path | str) -> list[str]:
    """Read a class list; blank lines at the end are ignored, blank lines inside are errors.

    Args:
        path: a text file with one class name a line (ImageNet's list names `missile` and
            `sunglasses` twice: both entries are kept, keyed by index).
    """
    path = Path(path)
    names = [" ".join(line.split()) for line in lines_of(read_text(path, "class list"))]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DescgenError(f"{path}: class list is empty")
    for number, name in enumerate(names, start=1):
        if not name:
            raise DescgenError(f"{path}:{number}: empty class name (one name a line)")
    return names


def name_key(name: str) -> str:
    """Loose key for matching names across files: case, underscores, hyphens and spacing
    ignored ("globe-flower" is "Globe flower")."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).casefold()
