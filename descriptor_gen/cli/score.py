"""`descgen eval`, `models`, `tiny-clip`: scoring a dataset with CLIP."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer
from pydantic import ValidationError

from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import output_dir, output_file
from descriptor_gen.paths import CachePaths, results_root
from descriptor_gen.data.subsample import SUBSAMPLES
from descriptor_gen.describe.classes import load_classes
from descriptor_gen.score.decode import DECODERS
from descriptor_gen.score.engine_options import EngineName
from descriptor_gen.score.evaluate import EvalConfig, EvalResult, evaluate
from descriptor_gen.score.methods import METHODS
from descriptor_gen.score.model_list import model_pairs
from descriptor_gen.score.result_file import clip_names, result_name, write_result_file
from descriptor_gen.cli.options import (
    CacheDir,
    DataRoot,
    OnEmptyName,
    Precision,
    Workers,
    flag_error,
    method_options,
)

app = typer.Typer(rich_markup_mode=None, add_completion=False)


MethodName = Enum("MethodName", {name: name for name in METHODS}, type=str)  # type: ignore[misc]


EngineFlag = Enum("EngineFlag", {name: name for name in get_args(EngineName)}, type=str)  # type: ignore[misc]


class PoolingName(str, Enum):
    auto = "auto"
    mean = "mean"
    renormalised = "renormalised"


DecodeFlag = Enum("DecodeFlag", {name: name for name in DECODERS}, type=str)  # type: ignore[misc]


SubsampleFlag = Enum("SubsampleFlag", {name: name for name in SUBSAMPLES}, type=str)  # type: ignore[misc]


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
    workers: Workers = None,
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
    ray_cpus: Annotated[Optional[int], typer.Option("--ray-cpus", min=1, help="CPUs of a local Ray started here (default: the usable cores).")] = None,
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
        raise flag_error(exc) from exc
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
