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
dataset card's train split), then scored; `shots: [1, 2, 4]` lists one entry per K:

      - {method: coop, shots: [1, 2, 4, 8, 16], train: food101:train}

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

from pydantic import BaseModel, ConfigDict, Field, model_validator

from descriptor_gen.errors import DescgenError
from descriptor_gen.learn.methods import LEARNED, learned
from descriptor_gen.score.methods import METHODS, MethodOptions, method

ENTRY_KEYS = ("method", "label", "style", "neighbours", "questions", "generation", "train")
STYLE_OF = {"cupl": "cupl", "comparative": "comparative"}


class MethodEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    label: str | None = None
    style: Literal["cupl", "comparative"] | None = None
    neighbours: int = Field(default=10, ge=1)
    questions: str | None = None
    generation: dict[str, Any] = {}
    train: str | None = None
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
        if self.method == "autoclip":
            return STYLE_OF.get(self.parsed().base)  # type: ignore[attr-defined]
        return STYLE_OF.get(self.method)

    @property
    def needs_descriptors(self) -> bool:
        if self.learned:
            return learned(self.method).needs_descriptors(self.parsed())
        return method(self.method).needs_descriptors(self.parsed())

    @property
    def name(self) -> str:
        """How tables name it: the label, else the method and the options given."""
        if self.label:
            return self.label
        shown = ", ".join(f"{k}={v}" for k, v in self.options.items())
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
    """`shots: [1, 2, 4]` in a learned method's entry: one entry per K."""
    if not isinstance(entries, list):
        return entries
    out = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("shots"), list):
            out += [{**entry, "shots": k} for k in entry["shots"]]
        else:
            out.append(entry)
    return out
