"""The result file of one evaluation, in CLIP_benchmark's shape: its fields (`dataset`, `model`,
`pretrained`, `task`, `metrics: {acc1, acc5, mean_per_class_recall}`, `language`) at the top,
descgen's provenance beside them. Files written before (metrics `top1`/`top5`) read the same."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, ValidationError

from descriptor_gen.models import Model
from descriptor_gen.atomic import write_text_atomically
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import parse_json, read_text, validation_message

if TYPE_CHECKING:
    from descriptor_gen.score.evaluate import EvalResult

TASK = "zeroshot_classification"
LEARNED_TASK = "fewshot_classification"  # a run of descgen learn: not zero-shot
LANGUAGE = "en"
# descgen's metric names -> CLIP_benchmark's (the others are the same or descgen's own)
BENCHMARK_NAMES = {"top1": "acc1", "top5": "acc5"}
OURS = {theirs: ours for ours, theirs in BENCHMARK_NAMES.items()}


def benchmark_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """`top1`/`top5` renamed `acc1`/`acc5`, CLIP_benchmark's keys first."""
    renamed = {BENCHMARK_NAMES.get(k, k): v for k, v in metrics.items()}
    first = [k for k in ("acc1", "acc5", "mean_per_class_recall") if k in renamed]
    return {**{k: renamed[k] for k in first}, **{k: v for k, v in renamed.items() if k not in first}}


def result_document(result: EvalResult, learned: bool = False) -> dict[str, Any]:
    """The JSON of one evaluation: CLIP_benchmark's fields first, then descgen's."""
    data = result.model_dump(mode="json")
    head = {"dataset": data.pop("dataset"), "model": data.pop("model"),
            "pretrained": data.pop("pretrained"), "task": LEARNED_TASK if learned else TASK,
            "metrics": benchmark_metrics(data.pop("metrics")), "language": LANGUAGE}
    if data.get("metrics_std"):
        data["metrics_std"] = benchmark_metrics(data["metrics_std"])
    data["repeats"] = [benchmark_metrics(r) for r in data.get("repeats") or []]
    return {**head, **data}


def write_result_file(path: Path, result: EvalResult, learned: bool = False) -> None:
    """All or nothing: an interrupted write leaves the last complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result_document(result, learned), indent=2) + "\n"
    write_text_atomically(path, text)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "x"


def dataset_slug(spec: str) -> str:
    """A card's name as it is; `wds/NAME` by NAME; `wds:DIR` by its folder; a folder or CSV by
    its name."""
    if spec.startswith("wds/"):  # CLIP_benchmark's name, as its own result files slug it
        return _slug(spec[len("wds/"):].partition(":")[0].replace("/", "-"))
    if spec.startswith(("wds:", "hf:")):
        kind, _, rest = spec.partition(":")
        return _slug(f"{kind}-{Path(rest.split(':')[0].rstrip('/')).name or rest}")
    if os.sep in spec or "/" in spec or os.path.exists(spec):
        return _slug(Path(spec.rstrip("/")).stem)
    return _slug(spec)


def clip_names(model: str, pretrained: str) -> tuple[str, str]:
    """A CLIP as CLIP_benchmark names it: a weights file by its name; a model config by its stem."""
    shown_model = Path(model).stem if model.endswith(".json") else model
    return shown_model, Path(pretrained).name if os.path.isfile(pretrained) else pretrained


def model_slugs(model: str, pretrained: str) -> tuple[str, str]:
    """`clip_names`, as they go into a file name."""
    shown_model, shown_weights = clip_names(model, pretrained)
    return _slug(shown_model), _slug(shown_weights)


def result_name(result: EvalResult) -> str:
    """`DATASET_MODEL_PRETRAINED_METHOD[_STORE][_HALF].json`: what tells evaluations apart
    (options of one method and store are not in the name: give `--out` to keep both)."""
    model, weights = model_slugs(result.model, result.pretrained)
    parts = [dataset_slug(result.dataset), model, weights, _slug(result.method)]
    if result.descriptor_file:
        parts.append(_slug(Path(result.descriptor_file).stem))
    if result.subsample != "all":
        parts.append(result.subsample)
    return "_".join(parts) + ".json"


class ResultFile(Model):
    """What a table reads from a result file: descgen's (either vintage) or CLIP_benchmark's."""

    model_config = ConfigDict(extra="allow")

    dataset: str
    model: str
    pretrained: str
    metrics: dict[str, Any]
    task: str = TASK
    language: str = LANGUAGE
    method: str | None = None

    def metric(self, name: str) -> Any:
        """A metric by CLIP_benchmark's name, also in a file that used descgen's old one."""
        if name in self.metrics:
            return self.metrics[name]
        return self.metrics.get(OURS.get(name, name))


def read_result_file(path: Path) -> ResultFile:
    data = parse_json(read_text(path, "result file"), path)
    try:
        return ResultFile.model_validate(data)
    except ValidationError as exc:
        raise DescgenError(f"{path}: not a result file of descgen eval or CLIP_benchmark"
                           f" ({validation_message(exc)})") from exc
