"""The `descgen` command line: parses flags, calls the stage functions, prints.

The root group knows each command by name, module and one-line summary (`COMMANDS`) and
imports a command's module only when that command runs: `descgen --help` imports no stage,
`prompt` no torch, a cached `eval` neither the generation stage nor open_clip.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from descriptor_gen import __version__
from descriptor_gen.atomic import NO_SPACE, no_space
from descriptor_gen.errors import INTERRUPTED, DescgenError
from descriptor_gen.secrets import redact

try:  # typer >= 0.22 vendors its own copy of click
    from typer._click import exceptions as click_errors
    from typer._click.utils import make_default_short_help
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors
    from click.utils import make_default_short_help


@dataclass(frozen=True)
class Command:
    """A command: its name, the module of `descriptor_gen.cli` that defines it, and the first
    paragraph of its help (what `descgen --help` lists; a test holds it to the docstring)."""

    name: str
    module: str
    summary: str


COMMANDS: tuple[Command, ...] = (
    Command("prompt", "describe",
            "Print the prompt that asks the language model for CLASS_NAME's visual features."),
    Command("parse", "describe",
            'Parse a raw language-model answer into descriptors, one a line.'),
    Command("import", "describe",
            'Import a published descriptor file (DCLIP, WaffleCLIP or CuPL) into a descriptor store.'),
    Command("export", "describe",
            'Write a store in a format other tools read; sentences are the texts eval encodes.'),
    Command("show", "describe",
            "Validate a descriptor store and summarise it, or print one class's descriptors."),
    Command("generate", "generation",
            "Ask a language model for each class's visual features and store the parsed descriptors."),
    Command("eval", "score",
            'Classify a dataset with CLIP and report top-1, top-5, mean per-class recall and entropy; one result file per CLIP.'),
    Command("learn", "learn",
            'Train a learned prompt or adapter on K labelled shots per class, into a run folder for `descgen eval --learned RUN`. Ctrl-C keeps the last finished epoch; --resume continues.'),
    Command("concept", "generation",
            "Ask the language model what the classes have in common (WaffleCLIP's question: 25 class names drawn with seed 0, greedy) and print the concept, for `descgen eval --concept`."),
    Command("datasets", "data",
            "List the dataset cards and which are found under the data root, or print one dataset's class names, one a line, in label order."),
    Command("sweep", "experiments",
            "Run an experiment: generate each setting's descriptors and score them with every method."),
    Command("report", "experiments",
            "Write DIR/report.md (a table per experiment, best row marked) and the study's figures; for a suite, ours beside the published numbers."),
    Command("build", "experiments",
            "One long CSV of evaluations (dataset, model, pretrained, method, setting, seed, n_images, acc1, acc5, mean_per_class_recall), as CLIP_benchmark's build makes it."),
    Command("models", "score",
            "open_clip's MODEL,PRETRAINED pairs (what --model/--pretrained and --models take), the ones whose weights are on this machine marked with *."),
    Command("suite", "experiments",
            'Run methods x benchmark datasets (those found under the data root) and write the table with the published numbers beside ours (a table per CLIP).'),
    Command("base2novel", "experiments",
            "CoCoOp's base-to-novel protocol: train on the base half of each dataset's classes, score the base and the new halves, and report base, new and their harmonic mean."),
    Command("serve", "generation",
            'Run the OpenAI-compatible dev server (canned descriptor answers, no model, no network), so that the whole pipeline runs offline: point --base-url at it.'),
    Command("tiny-clip", "score",
            'Write a tiny random CLIP (a model-config JSON and weights) for a first smoke run of any command in seconds, offline; its numbers mean nothing. Prints the flags that use it.'),
    Command("refer", "visual",
            'Referring expressions by visual prompting: mark each proposal, pick the best-scoring one.'),
    Command("refer-convert", "visual",
            'Convert RefCOCO-family annotations to the JSONL that `descgen refer` reads.'),
    Command("refer-sweep", "visual",
            'Shapes x colours x thickness on a referring-expression set: results JSONL and a report.'),
)
BY_NAME = {c.name: c for c in COMMANDS}


@functools.lru_cache(maxsize=None)
def _module_group(module: str) -> Any:
    """The click command (a group, or one command) built from a command module's typer app."""
    return typer.main.get_command(importlib.import_module(f"descriptor_gen.cli.{module}").app)


def command_of(name: str, ctx: Any = None) -> Any:
    """The click command `name`, its module imported now; None if there is none."""
    entry = BY_NAME.get(name)
    if entry is None:
        return None
    built = _module_group(entry.module)
    if hasattr(built, "get_command"):
        return built.get_command(ctx, name)
    return built if built.name == name else None


class LazyGroup(TyperGroup):
    """The root group: commands listed from `COMMANDS`, each module imported when used."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [c.name for c in COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return command_of(cmd_name, ctx)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        limit = formatter.width - 6 - max(len(c.name) for c in COMMANDS)
        with formatter.section("Commands"):
            formatter.write_dl([(c.name, make_default_short_help(c.summary, limit))
                                for c in COMMANDS])


app = typer.Typer(
    name="descgen",
    cls=LazyGroup,
    help="Describe classes with a language model, then classify images with CLIP by those descriptions.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if not value:
        return
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    typer.echo(f"descgen {__version__} (open_clip {installed('open_clip_torch')}, torch"
               f" {installed('torch')}, openai {installed('openai')}, python {sys.version.split()[0]})")
    raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="Print the versions and exit.")] = False) -> None:
    """Describe classes with a language model, then classify images with CLIP by those descriptions."""


def _fail(message: str) -> int:
    text = redact(" ".join(message.split()).replace(": Value error, ", ": "))
    typer.echo(f"descgen: error: {text}", err=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line and return 2, an interrupt returns 130."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="descgen", standalone_mode=False)
    except click_errors.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message(), err=True)
            return 2
        return _fail(exc.format_message())
    except DescgenError as exc:
        return _fail(str(exc))
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        if exc.filename:
            return _fail(str(no_space(exc.filename)))
        return _fail("no space left on the device of a file it was writing; free some and run"
                     " again (finished work is kept)")
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("descgen: interrupted", err=True)
        return 130
    if result == INTERRUPTED:  # typer turns a KeyboardInterrupt into this code itself; no command returns it
        typer.echo("descgen: interrupted", err=True)
    return result if isinstance(result, int) else 0
