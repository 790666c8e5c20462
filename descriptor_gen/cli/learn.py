"""`descgen learn`: training a learned prompt or adapter."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from descriptor_gen.inputs import future_dir
from descriptor_gen.paths import CachePaths
from descriptor_gen.cli.score import SubsampleFlag
from descriptor_gen.describe.classes import load_classes
from descriptor_gen.learn.methods import LEARNED
from descriptor_gen.cli.options import CacheDir, DataRoot, Workers, flag_error, method_options

app = typer.Typer(rich_markup_mode=None, add_completion=False)


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
    workers: Workers = None,
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
        raise flag_error(exc) from exc
    future_dir(out, "--out")  # made once the run starts: a refused run leaves no folder
    paths = CachePaths.resolve(cache_dir, writable=True)
    bar = sys.stderr.isatty() if progress is None else progress
    info = learn(cfg, out, paths.cache_dir, paths.prompts_dir, resume=resume, progress=bar,
                 epoch_lines=progress is None and not bar)
    typer.echo(f"{info.method}: {info.epochs_done} epochs on {len(info.classes)} classes x"
               f" {info.options['shots']} shots in {info.seconds:.1f} s; run: {out}", err=True)
