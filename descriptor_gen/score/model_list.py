"""Which CLIPs to run: `--model`/`--pretrained` pairs, `--models` entries (CLIP_benchmark's
`--pretrained_model`: `MODEL,PRETRAINED`, a file of such lines, or a collection name), and the
list of open_clip's pairs for `descgen models`."""

from __future__ import annotations

import os

from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_text

Pair = tuple[str, str]

# CLIP_benchmark's model_collection.py, as it names them (openclip_all: every open_clip pair)
COLLECTIONS: dict[str, list[Pair]] = {
    "openclip_base": [
        ("ViT-B-32-quickgelu", "laion400m_e32"), ("ViT-B-32", "laion2b_e16"),
        ("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-B-16", "laion400m_e32"),
        ("ViT-B-16-plus-240", "laion400m_e32"), ("ViT-L-14", "laion400m_e32"),
        ("ViT-L-14", "laion2b_s32b_b82k"), ("ViT-H-14", "laion2b_s32b_b79k"),
        ("ViT-g-14", "laion2b_s12b_b42k"),
    ],
    "openclip_multilingual": [
        ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),
        ("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k"),
    ],
    "openai": [("ViT-B-32", "openai"), ("ViT-B-16", "openai"), ("ViT-L-14", "openai"),
               ("ViT-L-14-336", "openai")],
}
ALL = "openclip_all"


def open_clip_pairs() -> list[Pair]:
    import open_clip

    return [(m, t) for m, t in open_clip.list_pretrained()]


def collection(name: str) -> list[Pair] | None:
    if name == ALL:
        return open_clip_pairs()
    return COLLECTIONS.get(name)


def _pair(text: str, where: str) -> Pair:
    model, comma, weights = text.strip().partition(",")
    if not comma or not model.strip() or not weights.strip() or "," in weights:
        raise DescgenError(f"{where}: {text.strip()!r} is not MODEL,PRETRAINED (e.g."
                           f" ViT-B-32,openai), a file of such lines or a collection"
                           f" ({', '.join([*COLLECTIONS, ALL])})")
    return model.strip(), weights.strip()


def expand_entry(entry: str) -> list[Pair]:
    """One `--models` value: a collection, a file of `MODEL,PRETRAINED` lines, or one pair."""
    found = collection(entry)
    if found is not None:
        return found
    if os.path.isfile(entry):
        lines = read_text(entry, "models file").splitlines()
        pairs = [_pair(line, f"{entry}:{number}") for number, line in enumerate(lines, 1)
                 if line.strip() and not line.lstrip().startswith("#")]
        if not pairs:
            raise DescgenError(f"{entry}: no MODEL,PRETRAINED line")
        return pairs
    return [_pair(entry, "--models")]


def model_pairs(models: list[str] | None, pretrained: list[str] | None,
                entries: list[str] | None, default: Pair = ("ViT-B-32", "openai")) -> list[Pair]:
    """The CLIPs of one command, each once, in the order given. `--model`/`--pretrained` pair up
    in order; one of either goes with every one of the other. `--models` entries come after."""
    models, pretrained = models or [], pretrained or []
    if len(models) > 1 and len(pretrained) > 1 and len(models) != len(pretrained):
        raise DescgenError(f"{len(models)} --model and {len(pretrained)} --pretrained: give one"
                           " --pretrained per --model (in order), or one for all")
    pairs: list[Pair] = []
    if models or pretrained or not entries:
        count = max(len(models), len(pretrained), 1)
        names = models * count if len(models) == 1 else models or [default[0]] * count
        tags = pretrained * count if len(pretrained) == 1 else pretrained or [default[1]] * count
        pairs = list(zip(names, tags))
    for entry in entries or []:
        pairs.extend(expand_entry(entry))
    return list(dict.fromkeys(pairs))


def pretrained_table(name_filter: str | None = None, cached_only: bool = False,
                     hub_cache: str | None = None) -> list[tuple[str, str, bool]]:
    """open_clip's (model, pretrained, weights on this machine) pairs whose model or tag holds
    `name_filter` (any case)."""
    import open_clip

    from descriptor_gen.score.weights import cached

    rows = []
    needle = (name_filter or "").lower()
    for model, tag in open_clip_pairs():
        if needle and needle not in model.lower() and needle not in tag.lower():
            continue
        here = cached(open_clip.get_pretrained_cfg(model, tag) or {}, hub_cache)
        if here or not cached_only:
            rows.append((model, tag, here))
    return rows


def collection_names() -> list[str]:
    return [*COLLECTIONS, ALL]

