"""`descgen refer`, `refer-convert`, `refer-sweep`: visual prompting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import output_dir, output_file
from descriptor_gen.paths import CachePaths, results_root
from descriptor_gen.experiments.report import write_refer_report
from descriptor_gen.experiments.specs import load_yaml_model
from descriptor_gen.cli.options import CacheDir, OutFolder, Precision, SetKeys, Wait, write_result

app = typer.Typer(rich_markup_mode=None, add_completion=False)


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
    write_result(out, result)


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
    write_text_atomically(out, "".join(a.model_dump_json() + "\n" for a in anns))
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
