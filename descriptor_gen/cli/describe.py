"""`descgen prompt`, `parse`, `import`, `export`, `show`: prompts and descriptor stores."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError

from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import output_file, read_text
from descriptor_gen.paths import CachePaths
from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.describe.classes import load_classes
from descriptor_gen.describe.export import EXPORT_FORMATS
from descriptor_gen.describe.parse import PARSERS
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions, build_prompt
from descriptor_gen.describe.published import import_published
from descriptor_gen.describe.store import read_store, select_records, summarize_store, write_store
from descriptor_gen.cli.options import OnEmptyName, flag_error

app = typer.Typer(rich_markup_mode=None, add_completion=False)


class ImportFormat(str, Enum):
    dclip = "dclip"
    cupl = "cupl"


class MatchBy(str, Enum):
    name = "name"
    order = "order"


ParserName = Enum("ParserName", {name: name for name in PARSERS}, type=str)  # type: ignore[misc]


# Prompt flags default to None ("not given"): the bank's defaults, then the study's, apply.
PerExample = Annotated[Optional[str], typer.Option(
    "--per-example", "-k", help="Descriptors in each few-shot example (|D(c)|), or all."
    " Default: the bank's (7; the dclip bank: all).")]


Detailed = Annotated[Optional[bool], typer.Option(
    "--detailed/--short", help="Full-sentence examples instead of short phrases.")]


Instruction = Annotated[Optional[str], typer.Option(
    "--instruction", help="none, role, rule, role+rule, custom text (with a space), or @FILE.")]


Examples = Annotated[Optional[int], typer.Option(
    "--examples", "-n", help="Number of few-shot example objects (default 2).")]


Bank = Annotated[Optional[str], typer.Option(
    "--bank", help="Example bank: a name in prompts/banks/ (default, dclip) or a file.")]


def prompt_options(library: PromptLibrary, per_example: str | None, detailed: bool | None,
                   instruction: str | None, examples: int | None, bank: str | None,
                   implied: dict[str, Any] | None = None) -> PromptOptions:
    """Validate prompt flags into options; flags not given come from `implied` (a preset),
    then the bank. A bad value is a user error naming the flag."""
    given = {"per_example": per_example, "detailed": detailed, "instruction": instruction,
             "examples": examples, "bank": bank}
    chosen = {**(implied or {}), **{k: v for k, v in given.items() if v is not None}}
    try:
        return library.options(**{"bank": "default", **chosen})
    except ValidationError as exc:
        raise flag_error(exc) from exc


@app.command("prompt")
def prompt_cmd(
    class_name: Annotated[str, typer.Argument(help="The class to ask about, e.g. 'tench'.")],
    per_example: PerExample = None,
    detailed: Detailed = None,
    instruction: Instruction = None,
    examples: Examples = None,
    bank: Bank = None,
    chat: Annotated[bool, typer.Option("--chat", help="Print chat messages as JSON.")] = False,
) -> None:
    """Print the prompt that asks the language model for CLASS_NAME's visual features.

    The text is printed exactly as it is sent (`--bank dclip` ends with a newline of its own).
    """
    library = PromptLibrary(CachePaths.resolve().prompts_dir)
    options = prompt_options(library, per_example, detailed, instruction, examples, bank)
    prompt = build_prompt(class_name, options, library)
    if chat:
        typer.echo(json.dumps(prompt.messages, indent=2, ensure_ascii=False))
    else:
        typer.echo(prompt.text, nl=False)
        if not prompt.text.endswith("\n"):
            typer.echo("")


@app.command("parse")
def parse_cmd(
    file: Annotated[str, typer.Argument(help="A file holding one raw answer, or - for stdin.")],
    class_name: Annotated[
        Optional[str], typer.Option("--class-name", help="Strip this class name where echoed.")
    ] = None,
    parser: Annotated[ParserName, typer.Option("--parser", help="default, or dclip (Menon & Vondrick's stringtolist).")] = ParserName.default,  # type: ignore[attr-defined]
    truncated: Annotated[bool, typer.Option("--truncated", help="The answer stopped at the token limit: drop a cut last item.")] = False,
) -> None:
    """Parse a raw language-model answer into descriptors, one a line."""
    text = sys.stdin.read() if file == "-" else read_text(file, "answer file")
    for descriptor in PARSERS[parser.value].parse(text, class_name, truncated=truncated):
        typer.echo(descriptor)


@app.command("import")
def import_cmd(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="Published JSON: {class: [text, ...]}.")],
    fmt: Annotated[
        ImportFormat, typer.Option("--format", help="dclip (descriptors) or cupl (sentences).")
    ],
    classes: Annotated[Path, typer.Option("--classes", help="Class list, one name a line.")],
    out: Annotated[Path, typer.Option("--out", help="Descriptor store to write (JSONL).")],
    match: Annotated[
        MatchBy,
        typer.Option("--match", help="Pair classes with file keys by name, or by order (index)."),
    ] = MatchBy.name,
) -> None:
    """Import a published descriptor file (DCLIP, WaffleCLIP or CuPL) into a descriptor store."""
    output_file(out, "--out")
    names = load_classes(classes)
    records, report = import_published(src, fmt.value, names, match.value, classes)
    write_store(out, records)
    for line in report.lines():
        typer.echo(line, err=True)
    typer.echo(f"wrote {len(records)} records to {out}", err=True)


ExportFormat = Enum("ExportFormat", {n: n for n in EXPORT_FORMATS}, type=str)  # type: ignore[misc]


@app.command("export")
def export_cmd(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="A descriptor store (JSONL).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="dclip ({class: [descriptors]}), cupl ({class: [sentences]}) or clip_benchmark (its --custom_template_file: {dataset: {class: [sentences]}}).")],  # type: ignore[valid-type]
    out: Annotated[Path, typer.Option("--out", help="The JSON file to write.")],
    classes: Annotated[Optional[Path], typer.Option("--classes", help="Key the classes by these names (one a line, in class order), e.g. CLIP_benchmark's own class names.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="clip_benchmark: the dataset name its templates file is keyed by (e.g. imagenet1k).")] = None,
    descriptor_template: Annotated[str, typer.Option("--descriptor-template", help="cupl, clip_benchmark: the text of each descriptor, as eval's flag (auto: the store's, DCLIP's '{c}, which (is/has) {d}').")] = "auto",
    concept: Annotated[Optional[str], typer.Option("--concept", help="cupl, clip_benchmark: name classes as 'CONCEPT: a {c}' (WaffleCLIP).")] = None,
    on_empty: Annotated[OnEmptyName, typer.Option("--on-empty", help="cupl, clip_benchmark: a class without descriptors gets its class-name text, a blank descriptor, or is an error.")] = OnEmptyName.classname,
) -> None:
    """Write a store in a format other tools read; sentences are the texts eval encodes."""
    from descriptor_gen.describe.export import export_store
    from descriptor_gen.score.evaluate import TextOptions
    from descriptor_gen.score.scoring import TextForms

    output_file(out, "--out")
    if fmt.value != "clip_benchmark" and dataset is not None:
        raise DescgenError(f"--dataset is for --format clip_benchmark, not {fmt.value}")
    records = read_store(store)
    try:
        options = TextOptions(descriptor_template=descriptor_template, concept=concept,
                              on_empty=on_empty.value)
    except ValidationError as exc:
        raise flag_error(exc) from exc
    recipe = options.recipe(TextForms.load(CachePaths.resolve().prompts_dir), records)
    data = export_store(records, fmt.value, load_classes(classes) if classes else None,
                        recipe.descriptor, recipe.empty_class_texts, dataset)
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    write_text_atomically(out, text)
    typer.echo(f"wrote {len(records)} classes ({fmt.value}) to {out}", err=True)


@app.command("show")
def show_cmd(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="A descriptor store (JSONL).")],
    class_: Annotated[
        Optional[str],
        typer.Option("--class", help="Print one class's descriptors (by index or name)."),
    ] = None,
) -> None:
    """Validate a descriptor store and summarise it, or print one class's descriptors."""
    records = read_store(store)
    if class_ is not None:
        for record in select_records(records, class_):
            typer.echo(f"# {record.class_index} {record.class_name}")
            for descriptor in record.descriptors:
                typer.echo(descriptor)
        return
    for line in summarize_store(records):
        typer.echo(line)
