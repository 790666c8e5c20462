"""Few-shot prompts in the format of Menon & Vondrick, with the study's four options.

The frame (question and answer lines), the example banks and the instruction texts are data
files under `prompts/`; this module only reads and assembles them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_text, read_yaml, validated

NO_INSTRUCTION = "none"
_INSTRUCTION_KEY = re.compile(r"^[a-z][a-z0-9_-]*(\+[a-z][a-z0-9_-]*)*$")
_SILENT_H = ("hour", "honest", "honor", "honour", "heir")
_YOO_SOUND = ("uni", "use", "usu", "uti", "ure", "uro", "ura", "uku", "eu", "ewe", "one", "once")

Messages = list[dict[str, str]]
ALL = "all"


def _per_example(value: Any) -> int | str:
    """A number of descriptors (at least 1), given as a number or digits, or `all`."""
    if value == ALL:
        return ALL
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError("expected a number of descriptors of at least 1, or all")


PerExample = Annotated[int | Literal["all"], BeforeValidator(_per_example)]


class PromptOptions(Model):
    """The study's prompt options; the defaults are the study's |D(c)| = 7 prompt.

    Attributes:
        per_example: descriptors shown for each few-shot example object (|D(c)| of the study),
            or `all` for every line the bank has for each object (the `dclip` bank's 7 and 8).
        detailed: full sentences instead of short noun phrases.
        instruction: `none`, a named instruction (`role`, `rule`, `role+rule`), custom text
            (anything with a space), or `@FILE` to read custom text from a file.
        examples: number of few-shot example objects.
        bank: an example bank name under `prompts/banks/` or a path to a bank file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_example: PerExample = 7
    detailed: bool = False
    instruction: str = NO_INSTRUCTION
    examples: int = Field(default=2, ge=0)
    bank: str = "default"

    @field_validator("instruction")
    @classmethod
    def _blank_is_none(cls, value: str) -> str:
        return value.strip() or NO_INSTRUCTION


class PromptFormat(Model):
    """The question/answer frame; `{a}` is the article and `{c}` the class name.

    Attributes:
        target_question: the question asked about the target class, when it differs from the
            examples' (Menon & Vondrick's released prompt drops "visual" there).
        article: `auto` picks "a" or "an" by sound; `a` or `an` is used for every name.
        ending: what follows the target's answer line in completion text.
    """

    model_config = ConfigDict(extra="forbid")

    question: str
    answer: str
    bullet: str = "-"
    target_question: str | None = None
    article: Literal["auto", "a", "an"] = "auto"
    ending: str = "\n-"


class BankDefaults(Model):
    """Option values a bank implies when the user gives none (the `dclip` bank: every line)."""

    model_config = ConfigDict(extra="forbid")

    per_example: PerExample | None = None
    detailed: bool | None = None
    instruction: str | None = None
    examples: int | None = Field(default=None, ge=0)


class BankObject(Model):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    short: list[str] = Field(min_length=1)
    detailed: list[str] = Field(default_factory=list)


class ExampleBank(Model):
    """Few-shot objects, and optionally the frame and option defaults that go with them."""

    model_config = ConfigDict(extra="forbid")

    name: str
    objects: list[BankObject] = Field(min_length=1)
    format: dict[str, Any] = Field(default_factory=dict)
    defaults: BankDefaults = BankDefaults()


class Prompt(Model):
    """One class's prompt in both styles: completion text and chat messages.

    `dangling`: the completion text ends with a bullet, so a completion's first line is an item.
    """

    class_name: str
    text: str
    messages: Messages
    dangling: bool = True

    def sent(self, chat: bool) -> str | Messages:
        """The form a backend sends: chat messages or completion text."""
        return self.messages if chat else self.text

    def sha256(self, chat: bool) -> str:
        """Hash of the form actually sent, so records say exactly what the model saw."""
        return prompt_sha256(self.sent(chat))


def prompt_sha256(prompt: str | Messages) -> str:
    payload = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def indefinite_article(phrase: str) -> str:
    """`a` or `an` for a noun phrase, by its first word's sound as well as spelling allows."""
    word = phrase.strip().lower()
    if not word:
        return "a"
    if word.startswith(_SILENT_H):
        return "an"
    if word.startswith(_YOO_SOUND):
        return "a"
    return "an" if word[0] in "aeiou" else "a"


class PromptLibrary:
    """The prompt data of one `prompts/` folder: frame, instructions and example banks."""

    def __init__(self, prompts_dir: Path) -> None:
        self.prompts_dir = prompts_dir
        self.format: PromptFormat = validated(
            PromptFormat, read_yaml(prompts_dir / "format.yaml"), prompts_dir / "format.yaml"
        )
        self.instructions = self._load_instructions(prompts_dir / "instructions.yaml")
        self._banks: dict[str, ExampleBank] = {}

    @staticmethod
    def _load_instructions(path: Path) -> dict[str, str]:
        data = read_yaml(path)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DescgenError(f"{path}: expected a mapping of instruction names to texts")
        return {str(k): " ".join(v.split()) for k, v in data.items()}

    def bank(self, name: str) -> ExampleBank:
        """An example bank by name (`prompts/banks/NAME.yaml`) or by file path."""
        if name not in self._banks:
            path = self._bank_path(name)
            self._banks[name] = validated(ExampleBank, read_yaml(path), path)
        return self._banks[name]

    def frame(self, bank: str) -> PromptFormat:
        """The project's frame with the bank's overrides applied."""
        overrides = self.bank(bank).format
        if not overrides:
            return self.format
        path = self._bank_path(bank)
        return validated(PromptFormat, {**self.format.model_dump(), **overrides}, path)

    def options(self, bank: str = "default", **given: Any) -> PromptOptions:
        """Prompt options from the values given; a value left None comes from the bank's
        defaults, then from :class:`PromptOptions`' own."""
        implied = self.bank(bank).defaults.model_dump(exclude_none=True)
        chosen = {k: v for k, v in given.items() if v is not None}
        return PromptOptions.model_validate({**implied, **chosen, "bank": bank})

    def bank_names(self) -> list[str]:
        return sorted(p.stem for p in (self.prompts_dir / "banks").glob("*.y*ml"))

    def _bank_path(self, name: str) -> Path:
        candidate = Path(name)
        if candidate.suffix in (".yaml", ".yml", ".json") and candidate.is_file():
            return candidate
        for suffix in (".yaml", ".yml", ".json"):
            path = self.prompts_dir / "banks" / f"{name}{suffix}"
            if path.is_file():
                return path
        known = ", ".join(self.bank_names())
        raise DescgenError(f"unknown example bank {name!r} (known: {known}; or give a file path)")

    def instruction_text(self, value: str) -> str | None:
        """Resolve an `instruction` option value to the text that opens the prompt."""
        if value == NO_INSTRUCTION:
            return None
        if value.startswith("@"):
            path = Path(value[1:])
            text = read_text(path, "instruction file").strip()
            if not text:
                raise DescgenError(f"{path}: instruction file is empty")
            return text
        if not _INSTRUCTION_KEY.match(value):
            return value
        unknown = [part for part in value.split("+") if part not in self.instructions]
        if unknown:
            names = ", ".join([NO_INSTRUCTION, *self.instructions, "+".join(self.instructions)])
            raise DescgenError(
                f"unknown instruction {unknown[0]!r} (choose {names}; custom text needs a space,"
                " or use @FILE)"
            )
        return "\n\n".join(self.instructions[part] for part in value.split("+"))

    def examples(self, options: PromptOptions) -> list[tuple[str, list[str]]]:
        """The few-shot objects and descriptors the options select, checked against the bank."""
        bank = self.bank(options.bank)
        if options.examples > len(bank.objects):
            raise DescgenError(
                f"bank {bank.name!r} has {len(bank.objects)} example objects;"
                f" examples={options.examples} asks for more"
            )
        chosen = []
        kind = "detailed" if options.detailed else "short"
        for obj in bank.objects[: options.examples]:
            lines = obj.detailed if options.detailed else obj.short
            if not lines:
                raise DescgenError(f"bank {bank.name!r}: object {obj.name!r} has no {kind} descriptors")
            if options.per_example == ALL:
                chosen.append((obj.name, list(lines)))
                continue
            if options.per_example > len(lines):
                raise DescgenError(
                    f"bank {bank.name!r}: object {obj.name!r} has {len(lines)} {kind} descriptors;"
                    f" per_example={options.per_example} asks for more"
                )
            chosen.append((obj.name, lines[: options.per_example]))
        return chosen


def wordify(class_name: str) -> str:
    """A class name as the references put it in text: underscores become spaces."""
    return " ".join(class_name.replace("_", " ").split())


def _qa_header(fmt: PromptFormat, name: str, target: bool = False) -> str:
    article = indefinite_article(name) if fmt.article == "auto" else fmt.article
    question = fmt.target_question if target and fmt.target_question else fmt.question
    return f"{question.format(a=article, c=name)}\n{fmt.answer.format(a=article, c=name)}"


def _example_block(fmt: PromptFormat, name: str, descriptors: list[str]) -> str:
    bullets = "\n".join(f"{fmt.bullet} {d}" for d in descriptors)
    return f"{_qa_header(fmt, name)}\n{bullets}"


def build_prompt(class_name: str, options: PromptOptions, library: PromptLibrary) -> Prompt:
    """Build the completion text and chat messages that ask for `class_name`'s descriptors.

    The completion text ends with the target's answer line and the frame's ending (a dangling
    bullet for the model to continue); the chat form puts the instruction in the system
    message and the few-shot transcript, up to the target's answer line, in the user message.
    Underscores in the class name become spaces, as in Menon & Vondrick's script.
    """
    name = wordify(class_name)
    if not name:
        raise DescgenError("empty class name")
    fmt = library.frame(options.bank)
    instruction = library.instruction_text(options.instruction)
    blocks = [_example_block(fmt, obj, ds) for obj, ds in library.examples(options)]
    transcript = "\n\n".join([*blocks, _qa_header(fmt, name, target=True)])
    head = f"{instruction}\n\n" if instruction else ""
    text = f"{head}{transcript}{fmt.ending}"
    messages: Messages = [{"role": "system", "content": instruction}] if instruction else []
    messages.append({"role": "user", "content": transcript})
    return Prompt(class_name=name, text=text, messages=messages,
                  dangling=text.endswith(fmt.bullet))
