"""`descgen generate`, `concept`, `serve`: asking a language model (and the offline dev server)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer
from pydantic import ValidationError

from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import output_file
from descriptor_gen.paths import RESPONSES, CachePaths
from descriptor_gen.cli.describe import Bank, Detailed, Examples, Instruction, ParserName, PerExample, prompt_options
from descriptor_gen.data.catalog import dataset_classes
from descriptor_gen.describe.classes import load_classes
from descriptor_gen.describe.presets import Preset, load_preset
from descriptor_gen.describe.prompts import PromptLibrary
from descriptor_gen.describe.styles import Style, StyleName, make_style
from descriptor_gen.generation.backends import BACKENDS
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.generation.concept import ask_concept
from descriptor_gen.generation.generate import GenerationJob, generate
from descriptor_gen.generation.resolve import resolve_params
from descriptor_gen.score.neighbours import neighbour_finder
from descriptor_gen.cli.options import CacheDir, DataRoot, Wait, flag_error

app = typer.Typer(rich_markup_mode=None, add_completion=False)


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
        raise flag_error(exc) from exc


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
        raise flag_error(exc) from exc
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
        raise flag_error(exc) from exc
    concept, requests = ask_concept(names, params, ResponseCache(paths.cache_dir / RESPONSES),
                                    paths.prompts_dir, max_attempts)
    typer.echo(concept)
    typer.echo(f"requests sent: {requests}", err=True)


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
