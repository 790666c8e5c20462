"""The `descgen` command line: parses flags, calls the stage functions, prints."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer
from pydantic import BaseModel, ValidationError

from descriptor_gen.generation.backends import BACKENDS
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.generation.concept import ask_concept
from descriptor_gen.data.catalog import card_table, dataset_classes
from descriptor_gen.describe.classes import load_classes
from descriptor_gen.atomic import NO_SPACE, no_space, write_atomically
from descriptor_gen.describe.export import EXPORT_FORMATS
from descriptor_gen import __version__
from descriptor_gen.errors import INTERRUPTED, DescgenError
from descriptor_gen.secrets import redact
from descriptor_gen.inputs import future_dir, output_dir, output_file, parse_yaml, read_text, validation_message
from descriptor_gen.score.decode import DECODERS
from descriptor_gen.data.subsample import SUBSAMPLES
from descriptor_gen.score.engine_options import EngineName
from descriptor_gen.score.methods import METHODS
from descriptor_gen.learn.methods import LEARNED
from descriptor_gen.score.evaluate import EvalConfig, EvalResult, evaluate
from descriptor_gen.score.model_list import model_pairs
from descriptor_gen.score.result_file import clip_names, result_name, write_result_file
from descriptor_gen.experiments.plan import (
    SweepIdentity,
    expand_grid,
    plan_cells,
    requests_needed,
    setting_slug,
)
from descriptor_gen.experiments.specs import load_spec, load_yaml_model
from descriptor_gen.experiments.results import done_cells
from descriptor_gen.generation.generate import GenerationJob, generate
from descriptor_gen.generation.resolve import resolve_params
from descriptor_gen.describe.parse import PARSERS
from descriptor_gen.describe.presets import Preset, load_preset
from descriptor_gen.describe.styles import Style, StyleName, make_style
from descriptor_gen.score.neighbours import neighbour_finder
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions, build_prompt
from descriptor_gen.describe.published import import_published
from descriptor_gen.experiments.report import (
    is_suite,
    write_refer_report,
    write_report,
    write_suite_report,
)
from descriptor_gen.paths import RESPONSES, CachePaths, results_root
from descriptor_gen.describe.store import read_store, select_records, summarize_store, write_store

try:  # typer >= 0.22 vendors its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors

app = typer.Typer(
    name="descgen",
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


class ImportFormat(str, Enum):
    dclip = "dclip"
    cupl = "cupl"


class OnEmptyName(str, Enum):
    classname = "classname"
    blank = "blank"
    error = "error"


class MatchBy(str, Enum):
    name = "name"
    order = "order"


ParserName = Enum("ParserName", {name: name for name in PARSERS}, type=str)  # type: ignore[misc]


# Options several commands share.
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="Cache folder (else $DESCRIPTOR_GEN_CACHE, else ~/.cache/descriptor_gen).")]
OutFolder = Annotated[Optional[Path], typer.Option("--out", help="Results folder (default results/NAME).")]
SetKeys = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a spec key, e.g. clip.model=ViT-L-14 (repeatable).")]
Wait = Annotated[bool, typer.Option(
    "--wait", help="If another run is writing the same output, wait for it instead of stopping.")]
SpecModels = Annotated[Optional[list[str]], typer.Option(
    "--model", help="Run the spec with this CLIP instead of its clip.model; repeat for several"
    " (each its own cells and table, in one results folder), paired in order with --pretrained.")]
SpecWeights = Annotated[Optional[list[str]], typer.Option(
    "--pretrained", help="The weights of each --model (one for all), else the spec's.")]
SpecModelEntries = Annotated[Optional[list[str]], typer.Option(
    "--models", help="More CLIPs: MODEL,PRETRAINED, a file of such lines, or a CLIP_benchmark"
    " collection (openai, openclip_base, ...); repeatable.")]
DataRoot = Annotated[Optional[Path], typer.Option(
    "--data-root", help="Folder holding the datasets as their downloads unpack (else $DESCRIPTOR_GEN_DATA).")]


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
        raise _flag_error(exc) from exc


def _flag_error(exc: ValidationError) -> DescgenError:
    """A model's validation error as the flags the user typed, e.g. `--per-example`."""
    return DescgenError(validation_message(exc, flags=True))


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
        raise _flag_error(exc) from exc
    recipe = options.recipe(TextForms.load(CachePaths.resolve().prompts_dir), records)
    data = export_store(records, fmt.value, load_classes(classes) if classes else None,
                        recipe.descriptor, recipe.empty_class_texts, dataset)
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    write_atomically(out, lambda handle: handle.write(text.encode("utf-8")))
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


BackendName = Enum("BackendName", {name: name for name in BACKENDS}, type=str)  # type: ignore[misc]


class Api(str, Enum):
    chat = "chat"
    completions = "completions"



StyleFlag = Enum("StyleFlag", {name: name for name in get_args(StyleName)}, type=str)  # type: ignore[misc]


class CuplArticle(str, Enum):
    cupl = "cupl"
    vowel = "vowel"
    sound = "sound"


def style_from_flags(preset: dict[str, Any], style: Enum | None, questions: str | None,
                     article: Enum | None, neighbours: int | None,
                     example_seed: int | None) -> Style:
    """The prompt style from a preset's and the flags; a flag of another style is an error."""
    chosen: dict[str, Any] = dict(preset)
    if style is not None:
        chosen["name"] = style.value
    name = chosen.get("name", "dclip")
    given = {"questions": questions, "article": article.value if article else None,
             "neighbours": neighbours, "example_seed": example_seed}
    owner = {"questions": "cupl", "article": "cupl", "neighbours": "comparative",
             "example_seed": "comparative"}
    for key, value in given.items():
        if value is None:
            continue
        if owner[key] != name:
            raise DescgenError(f"--{key.replace('_', '-')} is for --style {owner[key]}")
        chosen[key] = value
    try:
        return make_style(chosen)
    except ValidationError as exc:
        raise _flag_error(exc) from exc


@app.command("generate")
def generate_cmd(
    classes: Annotated[Path, typer.Option("--classes", help="Class list, one name a line.")],
    out: Annotated[Path, typer.Option("--out", help="Descriptor store to write or resume (JSONL).")],
    preset: Annotated[Optional[str], typer.Option("--preset", help="A named recipe in prompts/presets/ (dclip: Menon & Vondrick's released prompt and settings); flags given override it.")] = None,
    per_example: PerExample = None,
    detailed: Detailed = None,
    instruction: Instruction = None,
    examples: Examples = None,
    bank: Bank = None,
    backend: Annotated[Optional[BackendName], typer.Option("--backend", help="openai (any OpenAI-compatible server) or hf (local transformers).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model name (openai) or hub name / local folder (hf). Default: gpt-3.5-turbo-instruct for openai.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (else $OPENAI_BASE_URL); several replicas of one model comma-separated, taken in turn.")] = None,
    api: Annotated[Optional[Api], typer.Option("--api", help="chat (messages) or completions (the Q:/A: transcript; default).")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature; 0 is greedy (default 0.7).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Most tokens per answer (default 512: seven detailed sentences fit).")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Answers per class; their descriptors are merged (default 1).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (sample i uses seed + i).")] = None,
    parser: Annotated[Optional[ParserName], typer.Option("--parser", help="How answers become descriptors: default, or dclip (Menon & Vondrick's stringtolist).")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds to wait for one answer (default 120; a connection gets at most 10).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight.")] = 4,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="Tries per request, and answers per class before giving up.")] = 4,
    cache_dir: CacheDir = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start OUT afresh instead of resuming it.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed/--no-retry-failed", help="On a restart, ask again the classes recorded without descriptors (their records are replaced).")] = True,
    wait: Wait = False,
    device: Annotated[Optional[str], typer.Option("--device", help="hf: auto, cpu, cuda, cuda:1, ...")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="hf: auto, fp32, fp16, bf16.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="hf: prompts generated together.")] = None,
    trust_remote_code: Annotated[Optional[bool], typer.Option("--trust-remote-code", help="hf: run the model repository's own code.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    batch_api: Annotated[bool, typer.Option("--batch-api", help="Send the requests through the OpenAI Batch API (half price, up to 24 h).")] = False,
    resume_batch: Annotated[Optional[str], typer.Option("--resume-batch", help="Finish a batch created by an earlier --batch-api run.")] = None,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", help="Batch API: seconds between status checks.")] = 30.0,
    style: Annotated[Optional[StyleFlag], typer.Option("--style", help="Prompts: dclip (one few-shot prompt a class; default), cupl (CuPL's questions), comparative (one question per nearest class).")] = None,
    questions: Annotated[Optional[str], typer.Option("--questions", help="cupl: the question set, a dataset card name (default imagenet: CuPL's released questions).")] = None,
    article: Annotated[Optional[CuplArticle], typer.Option("--article", help="cupl: 'an' before a capital vowel only (cupl, as released), any vowel (vowel, SuS-X's), or by sound; default: vowel for sus-x: sets, else cupl.")] = None,
    neighbours: Annotated[Optional[int], typer.Option("--neighbours", help="comparative: nearest classes asked about per class (default 10).")] = None,
    example_seed: Annotated[Optional[int], typer.Option("--example-seed", help="comparative: seed of the worked examples drawn for each pair (default 42, as released).")] = None,
    clip_model: Annotated[str, typer.Option("--clip-model", help="comparative: the CLIP whose text similarity picks the nearest classes.")] = "ViT-B-32",
    clip_pretrained: Annotated[str, typer.Option("--clip-pretrained", help="comparative: its weights.")] = "openai",
    clip_device: Annotated[str, typer.Option("--clip-device", help="comparative: its device.")] = "auto",
) -> None:
    """Ask a language model for each class's visual features and store the parsed descriptors.

    A re-run with the same command resumes: classes already in OUT are skipped and answers
    already in the cache cost no request. Exit status 3 when some class has no descriptors.
    """
    output_file(out, "--out")
    paths = CachePaths.resolve(cache_dir, writable=True)
    library = PromptLibrary(paths.prompts_dir)
    recipe = load_preset(paths.prompts_dir, preset) if preset else Preset()
    options = prompt_options(library, per_example, detailed, instruction, examples, bank,
                             recipe.prompt)
    names = load_classes(classes)
    chosen_style = style_from_flags(recipe.style, style, questions, article, neighbours,
                                    example_seed)
    chosen_style, neighbour_lists = chosen_style.prepare(names, neighbour_finder(
        paths.cache_dir, clip_model, clip_pretrained, clip_device))
    given = {"backend": backend, "model": model, "base_url": base_url, "api": api,
             "temperature": temperature, "max_tokens": max_tokens, "samples": samples,
             "seed": seed, "parser": parser, "timeout": timeout, "device": device, "dtype": dtype,
             "batch_size": batch_size, "trust_remote_code": trust_remote_code}
    try:
        params = resolve_params(recipe.generation, given)
    except ValidationError as exc:
        raise _flag_error(exc) from exc
    job = GenerationJob(
        classes=names, out=out, options=options, params=params, library=library,
        cache=ResponseCache(paths.cache_dir / RESPONSES),
        concurrency=concurrency, max_attempts=max_attempts, overwrite=overwrite,
        retry_failed=retry_failed, wait=wait, progress=progress,
        batch_api=batch_api, resume_batch=resume_batch, poll_seconds=poll_seconds,
        style=chosen_style, neighbours=neighbour_lists,
    )
    summary = generate(job)
    for line in summary.lines():
        typer.echo(line, err=True)
    if summary.failed or summary.unanswered:
        raise typer.Exit(3)


MethodName = Enum("MethodName", {name: name for name in METHODS}, type=str)  # type: ignore[misc]
EngineFlag = Enum("EngineFlag", {name: name for name in get_args(EngineName)}, type=str)  # type: ignore[misc]


def method_options(pairs: list[str] | None) -> dict[str, Any]:
    """`--option KEY=VALUE` flags as a mapping, each value read as YAML (`repeats=3`,
    `base=waffle`, `seed=[1, 2]`)."""
    out: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DescgenError(f"--option {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_yaml(value, f"--option {item!r}") if value else ""
    return out


class PoolingName(str, Enum):
    auto = "auto"
    mean = "mean"
    renormalised = "renormalised"


DecodeFlag = Enum("DecodeFlag", {name: name for name in DECODERS}, type=str)  # type: ignore[misc]
SubsampleFlag = Enum("SubsampleFlag", {name: name for name in SUBSAMPLES}, type=str)  # type: ignore[misc]


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


@app.command("eval")
def eval_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help="A dataset card (descgen datasets), wds:DIR[:SPLIT], hf:PATH_OR_NAME[:SPLIT], an image folder (sub-folder per class) or a path,label CSV.")],
    classes: Annotated[Optional[Path], typer.Option("--classes", help="Class list, one name a line (default: the dataset's own names; needed for folders and CSVs).")] = None,
    data_root: DataRoot = None,
    descriptors: Annotated[Optional[Path], typer.Option("--descriptors", help="Descriptor store (JSONL).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="open_clip model name, or a model-config JSON path (default: ViT-B-32; with --learned, the run's). Repeat for several CLIPs, each with its --pretrained in order.")] = None,
    pretrained: Annotated[Optional[list[str]], typer.Option("--pretrained", help="open_clip tag, a checkpoint file, or none (default: openai; with --learned, the run's). One for all models, or one per --model.")] = None,
    models: Annotated[Optional[list[str]], typer.Option("--models", help="More CLIPs (CLIP_benchmark's --pretrained_model): MODEL,PRETRAINED, a file of such lines, or a collection (openai, openclip_base, openclip_multilingual, openclip_all); repeatable.")] = None,
    method: Annotated[Optional[MethodName], typer.Option("--method", help="How class vectors are made (default: descriptors): " + "; ".join(f"{n}: {m.summary}" for n, m in METHODS.items()) + ".")] = None,  # type: ignore[valid-type]
    option: Annotated[Optional[list[str]], typer.Option("--option", help="A method option KEY=VALUE (repeatable), e.g. repeats=7, count=15, base=waffle, beta=0.85, source=DIR, shots=8.")] = None,
    concept: Annotated[Optional[str], typer.Option("--concept", help="Name classes as 'A photo of a CONCEPT: a {c}' (WaffleCLIP); card: the dataset card's concept.")] = None,
    descriptor_template: Annotated[str, typer.Option("--descriptor-template", help="Descriptor text: auto, dclip ('{c}, which (is/has) {d}'), dclip-imagenet (the same with a period), waffle, sentence ('{d}'), or a template with {c}, {d}, {which}.")] = "auto",
    classname_template: Annotated[str, typer.Option("--classname-template", help="Class-name text: auto (the method's: clip, or waffle for WaffleCLIP's and Comparative-CLIP's methods), clip ('a photo of a {c}.'), bare ('{c}'), dclip-imagenet ('{c}.'), waffle, or a template with {c}.")] = "auto",
    pooling: Annotated[PoolingName, typer.Option("--pooling", help="Descriptor embeddings: mean (DCLIP), renormalised mean (CuPL), or auto (renormalised for CuPL stores).")] = PoolingName.auto,
    on_empty: Annotated[OnEmptyName, typer.Option("--on-empty", help="A class without descriptors: its class-name text, blank (DCLIP's [''] descriptor), or error.")] = OnEmptyName.classname,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 64,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option("--precision", help="Model precision.")] = Precision.fp32,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 2,
    out: Annotated[Optional[Path], typer.Option("--out", help="The result JSON (CLIP_benchmark's fields and descgen's; default results/eval/DATASET_MODEL_PRETRAINED_METHOD[_STORE].json); with several CLIPs, a folder for one file each.")] = None,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", help="Write one JSON line per image here.")] = None,
    explain: Annotated[int, typer.Option("--explain", help="With --predictions: the K descriptors that drove each prediction.")] = 0,
    explain_figure: Annotated[Optional[Path], typer.Option("--explain-figure", help="With --predictions: draw DCLIP's explanation figure here (.png, .pdf, .svg): each image, its predicted and true (or runner-up) class, their scores and the K descriptors most like it (K: --explain, default 5).")] = None,
    explain_images: Annotated[int, typer.Option("--explain-images", min=1, max=50, help="Images in --explain-figure, half right and half wrong when there are both.")] = 6,
    decode: Annotated[DecodeFlag, typer.Option("--decode", help="pil (open_clip's preprocessing), torch (JPEGs decoded in batches on the eval device, nvJPEG on a GPU) or pil-draft (JPEG draft mode). See the README for their agreement.")] = DecodeFlag.pil,
    learned: Annotated[Optional[Path], typer.Option("--learned", help="Score with a run of descgen learn (CoOp, Tip-Adapter, ...) instead of a method.")] = None,
    subsample: Annotated[SubsampleFlag, typer.Option("--subsample", help="Base-to-novel (CoCoOp's protocol): base, the first ceil(n/2) classes by label; new, the rest, relabelled from 0; all.")] = SubsampleFlag.all,
    engine: Annotated[EngineFlag, typer.Option("--engine", help="Where images are encoded: local, or ray (Ray Data: CPU decoding tasks, a pool of encoder actors; pip install -e '.[ray]'). Same features, same cache.")] = EngineFlag.local,  # type: ignore[attr-defined]
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="An existing Ray cluster (else $RAY_ADDRESS, else a local Ray).")] = None,
    ray_actors: Annotated[Optional[int], typer.Option("--ray-actors", min=1, help="Encoder actors, each loading the model once (default: on a local Ray, as many as its CPUs hold, at most 2; on a cluster 2).")] = None,
    ray_stall_seconds: Annotated[float, typer.Option("--ray-stall-seconds", min=0.001, help="End the run in one line when no batch finishes for this long (a lost node, an unschedulable pool); finished chunks are kept.")] = 600.0,
    ray_gpus: Annotated[float, typer.Option("--ray-gpus", min=0, help="GPUs per encoder actor (0: CPU actors).")] = 0.0,
    ray_cpus: Annotated[Optional[int], typer.Option("--ray-cpus", min=1, help="CPUs of a local Ray started here (default: all).")] = None,
    ray_actor_cpus: Annotated[float, typer.Option("--ray-actor-cpus", help="CPUs each encoder actor reserves (a CPU actor's torch threads).")] = 1.0,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="A bar over the images encoded (default: when stderr is a terminal).")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Classify a dataset with CLIP and report top-1, top-5, mean per-class recall and entropy;
    one result file per CLIP."""
    pairs = _eval_clips(learned, model, pretrained, models, {
        "--method": method, "--option": option, "--descriptors": descriptors, "--concept": concept,
        "--explain": explain, "--explain-figure": explain_figure, "--models": models,
        "--descriptor-template": descriptor_template != "auto",
        "--classname-template": classname_template != "auto",
        "--pooling": pooling != PoolingName.auto, "--on-empty": on_empty != OnEmptyName.classname})
    try:
        configs = [EvalConfig(dataset=dataset, data_root=data_root, descriptors=descriptors,
                              model=name, pretrained=weights,
                              learned=learned, engine=engine.value, ray_address=ray_address,
                              ray_actors=ray_actors, ray_gpus=ray_gpus, ray_cpus=ray_cpus,
                              ray_stall_seconds=ray_stall_seconds,
                              ray_actor_cpus=ray_actor_cpus, options=method_options(option),
                              concept=concept, method=method.value if method else "descriptors",
                              descriptor_template=descriptor_template,
                              classname_template=classname_template, pooling=pooling.value,
                              on_empty=on_empty.value, batch_size=batch_size, device=device,
                              precision=precision.value, workers=workers,
                              explain=explain or (DEFAULT_EXPLAIN if explain_figure else 0),
                              decode=decode.value, subsample=subsample.value)
                   for name, weights in pairs]
    except ValidationError as exc:
        raise _flag_error(exc) from exc
    folder = _result_place(out, predictions, explain_figure, len(configs))
    _check_explain_figure(explain_figure, predictions)
    paths = CachePaths.resolve(cache_dir, writable=True)
    names = load_classes(classes) if classes is not None else None
    for cfg in configs:
        if len(configs) > 1:
            typer.echo(f"{cfg.model} / {cfg.pretrained}:")
        result = evaluate(cfg, names, paths.cache_dir, paths.prompts_dir, predictions=predictions,
                          progress=sys.stderr.isatty() if progress is None else progress,
                          scorer=_learned_scorer(learned))
        for line in eval_lines(result):
            typer.echo(line)
        target = out if folder is None else folder / result_name(result)
        assert target is not None
        write_result_file(target, result, learned=learned is not None)
        typer.echo(f"result: {target}")
        if explain_figure is not None and predictions is not None:
            _draw_explanations(result, cfg.explain, predictions, explain_figure, explain_images)


def _eval_clips(learned: Path | None, model: list[str] | None, pretrained: list[str] | None,
                models: list[str] | None, beside_learned: dict[str, Any]) -> list[tuple[str, str]]:
    """The CLIPs of one eval: those asked for, or a learned run's own (nothing beside it)."""
    if learned is None:
        return model_pairs(model, pretrained, models)
    _nothing_beside_learned(beside_learned)
    from descriptor_gen.learn.run import run_clip  # torch: only for a learned run

    if len(model or []) > 1 or len(pretrained or []) > 1:
        raise DescgenError("--learned: a run is scored with its own CLIP: give at most one --model and"
                           " one --pretrained")
    return [run_clip(learned, (model or [None])[0], (pretrained or [None])[0])]


def _result_place(out: Path | None, predictions: Path | None, figure: Path | None,
                  count: int) -> Path | None:
    """The folder that receives one result file per CLIP (None: `out` is the file), checked
    before any work."""
    if count > 1:
        for value, flag in ((predictions, "--predictions"), (figure, "--explain-figure")):
            if value is not None:
                raise DescgenError(f"{flag} takes one CLIP; {count} were given (--model,"
                                   " --models): run that one alone")
        if out is not None and out.suffix == ".json":
            raise DescgenError(f"--out {out}: with {count} CLIPs, --out names a folder that"
                               " receives one result file per CLIP")
        return output_dir(out or results_root() / "eval", "--out")
    output_file(predictions, "--predictions")
    if out is not None:
        output_file(out, "--out")
        return None
    return output_dir(results_root() / "eval", "results folder")


DEFAULT_EXPLAIN = 5


def _check_explain_figure(figure: Path | None, predictions: Path | None) -> None:
    """Before any work: the figure is drawn from the predictions file, in a format by suffix."""
    if figure is None:
        return
    from descriptor_gen.experiments.explanations import FIGURE_FORMATS

    if predictions is None:
        raise DescgenError("--explain-figure is drawn from the predictions: add --predictions"
                           " FILE.jsonl")
    if figure.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise DescgenError(f"--explain-figure {figure}: the suffix says the format, one of"
                           f" {', '.join('.' + f for f in FIGURE_FORMATS)}")
    output_file(figure, "--explain-figure")


def _draw_explanations(result: EvalResult, k: int, predictions: Path, figure: Path,
                       images: int) -> None:
    from descriptor_gen.experiments.explanations import write_explanation_figure

    model, weights = clip_names(result.model, result.pretrained)
    caption = (f"{result.method} on {Path(result.dataset).name or result.dataset}; CLIP {model} ({weights});"
               f" per class, its score and the {k} descriptors most like the image (100 x cosine)")
    drawn = write_explanation_figure(predictions, figure, caption, images)
    typer.echo(f"explanations of {drawn} images: {figure}")


def _learned_scorer(run: Path | None) -> Any:
    if run is None:
        return None
    from descriptor_gen.learn.run import LearnedScorer

    return LearnedScorer(run)


def eval_lines(result: EvalResult) -> list[str]:
    """What `descgen eval` prints: the metrics in percent (entropy in its own unit; the result
    JSON keeps fractions) as mean ± std over seeds, and zero-shot CLIP beside a learned run."""
    m, sd = result.metrics, result.metrics_std or {}

    def shown(key: str) -> str:
        value = m[key]
        if value is None:
            return "n/a (< 5 classes)"
        spread = sd.get(key)
        if key == "mean_entropy":
            return f"{value:.4f}" + (f" ± {spread:.4f}" if spread is not None else "")
        return f"{100 * value:.2f}%" + (f" ± {100 * spread:.2f}" if spread is not None else "")

    repeats = f"  (mean ± std over {len(result.repeats)} seeds)" if result.repeats else ""
    lines = [f"{result.method}: top-1 {shown('top1')}  top-5 {shown('top5')}  mean per-class"
             f" recall {shown('mean_per_class_recall')}  entropy {shown('mean_entropy')}"
             f"  images {m['n_images']}{repeats}"
             + (f"  ({result.subsample} classes: {result.counts.get('classes')})"
                if result.subsample != "all" else "")]
    if result.zero_shot is not None:
        z = result.zero_shot
        lines.append(f"zero-shot CLIP ({z['text']!r}, same classes and model): top-1"
                     f" {100 * z['top1']:.2f}%  top-5 " + (f"{100 * z['top5']:.2f}%" if z["top5"] is not None
                                                          else "n/a (< 5 classes)"))
    return lines


def _nothing_beside_learned(given: dict[str, Any]) -> None:
    """`--learned` scores with the run's own classifier: flags that choose texts would be ignored."""
    extra = [flag for flag, value in given.items() if value]
    if extra:
        raise DescgenError(f"--learned scores with the run's own classifier; {', '.join(extra)}"
                           " would be ignored: leave " + ("it" if len(extra) == 1 else "them") + " out")


LearnedName = Enum("LearnedName", {name: name for name in LEARNED}, type=str)  # type: ignore[misc]


@app.command("learn")
def learn_cmd(
    method: Annotated[LearnedName, typer.Argument(help="; ".join(f"{n}: {m.summary}" for n, m in LEARNED.items()) + ".")],  # type: ignore[valid-type]
    dataset: Annotated[str, typer.Option("--dataset", help="The training images: a card's train split (food101:train), an image folder, a CSV, wds:DIR:train or hf:...; never the evaluation split.")],
    out: Annotated[Path, typer.Option("--out", help="The run folder to write (or --resume).")],
    classes: Annotated[Optional[Path], typer.Option("--classes", help="Class list (needed for folders and CSVs).")] = None,
    shots: Annotated[int, typer.Option("--shots", min=1, help="Labelled images per class (K).")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shots and of the training.")] = 1,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=0, help="Default: the reference's (CoOp: 50/100/200 by K; CoCoOp 10; PLOT 50; VPT/IVLP/MaPLe 5; Tip-Adapter-F 20; padding 1000).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Default: the reference's.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Default: the reference's.")] = None,
    views: Annotated[int, typer.Option("--views", min=1, help="Augmented views of each shot, encoded once and cached (1: no augmentation).")] = 1,
    option: Annotated[Optional[list[str]], typer.Option("--option", help="A method option KEY=VALUE, e.g. n_ctx=16, ctx_init='a photo of a', csc=true, position=middle, guide=descriptors, weight=8, pad=30, alpha=1.17, beta=1, depth=9 (VPT/MaPLe), depth_text=12, n_prompts=4 (PLOT).")] = None,
    descriptors: Annotated[Optional[Path], typer.Option("--descriptors", help="Descriptor store, for kgcoop's guide or padding's classifier.")] = None,
    subsample: Annotated[SubsampleFlag, typer.Option("--subsample", help="Train on one half of the classes (CoCoOp's base-to-novel protocol; the shots are drawn over all classes, then kept): base, the first ceil(n/2) classes by label; new, the rest, relabelled from 0; all.")] = SubsampleFlag.all,
    data_root: DataRoot = None,
    model: Annotated[str, typer.Option("--model", help="open_clip model name or model-config JSON.")] = "ViT-B-32",
    pretrained: Annotated[str, typer.Option("--pretrained", help="open_clip tag, checkpoint file, or none.")] = "openai",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes.")] = 2,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last finished epoch.")] = False,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="A bar over the epochs (default: when stderr is a terminal; otherwise a line per epoch).")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Train a learned prompt or adapter on K labelled shots per class, into a run folder for
    `descgen eval --learned RUN`. Ctrl-C keeps the last finished epoch; --resume continues."""
    from descriptor_gen.learn.run import LearnConfig, learn

    given = {"shots": shots, "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "views": views}
    options = {**method_options(option), **{k: v for k, v in given.items() if v is not None}}
    try:
        cfg = LearnConfig(method=method.value, dataset=dataset, options=options,
                          classes=load_classes(classes) if classes is not None else None,
                          data_root=data_root, descriptors=descriptors, model=model,
                          pretrained=pretrained, device=device, workers=workers,
                          subsample=subsample.value)
    except ValidationError as exc:
        raise _flag_error(exc) from exc
    future_dir(out, "--out")  # made once the run starts: a refused run leaves no folder
    paths = CachePaths.resolve(cache_dir, writable=True)
    bar = sys.stderr.isatty() if progress is None else progress
    info = learn(cfg, out, paths.cache_dir, paths.prompts_dir, resume=resume, progress=bar,
                 epoch_lines=progress is None and not bar)
    typer.echo(f"{info.method}: {info.epochs_done} epochs on {len(info.classes)} classes x"
               f" {info.options['shots']} shots in {info.seconds:.1f} s; run: {out}", err=True)


@app.command("concept")
def concept_cmd(
    classes: Annotated[Optional[Path], typer.Option("--classes", help="Class list, one name a line.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Or a dataset card / wds:DIR whose classes to use.")] = None,
    data_root: DataRoot = None,
    backend: Annotated[Optional[BackendName], typer.Option("--backend", help="openai or hf.")] = None,  # type: ignore[valid-type]
    model: Annotated[Optional[str], typer.Option("--model", help="Model name (default gpt-3.5-turbo-instruct, the successor of WaffleCLIP's text-davinci-003).")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server.")] = None,
    api: Annotated[Optional[Api], typer.Option("--api", help="chat or completions (default, as WaffleCLIP).")] = None,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="Tries before giving up.")] = 4,
    cache_dir: CacheDir = None,
) -> None:
    """Ask the language model what the classes have in common (WaffleCLIP's question: 25 class
    names drawn with seed 0, greedy) and print the concept, for `descgen eval --concept`."""
    if (classes is None) == (dataset is None):
        raise DescgenError("give --classes FILE or --dataset NAME")
    paths = CachePaths.resolve(cache_dir, writable=True)
    names = (load_classes(classes) if classes is not None
             else dataset_classes(str(dataset), data_root, paths.cache_dir))
    try:  # WaffleCLIP asks the completions API
        params = resolve_params({"api": "completions"}, {"backend": backend, "base_url": base_url,
                                                         "api": api, "model": model})
    except ValidationError as exc:
        raise _flag_error(exc) from exc
    concept, requests = ask_concept(names, params, ResponseCache(paths.cache_dir / RESPONSES),
                                    paths.prompts_dir, max_attempts)
    typer.echo(concept)
    typer.echo(f"requests sent: {requests}", err=True)


@app.command("datasets")
def datasets_cmd(
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]", help="A card name, or wds:DIR / hf:PATH: print its class names.")] = None,
    data_root: DataRoot = None,
) -> None:
    """List the dataset cards and which are found under the data root, or print one dataset's
    class names, one a line, in label order."""
    if name is None:
        for line in card_table(data_root):
            typer.echo(line)
        return
    for class_name in dataset_classes(name, data_root, CachePaths.resolve().cache_dir):
        typer.echo(class_name)


@app.command("sweep")
def sweep_cmd(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Experiment spec (YAML).")],
    out: OutFolder = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only settings with KEY=VALUE (repeatable).")] = None,
    set_: SetKeys = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the grid and the LLM requests it would send.")] = False,
    wait: Wait = False,
    model: SpecModels = None,
    pretrained: SpecWeights = None,
    models: SpecModelEntries = None,
    cache_dir: CacheDir = None,
) -> None:
    """Run an experiment: generate each setting's descriptors and score them with every method."""
    from descriptor_gen.experiments.sweep import run_sweep

    variants = with_clips(load_spec(spec, set_), model, pretrained, models)
    paths = CachePaths.resolve(cache_dir, writable=True)
    folder = out or results_root() / variants[0].name
    if folder.exists() and not folder.is_dir():
        raise DescgenError(f"--out {folder}: is a file, expected a results folder")
    if dry_run:
        for experiment in variants:
            if len(variants) > 1:
                typer.echo(f"CLIP {experiment.clip.model} / {experiment.clip.pretrained}:")
            _dry_run(experiment, folder, paths, only)
        return
    output_dir(folder, "--out")
    for experiment in variants:  # each CLIP loads once; its cells resume as any sweep's
        run_sweep(experiment, folder, paths.cache_dir, paths.prompts_dir, only, wait=wait)
    typer.echo(f"results: {folder / 'results.jsonl'}")
    for path in _with_table(write_report(folder), folder):  # every sweep's, not a step to remember
        typer.echo(str(path))


def with_clips(spec: Any, model: list[str] | None, pretrained: list[str] | None,
               entries: list[str] | None) -> list[Any]:
    """The spec once per CLIP asked for (`--model`/`--pretrained`/`--models`), else as it is."""
    if not (model or pretrained or entries):
        return [spec]
    pairs = model_pairs(model, pretrained, entries, default=(spec.clip.model, spec.clip.pretrained))
    return [spec.model_copy(update={"clip": spec.clip.model_copy(update={"model": m, "pretrained": p})})
            for m, p in pairs]


def _dry_run(experiment: Any, folder: Path, paths: CachePaths, only: list[str] | None) -> None:
    """The grid, the cells already done and the requests a sweep would send."""
    library = PromptLibrary(paths.prompts_dir)
    grid = expand_grid(experiment, library, only)
    for options in grid:
        typer.echo(setting_slug(options))
    ident = SweepIdentity.of(experiment, paths.cache_dir, paths.prompts_dir, ask=False)
    cells = plan_cells(experiment, grid, folder, library, ident)
    done = done_cells(folder / "results.jsonl")
    cache = ResponseCache(paths.cache_dir / RESPONSES)
    needed = requests_needed(experiment, grid, folder, cache, library, ident)
    for entry in experiment.methods:
        typer.echo(f"method: {entry.name}")
    typer.echo(f"{len(grid)} settings x {len(experiment.methods)} methods: {len(cells)} cells,"
               f" {sum(c.id in done for c in cells)} already done;"
               f" LLM requests to send: {needed}")


@app.command("report")
def report_cmd(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A sweep's or a suite's results folder.")],
) -> None:
    """Write DIR/report.md (a table per experiment, best row marked) and the study's figures;
    for a suite, ours beside the published numbers."""
    write = write_suite_report if is_suite(folder) else write_report
    for path in _with_table(write(folder), folder):
        typer.echo(str(path))


def _with_table(written: list[Path], folder: Path) -> list[Path]:
    """The report's files and the folder's long CSV (`descgen build`'s columns)."""
    from descriptor_gen.experiments.table import write_folder_table

    table = write_folder_table(folder)
    return [*written, table] if table is not None else written


@app.command("build")
def build_cmd(
    results: Annotated[list[Path], typer.Argument(metavar="RESULT...", help="Result files of descgen eval or CLIP_benchmark, folders of them, or results folders (results.jsonl) of sweeps, suites and base2novel.")],
    output: Annotated[Path, typer.Option("--output", help="The CSV to write.")] = Path("benchmark.csv"),
) -> None:
    """One long CSV of evaluations (dataset, model, pretrained, method, setting, seed, n_images,
    acc1, acc5, mean_per_class_recall), as CLIP_benchmark's build makes it."""
    from descriptor_gen.experiments.table import table_rows, write_table

    output_file(output, "--output")
    rows = table_rows(results)
    typer.echo(f"{len(rows)} rows: {write_table(rows, output)}")


@app.command("models")
def models_cmd(
    name: Annotated[Optional[str], typer.Argument(metavar="[FILTER]", help="Only pairs whose model or pretrained tag holds this (any case).")] = None,
    here: Annotated[bool, typer.Option("--here", help="Only pairs whose weights are already on this machine.")] = False,
    collections: Annotated[bool, typer.Option("--collections", help="List CLIP_benchmark's collection names and their pairs instead.")] = False,
) -> None:
    """open_clip's MODEL,PRETRAINED pairs (what --model/--pretrained and --models take), the
    ones whose weights are on this machine marked with *."""
    from descriptor_gen.score.model_list import COLLECTIONS, ALL, pretrained_table

    if collections:
        for key, pairs in COLLECTIONS.items():
            typer.echo(f"{key}: {' '.join(f'{m},{p}' for m, p in pairs)}")
        typer.echo(f"{ALL}: every pair below (descgen models)")
        return
    rows = pretrained_table(name, cached_only=here)
    if not rows:
        raise DescgenError(f"no open_clip pair matches {name!r}" if name else
                           "no open_clip weights are on this machine (descgen models lists all)")
    for model, tag, on_disk in rows:
        typer.echo(f"{'*' if on_disk else ' '} {model},{tag}")
    if sys.stdout.isatty():
        typer.echo(f"{len(rows)} pairs; * = weights on this machine", err=True)


@app.command("suite")
def suite_cmd(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Suite spec (YAML): datasets x methods.")],
    out: OutFolder = None,
    set_: SetKeys = None,
    data_root: DataRoot = None,
    cache_dir: CacheDir = None,
    wait: Wait = False,
    model: SpecModels = None,
    pretrained: SpecWeights = None,
    models: SpecModelEntries = None,
) -> None:
    """Run methods x benchmark datasets (those found under the data root) and write the table
    with the published numbers beside ours (a table per CLIP)."""
    from descriptor_gen.experiments.suite import SuiteSpec, run_suite

    suite, folder, paths = _benchmark_spec(spec, SuiteSpec, set_, data_root, cache_dir, out)
    for variant in with_clips(suite, model, pretrained, models):
        run_suite(variant, folder, paths.cache_dir, paths.prompts_dir, wait=wait)
    for path in _with_table(write_suite_report(folder), folder):
        typer.echo(str(path))


def _benchmark_spec(spec: Path, model: type[Any], set_: list[str] | None, data_root: Path | None,
                    cache_dir: Path | None, out: Path | None) -> tuple[Any, Path, CachePaths]:
    """A suite-like spec read with its `--set` keys and `--data-root`, the writable caches,
    and its output folder (`results/NAME` unless `--out`)."""
    loaded = load_yaml_model(spec, model, set_)
    if data_root is not None:
        loaded = loaded.model_copy(update={"data_root": data_root})
    paths = CachePaths.resolve(cache_dir, writable=True)
    return loaded, output_dir(out or results_root() / loaded.name, "--out"), paths


@app.command("base2novel")
def base2novel_cmd(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Base-to-novel spec (YAML): datasets x columns (learned methods trained on the base half per seed, zero-shot methods).")],
    out: OutFolder = None,
    set_: SetKeys = None,
    data_root: DataRoot = None,
    cache_dir: CacheDir = None,
    wait: Wait = False,
) -> None:
    """CoCoOp's base-to-novel protocol: train on the base half of each dataset's classes,
    score the base and the new halves, and report base, new and their harmonic mean."""
    from descriptor_gen.experiments.base2novel import B2NSpec, run_base2novel, write_base2novel_report

    protocol, folder, paths = _benchmark_spec(spec, B2NSpec, set_, data_root, cache_dir, out)
    run_base2novel(protocol, folder, paths.cache_dir, paths.prompts_dir, wait=wait)
    for path in _with_table([write_base2novel_report(folder, protocol)], folder):
        typer.echo(str(path))


@app.command("serve")
def serve_cmd(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (default loopback only).")] = "127.0.0.1",
    latency: Annotated[float, typer.Option("--latency", min=0, max=600, help="Seconds each answer waits (to see progress and concurrency).")] = 0.0,
    answers: Annotated[Optional[Path], typer.Option("--answers", help="Answer these classes with these descriptors: a descriptor store (.jsonl) or a DCLIP-format JSON.")] = None,
) -> None:
    """Run the OpenAI-compatible dev server (canned descriptor answers, no model, no network),
    so that the whole pipeline runs offline: point --base-url at it."""
    from descriptor_gen.generation.devserver import load_answers, serve

    given = load_answers(answers) if answers is not None else {}
    try:
        serve(port, host, latency, given, log=lambda m: typer.echo(m, err=True))
    except OSError as exc:
        raise DescgenError(f"--port {port} on {host}: cannot listen ({exc.strerror or exc});"
                           " choose another --port (0: any free one)") from exc


@app.command("tiny-clip")
def tiny_clip_cmd(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write the model config and weights into.")],
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**31 - 1, help="Seed of the random weights.")] = 0,
) -> None:
    """Write a tiny random CLIP (a model-config JSON and weights) for a first smoke run of any
    command in seconds, offline; its numbers mean nothing. Prints the flags that use it."""
    from descriptor_gen.score.tiny import TINY_CLIP_CONFIG, write_clip_checkpoint

    output_dir(folder, "DIR")
    config, checkpoint = write_clip_checkpoint(folder, "tiny-clip", TINY_CLIP_CONFIG, seed)
    typer.echo(f"--model {config} --pretrained {checkpoint}")


@app.command("refer")
def refer_cmd(
    annotations: Annotated[Path, typer.Option("--annotations", help="JSONL: image, expression, proposals, target (boxes [x, y, w, h]).")],
    images: Annotated[Path, typer.Option("--images", help="Folder the annotation image paths are relative to.")],
    marker: Annotated[str, typer.Option("--marker", help="circle, arrow, box, cross, color_block (CPT's semi-transparent block; --color cpt-red for theirs), crop, blur_outside, grayscale_outside.")] = "circle",
    color: Annotated[str, typer.Option("--color", help="Marker colour, by name or #rrggbb; cpt-red, cpt-blue, cpt-yellow, cpt-purple, cpt-green: CPT's palette.")] = "red",
    thickness: Annotated[float, typer.Option("--thickness", help="Line width as a fraction of the shorter image side.")] = 0.01,
    ensemble: Annotated[Optional[str], typer.Option("--ensemble", help="Comma-separated markers whose scores are averaged, e.g. circle,blur_outside,grayscale_outside.")] = None,
    subtract: Annotated[int, typer.Option("--subtract", help="Subtract each candidate's mean score over Q other expressions (0: off).")] = 0,
    text_template: Annotated[str, typer.Option("--text-template", help="Text with an {expression} field.")] = "This is {expression}",
    model: Annotated[str, typer.Option("--model", help="open_clip model name or model-config JSON.")] = "ViT-L-14",
    pretrained: Annotated[str, typer.Option("--pretrained", help="open_clip tag, checkpoint file, or none.")] = "openai",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option("--precision", help="Model precision.")] = Precision.fp32,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the result JSON here.")] = None,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", help="One JSON line per expression.")] = None,
    save_marked: Annotated[Optional[Path], typer.Option("--save-marked", help="Save the marked images here for inspection.")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Referring expressions by visual prompting: mark each proposal, pick the best-scoring one."""
    from descriptor_gen.score.features import load_clip
    from descriptor_gen.visual.refer import Variant, check_text_template, evaluate_refer, read_annotations

    try:
        check_text_template(text_template)
    except ValueError as exc:
        raise DescgenError(f"--text-template {exc}") from exc
    if subtract < 0:
        raise DescgenError(f"--subtract {subtract}: expected 0 (off) or a number of expressions")
    names = [m.strip() for m in ensemble.split(",")] if ensemble is not None else [marker]
    if not any(names):
        raise DescgenError(f"--ensemble {ensemble!r}: expected marker names separated by commas")
    variants = [Variant(m, color, thickness) for m in names if m]
    for path, flag in ((out, "--out"), (predictions, "--predictions")):
        output_file(path, flag)
    output_dir(save_marked, "--save-marked")
    cache = CachePaths.resolve(cache_dir, writable=True).cache_dir
    anns = read_annotations(annotations, images)
    clip = load_clip(model, pretrained, device, precision.value)
    result = evaluate_refer(anns, images, clip, variants, cache,
                            subtract=subtract, text_template=text_template,
                            predictions=predictions, save_marked=save_marked, model=model,
                            pretrained=pretrained)
    typer.echo(f"accuracy {result.accuracy:.4f}  crop baseline {result.crop_accuracy:.4f}"
               f"  expressions {result.n_expressions}")
    _write_result(out, result)


@app.command("refer-convert")
def refer_convert_cmd(
    refs: Annotated[Path, typer.Option("--refs", help="refs(unc).p or refs(umd).p of RefCOCO, RefCOCO+ or RefCOCOg.")],
    instances: Annotated[Path, typer.Option("--instances", help="The matching instances.json.")],
    out: Annotated[Path, typer.Option("--out", help="Annotation JSONL to write.")],
    split: Annotated[Optional[str], typer.Option("--split", help="Keep one split (val, testA, ...).")] = None,
) -> None:
    """Convert RefCOCO-family annotations to the JSONL that `descgen refer` reads."""
    from descriptor_gen.visual.refer import convert_refcoco

    output_file(out, "--out")
    anns = convert_refcoco(refs, instances, split)
    out.write_text("".join(a.model_dump_json() + "\n" for a in anns))
    typer.echo(f"wrote {len(anns)} expressions to {out}", err=True)


@app.command("refer-sweep")
def refer_sweep_cmd(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Marker ablation spec (YAML).")],
    out: OutFolder = None,
    set_: SetKeys = None,
    cache_dir: CacheDir = None,
    wait: Wait = False,
) -> None:
    """Shapes x colours x thickness on a referring-expression set: results JSONL and a report."""
    from descriptor_gen.score.features import load_clip
    from descriptor_gen.visual.refer import ReferSweepSpec, read_annotations, run_refer_sweep

    sweep = load_yaml_model(spec, ReferSweepSpec, set_)
    folder = output_dir(out or results_root() / sweep.name, "--out")
    cache = CachePaths.resolve(cache_dir, writable=True).cache_dir
    read_annotations(sweep.annotations, sweep.images)
    clip = load_clip(sweep.clip.model, sweep.clip.pretrained, sweep.clip.device, sweep.clip.precision)
    run_refer_sweep(sweep, folder, cache, clip, wait=wait)
    for path in write_refer_report(folder):
        typer.echo(str(path))


def _write_result(out: Path | None, result: BaseModel) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.model_dump_json(indent=2) + "\n")


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
