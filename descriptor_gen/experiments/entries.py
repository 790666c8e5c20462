"""Methods as sweeps and suites list them: a name, or a mapping with the method's options.

    methods:
      - classname
      - {method: waffle, count: 15, repeats: 7}
      - {method: swapped, seed: 0}
      - {method: comparative, neighbours: 10}
      - {method: filtered, style: comparative, source: data/train, shots: 8, keep: 20}
      - {method: autoclip, base: templates, beta: 0.85, label: AutoCLIP}

Learned methods (`coop`, `kgcoop`, `cocoop`, `padding`, `tip-adapter`, `tip-adapter-f`) are
trained in the sweep on `shots` labelled images per class from `train` (by default the
dataset card's train split), then scored; `shots: [1, 2, 4]` lists one entry per K and
`seed: [1, 2, 3]` one per seed (each its own run; the report gives their mean ± std, as CoOp's
parse_test_res.py). A seeded zero-shot method takes a seed list as its own option.

      - {method: coop, shots: [1, 2, 4, 8, 16], seed: [1, 2, 3], train: food101:train}

Keys other than `method`, `label`, `style`, `neighbours`, `questions`, `generation` and
`train` are the method's options (checked against it). `style` says where a method's descriptors come from when
the sweep generates them itself rather than from the grid's few-shot prompts: `cupl` (CuPL's
questions, `questions` naming the set, by default the dataset's) or `comparative` (`neighbours`
nearest classes); `cupl` and `comparative` imply their own style, and `generation` overrides
the style's generation parameters (by default its preset's sampling settings on the spec's
language model).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.learn.methods import LEARNED, learned
from descriptor_gen.score.methods import METHODS, MethodOptions, base_name, method

ENTRY_KEYS = ("method", "label", "style", "neighbours", "questions", "generation", "train", "seeds")
STYLE_OF = {"cupl": "cupl", "comparative": "comparative"}


class MethodEntry(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    label: str | None = None
    style: Literal["cupl", "comparative"] | None = None
    neighbours: int = Field(default=10, ge=1)
    questions: str | None = None
    generation: dict[str, Any] = {}
    train: str | None = None
    seeds: list[int] | None = None  # the seed list of a learned entry this one is a seed of
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"method": value}
        if isinstance(value, dict) and "options" not in value:
            options = {k: v for k, v in value.items() if k not in ENTRY_KEYS}
            return {**{k: v for k, v in value.items() if k in ENTRY_KEYS}, "options": options}
        return value

    @model_validator(mode="after")
    def _known(self) -> MethodEntry:
        if self.method not in METHODS and self.method not in LEARNED:
            raise ValueError(f"unknown method {self.method!r} (choose"
                             f" {', '.join([*METHODS, *LEARNED])})")
        if self.train is not None and not self.learned:
            raise ValueError(f"method {self.method} learns nothing; train does not apply")
        if self.seeds is not None and not self.learned:
            raise ValueError(f"method {self.method}: seeds are for learned methods (give a"
                             " seeded method seed: [..] among its options)")
        try:
            self.parsed()
        except DescgenError as exc:
            raise ValueError(str(exc)) from exc
        own = STYLE_OF.get(self.method)
        if own is not None and self.style not in (None, own):
            raise ValueError(f"method {self.method} scores {own} descriptors, not style {self.style}")
        if self.descriptor_style is not None and not self.needs_descriptors:
            raise ValueError(f"method {self.method} takes no descriptors; style does not apply")
        return self

    def parsed(self) -> MethodOptions:
        if self.learned:
            return learned(self.method).parse(self.options)
        return method(self.method).parse(self.options)

    @property
    def learned(self) -> bool:
        """A method trained on labelled shots (`descgen learn`)."""
        return self.method in LEARNED

    @property
    def descriptor_style(self) -> str | None:
        """Where its descriptors come from when the sweep generates them by a style."""
        if self.style is not None:
            return self.style
        if self.learned:
            return STYLE_OF.get(self.method)
        return STYLE_OF.get(base_name(self.method, self.parsed()))

    @property
    def needs_descriptors(self) -> bool:
        if self.learned:
            return learned(self.method).needs_descriptors(self.parsed())
        return method(self.method).needs_descriptors(self.parsed())

    @property
    def name(self) -> str:
        """How tables name it: the label, else the method and the options given."""
        return self._named(self.options)

    @property
    def seed_group(self) -> str | None:
        """For one seed of a seed list: the name of the list's entries (the seed left out),
        under which the report averages them."""
        if self.seeds is None:
            return None
        return self._named({k: v for k, v in self.options.items() if k != "seed"})

    def _named(self, options: dict[str, Any]) -> str:
        if self.label:
            return self.label + (f" (seed={self.options['seed']})" if self.seeds else "")
        shown = ", ".join(f"{k}={v}" for k, v in options.items())
        style = f" [{self.style}]" if self.style and self.style != STYLE_OF.get(self.method) else ""
        return f"{self.method}{style}" + (f" ({shown})" if shown else "")

    def identity(self) -> dict[str, Any]:
        """What about the method changes its numbers: the name and every option, defaults
        included (a changed default is another cell)."""
        out: dict[str, Any] = {"method": self.method}
        resolved = self.parsed().model_dump()
        if resolved:
            out["method_options"] = resolved
        return out


def expand_shots(entries: Any) -> Any:
    """`shots: [1, 2, 4]` and `seed: [1, 2, 3]` in a learned method's entry: one entry per K
    and seed; the entries of a seed list keep the list (`seeds`)."""
    if not isinstance(entries, list):
        return entries
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            out.append(entry)
            continue
        shots = entry["shots"] if isinstance(entry.get("shots"), list) else [None]
        seeds = entry.get("seed") if entry.get("method") in LEARNED else None
        for k in shots:
            one = entry if k is None else {**entry, "shots": k}
            if isinstance(seeds, list) and seeds and len(set(map(str, seeds))) == len(seeds):
                out += [{**one, "seed": s, "seeds": list(seeds)} for s in seeds]
            else:
                out.append(one)
    return out
