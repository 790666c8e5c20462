"""`descgen learn`: train a learned method on K shots per class into a run folder, and score
images with a finished run (`descgen eval --learned RUN`).

A run folder holds `run.json` (settings, the CLIP's identity, the classes, progress),
`split.json` (the shots), `log.jsonl` (train loss and accuracy per epoch),
`learned.safetensors` (the learned tensors, once finished) and `checkpoint.json` naming
`checkpoint-<epoch>.safetensors` by its hash (the last finished epoch, for `--resume`), and
`run.json.lock` (one run at a time). Only safetensors are read back:
nothing in a run folder is ever unpickled or executed.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict, Field
from torch.nn import functional as F

from descriptor_gen.models import Model
from descriptor_gen.paths import LEARN_FEATURES
from descriptor_gen.atomic import replace_atomically, write_atomically, write_text_atomically, writing
from descriptor_gen.data.images import LabelledImages
from descriptor_gen.data.subsample import Subsample
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import sha256_file, sha256_text
from descriptor_gen.locks import exclusive, lock_path
from descriptor_gen.machine import loader_workers
from descriptor_gen.inputs import parse_json, read_text
from descriptor_gen.learn.builders import BuildInputs
from descriptor_gen.learn.learners import Learner
from descriptor_gen.learn.methods import LearnedDef, learned
from descriptor_gen.learn.shots import Split, check_apart, few_shot
from descriptor_gen.learn.train import Batches, EpochLog, make_optimiser, optimiser_state, restore_optimiser, train
from descriptor_gen.score.features import (
    ClipModel,
    ImageFiles,
    image_size,
    autocast_for,
    clip_identity,
    load_clip,
)
from descriptor_gen.score.evaluate import ScorerOutput

RUN_FORMAT = "descgen-learned-run/1"


class LearnConfig(Model):
    """What `descgen learn` was asked."""

    model_config = ConfigDict(extra="forbid")

    method: str
    dataset: str
    options: dict[str, Any] = {}
    classes: list[str] | None = None
    data_root: Path | None = None
    descriptors: Path | None = None
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    device: str = "auto"
    workers: int | None = Field(default=None, ge=0)  # None: machine.loader_workers
    encode_batch_size: int = Field(default=64, ge=1)
    subsample: Subsample = "all"


class RunInfo(Model):
    """`run.json`."""

    model_config = ConfigDict(extra="forbid")

    format: str = RUN_FORMAT
    method: str
    options: dict[str, Any]
    recipe: dict[str, Any]
    dataset: str
    source_identity: str
    split: str
    classes: list[str]
    clip: dict[str, str]
    model: str | None = None
    pretrained: str | None = None
    descriptors: dict[str, Any] | None = None
    epochs_done: int = Field(default=0, ge=0)
    finished: bool = False
    seconds: float = 0.0
    subsample: Subsample = "all"

    def run_key(self) -> dict[str, Any]:
        """What makes two runs the same run (progress aside; the CLIP by its identity, `clip`,
        not by how it was named; the half of the classes is in `split` too)."""
        return self.model_dump(exclude={"epochs_done", "finished", "seconds", "model", "pretrained",
                                        "subsample"})


def _write_json(path: Path, data: Any) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")

    replace_atomically(path, write)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    replace_atomically(path, lambda tmp: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, refused in one line when it is anything else (a pickle in
    particular: nothing in it is run)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise DescgenError(f"{path}: no such file (a finished run holds learned.safetensors)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DescgenError(f"{path}: not a safetensors file ({' '.join(str(exc).split())[:80]});"
                           " runs are read from safetensors only, never unpickled") from exc


def _classes_of(split: Split) -> list[str]:
    return split.classes


# -- the shots' features, encoded once ------------------------------------------------------------


def crop_and_flip(clip: ClipModel, smallest: float) -> Any:
    """A random resized crop (area `smallest`-1, bicubic) at the CLIP's size, a horizontal
    flip, and the CLIP's normalisation (Tip-Adapter's cache views: 0.5; dassl's train
    transform: 0.08)."""
    from torchvision import transforms

    normalise = next(t for t in clip.preprocess.transforms if isinstance(t, transforms.Normalize))
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size(clip.preprocess), scale=(smallest, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalise])


DASSL_CROP = 0.08  # dassl's INPUT.RRCROP_SCALE (0.08, 1.0)


class _Views(torch.utils.data.Dataset):
    """Augmented view `view` of each image (random resized crop 0.5-1 and flip, as
    Tip-Adapter's cache), the same for a given (seed, view, image) in any worker."""

    def __init__(self, data: LabelledImages, clip: ClipModel, view: int, seed: int) -> None:
        self.images = ImageFiles(data.paths, crop_and_flip(clip, 0.5), image_size(clip.preprocess),
                                 data.reader)  # read as every image is
        self.view, self.seed = view, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, str]:
        torch.manual_seed(self.seed * 1_000_003 + self.view * 10_007 + index)
        return self.images[index]


def _encode(clip: ClipModel, dataset: torch.utils.data.Dataset, batch_size: int,
            workers: int | None, local: bool = False) -> tuple[np.ndarray, list[str]]:
    from descriptor_gen.learn.deep import encode_image_local

    workers = loader_workers(workers, clip.device, len(dataset), batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    chunks, errors = [], []
    with torch.inference_mode():
        for images, ok, why in loader:
            images = images.to(clip.device)
            feats = (encode_image_local(clip.model, images) if local
                     else clip.model.encode_image(images)).float()
            chunks.append(F.normalize(feats, dim=-1).cpu().numpy())
            errors += [w for w in why if w]
    return np.concatenate(chunks), errors


def shot_features(clip: ClipModel, data: LabelledImages, views: int, seed: int, cache_dir: Path,
                  batch_size: int, workers: int | None, local: bool = False) -> np.ndarray:
    """(views, N, D) fp32 features of the shots ((views, N, 1 + M, D) with `local`: every
    token's): view 0 the plain image when views is 1, else each view augmented; cached under
    the CLIP, the shots, the views and the kind."""
    kind = ["local"] if local else []  # pooled features keep their old keys
    key = sha256_text(json.dumps([clip.identity, data.identity(), views, seed, "rrc0.5-flip", *kind]))
    path = cache_dir / LEARN_FEATURES / f"{key}.npy"
    if path.is_file():
        try:
            found = np.load(path, allow_pickle=False)
            if found.shape[:2] == (views, len(data.paths)):
                return found
        except (ValueError, OSError):
            pass
    out = []
    for view in range(views):
        dataset: torch.utils.data.Dataset = (
            ImageFiles(data.paths, clip.preprocess, image_size(clip.preprocess), data.reader)
            if views == 1 else _Views(data, clip, view, seed))
        feats, errors = _encode(clip, dataset, batch_size, workers, local)
        if errors:
            raise DescgenError(f"{data.spec}: {len(errors)} training images could not be read"
                               f" (first: {errors[0]})")
        out.append(feats)
    stacked = np.stack(out).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: np.save(f, stacked))
    return stacked


# -- building a learner -------------------------------------------------------------------------


def build_learner(info: RunInfo, clip: ClipModel, cache_dir: Path, prompts_dir: Path,
                  features: np.ndarray | None, labels: list[int] | None,
                  saved: dict[str, torch.Tensor] | None = None) -> Learner:
    """The method's module for a run's settings (its `LEARNED` entry's builder): for training
    from the shots' `features`, or for scoring from the run's `saved` tensors."""
    definition = learned(info.method)
    store = Path(info.descriptors["path"]) if info.descriptors else None
    half = ((info.descriptors["subsample"], int(info.descriptors["class_count"]))
            if info.descriptors and "subsample" in info.descriptors else None)
    return definition.build(BuildInputs(info.method, definition.parse(info.options),
                                        info.classes, info.dataset, store, clip, cache_dir,
                                        prompts_dir, features, labels, saved, half))


def learned_tensors(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v for k, v in learner.state_dict().items()}


# -- learn -------------------------------------------------------------------------------------


def _recipe(info_method: str, options: Any, dataset: str) -> dict[str, Any]:
    recipe = learned(info_method).recipe
    epochs = options.epochs if options.epochs is not None else recipe.epochs(options.shots, dataset)
    return {"optimiser": recipe.optimiser, "lr": options.lr or recipe.lr,
            "batch_size": options.batch_size or recipe.batch_size, "epochs": epochs,
            "schedule": recipe.schedule, "source": recipe.source}


def _as_given(spec: str) -> str:
    """A model or weights spec as a run records it: a file by its absolute path, a name as is."""
    path = Path(spec)
    return str(path.resolve()) if path.is_file() else spec


def run_clip(run: Path, model: str | None, pretrained: str | None) -> tuple[str, str]:
    """The CLIP to score a run with: the run's own where a flag is absent (runs before the
    model was recorded: the defaults); a flag that names another CLIP is refused in one line
    that names the run's."""
    info, _ = load_run(run)
    if info.model is None or info.pretrained is None:
        return model or "ViT-B-32", pretrained or "openai"
    chosen = (model or info.model, pretrained or info.pretrained)
    if (model or pretrained) and clip_identity(*chosen, "fp32") != info.clip:
        raise DescgenError(f"--learned {run}: trained with --model {info.model} --pretrained"
                           f" {info.pretrained}, evaluated with --model {chosen[0]} --pretrained"
                           f" {chosen[1]}; give the run's --model and --pretrained (or leave"
                           " both out)")
    return chosen


def _existing(out: Path, info: RunInfo, resume: bool) -> RunInfo | None:
    """The run already in `out` when it is this run; None when `out` holds no run."""
    path = out / "run.json"
    if not path.exists():
        if resume:
            raise DescgenError(f"--resume: {out} holds no run to resume")
        return None
    from descriptor_gen.inputs import validated

    old = validated(RunInfo, parse_json(read_text(path, "run file"), path), path)
    if old.run_key() != info.run_key():
        raise DescgenError(f"{out}: holds another run ({old.method} on {old.dataset}, other"
                           " settings); choose another --out")
    if not old.finished and old.epochs_done and not resume:
        raise DescgenError(f"{out}: an unfinished run ({old.epochs_done} of"
                           f" {info.recipe['epochs']} epochs); give --resume to continue it")
    return old


def learn(cfg: LearnConfig, out: Path, cache_dir: Path, prompts_dir: Path, resume: bool = False,
          progress: bool = True, clip: ClipModel | None = None,
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
          on_done: Callable[[Learner], None] | None = None, epoch_lines: bool = False) -> RunInfo:
    """Train (or finish training) a run in `out`; returns its `run.json`. `on_done` sees the
    trained module before it is saved (tests, benchmarks); `epoch_lines`: a line per epoch to
    `log` (where no bar is drawn: a piped log)."""
    definition = learned(cfg.method)
    options = definition.parse(cfg.options)
    if definition.needs_descriptors(options) and cfg.descriptors is None:
        raise DescgenError(f"{cfg.method} with these options needs --descriptors FILE.jsonl")
    _check_out(out)
    return _learn(cfg, definition, options, out, cache_dir, prompts_dir, resume, progress,
                  clip, log, on_done, epoch_lines)


RUN_LOCK = "run.json"  # the run folder's lock is run.json.lock, inside it


def _check_out(out: Path) -> None:
    """`--out` is a new or empty folder, or one that holds a run (`run.json`, or only the lock
    of a run killed before writing it): a folder of other files is not descgen's to write into."""
    if out.exists() and not out.is_dir():
        raise DescgenError(f"--out {out}: is a file, expected a run folder")
    if out.is_dir() and not (out / "run.json").exists() and any(
            p.name != lock_path(out / RUN_LOCK).name for p in out.iterdir()):
        raise DescgenError(f"--out {out}: holds files but no run of descgen learn (no run.json);"
                           " choose a new or empty folder")


def _epoch_line(log: Callable[[str], None], epochs: int) -> Callable[[EpochLog], None]:
    return lambda e: log(f"epoch {e.epoch + 1}/{epochs}: loss {e.loss:.4f}, train accuracy"
                         f" {100 * e.accuracy:.1f}%, lr {e.lr:.3g}, {e.seconds:.1f} s")


def _learn(cfg: LearnConfig, definition: LearnedDef, options: Any, out: Path, cache_dir: Path,
           prompts_dir: Path, resume: bool, progress: bool, clip: ClipModel | None,
           log: Callable[[str], None], on_done: Callable[[Learner], None] | None,
           epoch_lines: bool = False) -> RunInfo:
    started = time.perf_counter()
    split, shots = few_shot(cfg.dataset, cfg.classes, options.shots, options.seed, cache_dir,
                            cfg.data_root, cfg.subsample)
    clip = clip or load_clip(cfg.model, cfg.pretrained, cfg.device, "fp32")
    clip.model.requires_grad_(False)
    descriptors = None
    if cfg.descriptors is not None and definition.needs_descriptors(options):
        from descriptor_gen.describe.store import check_against_classes, read_store

        records = read_store(cfg.descriptors)
        check_against_classes(records, split.all_classes or split.classes, cfg.descriptors)
        if not any(r.descriptors for r in records):
            raise DescgenError(f"{cfg.descriptors}: no class has descriptors; {cfg.method} with"
                               " these options is guided by them")
        descriptors = {"path": str(cfg.descriptors.resolve()), "sha256": sha256_file(cfg.descriptors)}
        if split.all_classes is not None:  # a store over all classes, read for one half
            descriptors.update(subsample=split.subsample, class_count=len(split.all_classes))
    info = RunInfo(method=cfg.method, options=options.model_dump(),
                   recipe=_recipe(cfg.method, options, cfg.dataset), dataset=cfg.dataset,
                   source_identity=split.source_identity, split=split.identity(),
                   classes=split.classes, clip=clip_identity(cfg.model, cfg.pretrained, "fp32"),
                   model=_as_given(cfg.model), pretrained=_as_given(cfg.pretrained),
                   descriptors=descriptors, subsample=cfg.subsample)
    old = _existing(out, info, resume)
    if old is not None and old.finished:
        log(f"{out}: already trained ({old.method}, {old.epochs_done} epochs)")
        return old
    features = None
    if not definition.pixels:
        features = shot_features(clip, shots, options.views, options.seed, cache_dir,
                                 cfg.encode_batch_size, cfg.workers, definition.local)
    labels = [s.label for s in split.items]
    learner = build_learner(info, clip, cache_dir, prompts_dir, features, labels)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out / RUN_LOCK):
        _check_out(out)  # again, now that no other run can write it
        old = _existing(out, info, resume)
        if old is not None and old.finished:
            log(f"{out}: already trained ({old.method}, {old.epochs_done} epochs)")
            return old
        return _train_run(cfg, definition, options, info, old, learner, clip, shots, features,
                          labels, split, out, started, progress, on_done, log, epoch_lines)


def _train_run(cfg: LearnConfig, definition: LearnedDef, options: Any, info: RunInfo,
               old: RunInfo | None, learner: Learner, clip: ClipModel, shots: LabelledImages,
               features: np.ndarray | None, labels: list[int], split: Split, out: Path,
               started: float, progress: bool, on_done: Callable[[Learner], None] | None,
               log: Callable[[str], None], epoch_lines: bool = False) -> RunInfo:
    epochs = int(info.recipe["epochs"])
    on_epoch = _epoch_line(log, epochs) if epoch_lines else None
    params = [p for p in learner.parameters() if p.requires_grad]
    optimiser = make_optimiser(definition.recipe, params, float(info.recipe["lr"]))
    split.save(out / "split.json")
    start = 0
    if old is not None and old.epochs_done:
        start = restore_checkpoint(out, learner, optimiser, epochs)
        log(f"{out}: resuming after epoch {start} of {epochs}")
    _write_json(out / "run.json", info.model_copy(update={"epochs_done": start}).model_dump())
    logs_path = out / "log.jsonl"
    _keep_log(logs_path, start)

    def save(done: int, logs: list[EpochLog]) -> None:
        # the epoch's log line first (a resume drops lines past its checkpoint), then the
        # checkpoint as one unit: its tensors under a new name, then the JSON naming them
        with writing(logs_path), open(logs_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(logs[-1])) + "\n")
        tensors, rest = optimiser_state(optimiser) if optimiser is not None else ({}, {})
        write_checkpoint(out, done, {**learned_tensors(learner), **tensors}, rest)
        _write_json(out / "run.json", info.model_copy(update={"epochs_done": done}).model_dump())

    if epochs and optimiser is not None and start < epochs:
        batches = training_batches(cfg.method, clip, shots, features, labels, options.seed)
        step_loss = learner.image_loss if definition.pixels else None
        train(learner, batches, definition.recipe, float(info.recipe["lr"]), epochs,
              int(info.recipe["batch_size"]), options.seed, start, optimiser, save,
              warmup_steps=getattr(options, "warmup", 0), progress=progress, step_loss=step_loss,
              on_epoch=on_epoch)
    if on_done is not None:
        on_done(learner)
    save_tensors(out / "learned.safetensors", learned_tensors(learner))
    done = info.model_copy(update={"epochs_done": epochs, "finished": True,
                                   "seconds": round(time.perf_counter() - started, 3)})
    _write_json(out / "run.json", done.model_dump())
    return done


CHECKPOINT = "checkpoint.json"
_TENSORS = re.compile(r"^checkpoint-(\d+)\.safetensors$")  # a plain name inside the run


class Checkpoint(Model):
    """`checkpoint.json`: the last finished epoch, the optimiser's non-tensor state, and the
    tensor file written for that epoch with its hash (so that a file from another epoch, left
    by a kill between the two writes, is never taken for it)."""

    model_config = ConfigDict(extra="forbid")

    epochs_done: int = Field(ge=1)
    optimiser: dict[str, Any]
    tensors: str = Field(pattern=_TENSORS.pattern)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


def write_checkpoint(out: Path, done: int, tensors: dict[str, torch.Tensor],
                     optimiser: dict[str, Any]) -> None:
    """Tensors to `checkpoint-<epoch>.safetensors`, then `checkpoint.json` naming them (each
    replaced atomically), then the older tensor files removed: a kill at any point leaves a
    JSON that names a whole file of its own epoch."""
    name = f"checkpoint-{done}.safetensors"
    save_tensors(out / name, tensors)
    _write_json(out / CHECKPOINT, Checkpoint(epochs_done=done, optimiser=optimiser, tensors=name,
                                             sha256=sha256_file(out / name)).model_dump())
    for old in out.glob("checkpoint-*.safetensors"):
        if old.name != name and _TENSORS.fullmatch(old.name):
            old.unlink(missing_ok=True)


def restore_checkpoint(out: Path, learner: Learner, optimiser: torch.optim.Optimizer | None,
                       epochs: int) -> int:
    """Load the checkpoint into the learner and optimiser; returns the epochs done. Anything
    that does not belong to this run (a JSON out of schema or range, a tensor file of another
    epoch, missing, misnamed, misshapen or non-finite tensors) is refused in one line."""
    from descriptor_gen.inputs import validated

    path = out / CHECKPOINT
    state = validated(Checkpoint, parse_json(read_text(path, "checkpoint"), path), path)
    if state.epochs_done > epochs:
        raise DescgenError(f"{path}: epochs_done {state.epochs_done} is past the run's {epochs}"
                           " epochs; not a checkpoint of this run")
    tensor_file = out / state.tensors
    if not tensor_file.is_file() or sha256_file(tensor_file) != state.sha256:
        raise DescgenError(f"{path}: its tensor file {state.tensors} is missing or is not the one"
                           " it was written with; start the run again without --resume")
    tensors = load_tensors(tensor_file)
    own = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    check_tensors(tensor_file, own, learner)
    device = next(iter(learner.state_dict().values())).device
    learner.load_state_dict({k: v.to(device) for k, v in own.items()}, strict=False)
    if optimiser is not None:
        try:
            restore_optimiser(optimiser, tensors, state.optimiser)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise DescgenError(f"{path}: the optimiser's state does not fit this run"
                               f" ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})") from exc
    return state.epochs_done


def check_tensors(path: Path, tensors: dict[str, torch.Tensor], learner: Learner) -> None:
    """The learner's own tensors, each of its shape and finite."""
    expected = learned_tensors(learner)
    names = set(tensors) & set(expected)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise DescgenError(f"{path}: holds {sorted(tensors)[:4]}, expected {sorted(expected)[:4]}"
                           f" ({'missing ' + missing[0] if missing else 'unknown ' + extra[0]})")
    for name in sorted(names):
        if tuple(tensors[name].shape) != tuple(expected[name].shape):
            raise DescgenError(f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)},"
                               f" the run's settings make {tuple(expected[name].shape)}")
        if tensors[name].is_floating_point() and not bool(torch.isfinite(tensors[name]).all()):
            raise DescgenError(f"{path}: tensor {name!r} holds NaN or infinite values")


def _keep_log(path: Path, start: int) -> None:
    """The log of the epochs before `start` (a new run: empty)."""
    if start == 0 or not path.is_file():
        write_text_atomically(path, "")
        return
    kept = []
    for line in read_text(path, "training log").split("\n"):
        try:
            if line.strip() and int(json.loads(line)["epoch"]) < start:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line
    write_text_atomically(path, "".join(f"{line}\n" for line in kept))


def training_batches(method: str, clip: ClipModel, shots: LabelledImages,
                     features: np.ndarray | None, labels: list[int], seed: int) -> Batches:
    """A method's training batches: the shots' cached features, or (a method that learns on
    pixels) the images, augmented as its recipe says, each crop a function of (seed, epoch,
    image)."""
    label_tensor = torch.tensor(labels, dtype=torch.long, device=clip.device)
    definition = learned(method)
    if definition.pixels:
        augment = definition.recipe.augment == "dassl"
        transform = crop_and_flip(clip, DASSL_CROP) if augment else clip.preprocess
        images = ImageFiles(shots.paths, transform, image_size(clip.preprocess), shots.reader)

        def load(index: torch.Tensor, _: torch.Tensor, epoch: int) -> torch.Tensor:
            if not augment:
                return torch.stack([images[int(i)][0] for i in index]).to(clip.device)
            out = []
            with torch.random.fork_rng(devices=[]):  # each image's crop: a function of (seed, epoch, image)
                for i in index:
                    torch.manual_seed(seed * 1_000_003 + epoch * 10_007 + int(i))
                    out.append(images[int(i)][0])
            return torch.stack(out).to(clip.device)

        return Batches(load, label_tensor, 1)
    assert features is not None
    cached = torch.from_numpy(features).to(clip.device)
    return Batches(lambda index, view, _: cached[view.to(clip.device), index.to(clip.device)],
                   label_tensor, cached.shape[0])


def reencoding_batches(clip: ClipModel, shots: LabelledImages, labels: list[int]) -> Batches:
    """The straightforward way, for the benchmark: every step encodes its images again."""
    images = ImageFiles(shots.paths, clip.preprocess, image_size(clip.preprocess), shots.reader)

    def encode(index: torch.Tensor, _: torch.Tensor, __: int) -> torch.Tensor:
        batch = torch.stack([images[int(i)][0] for i in index]).to(clip.device)
        with torch.no_grad():
            return F.normalize(clip.model.encode_image(batch).float(), dim=-1)

    return Batches(encode, torch.tensor(labels, dtype=torch.long, device=clip.device), 1)


# -- scoring with a run -------------------------------------------------------------------------


def load_run(run: Path) -> tuple[RunInfo, Split]:
    from descriptor_gen.inputs import validated

    if not run.is_dir():
        raise DescgenError(f"--learned {run}: no such run folder")
    info = validated(RunInfo, parse_json(read_text(run / "run.json", "run file"), run / "run.json"),
                     run / "run.json")
    if info.format != RUN_FORMAT:
        raise DescgenError(f"{run / 'run.json'}: format {info.format!r}, expected {RUN_FORMAT}")
    if not info.finished:
        raise DescgenError(f"--learned {run}: training stopped after {info.epochs_done} of"
                           f" {info.recipe.get('epochs')} epochs; finish it with descgen learn --resume")
    return info, Split.load(run / "split.json")


def learned_scores(run: Path, clip: ClipModel, clip_spec: dict[str, str], classes: list[str],
                   data: LabelledImages, image_features: np.ndarray, cache_dir: Path,
                   prompts_dir: Path, batch_size: int,
                   workers: int | None) -> tuple[np.ndarray, RunInfo]:
    """(N, C) scores of a finished run on the evaluated images (features of the plain images;
    padding encodes the images again with its border). `clip_spec`: the evaluating CLIP's
    identity, which must be the run's (precision aside)."""
    info, split = load_run(run)
    same = {k: v for k, v in clip_spec.items() if k != "precision"}
    if {k: v for k, v in info.clip.items() if k != "precision"} != same:
        trained = (f"--model {info.model} --pretrained {info.pretrained}" if info.model
                   else f"CLIP {info.clip['model']} / {info.clip['weights']}")
        raise DescgenError(f"--learned {run}: trained with {trained}, evaluated with"
                           f" {same['model']} / {same['weights']}; give the run's --model and"
                           " --pretrained")
    check_apart(split, data)
    tensors = load_tensors(run / "learned.safetensors")
    absent = [k for k in learned(info.method).tensors if k not in tensors]
    if absent:
        raise DescgenError(f"{run / 'learned.safetensors'}: no tensor {absent[0]!r} for {info.method}")
    if list(classes) != info.classes:
        info, tensors = _for_other_classes(run, info, list(classes), tensors)
    learner = build_learner(info, clip, cache_dir, prompts_dir, None, None, saved=tensors)
    own = learner.state_dict()
    tensors.update({k: own[k] for k in learned(info.method).class_tensors})
    check_tensors(run / "learned.safetensors", tensors, learner)
    learner.load_state_dict({k: v.to(clip.device) for k, v in tensors.items()}, strict=True)
    learner.eval()
    with torch.no_grad(), autocast_for(clip):
        if learned(info.method).pixels or learned(info.method).local:
            return _image_scores(learner, clip, data, batch_size, workers), info
        feats = torch.from_numpy(np.array(image_features, np.float32)).to(clip.device)
        out = [learner.logits(feats[i : i + 256]).float().cpu().numpy()
               for i in range(0, len(feats), 256)]
    return np.concatenate(out) if out else np.zeros((0, len(classes)), np.float32), info


def _for_other_classes(run: Path, info: RunInfo, classes: list[str],
                       tensors: dict[str, torch.Tensor]) -> tuple[RunInfo, dict[str, torch.Tensor]]:
    """A run scoring classes it was not trained on (base to new, another dataset): its module
    is rebuilt for them, the class-made tensors left to be made again; refused for a method
    whose learned tensors belong to the trained classes."""
    definition = learned(info.method)
    if not definition.transfers(definition.parse(info.options)):
        raise DescgenError(f"--learned {run}: {info.method} with these options learned tensors"
                           f" of its {len(info.classes)} trained classes and cannot score other"
                           f" classes (the evaluated data has {len(classes)}: first"
                           f" {classes[:1]} vs {info.classes[:1]})")
    kept = {k: v for k, v in tensors.items() if k not in definition.class_tensors}
    return info.model_copy(update={"classes": classes}), kept


@dataclass(frozen=True)
class LearnedScorer:
    """A finished run as the image scorer of `score.evaluate.evaluate` (`--learned RUN`)."""

    run: Path

    def __call__(self, clip: ClipModel, clip_spec: dict[str, str], classes: list[str],
                 data: LabelledImages, image_features: np.ndarray, cache_dir: Path,
                 prompts_dir: Path, batch_size: int, workers: int | None) -> ScorerOutput:
        scores, info = learned_scores(self.run, clip, clip_spec, classes, data, image_features,
                                      cache_dir, prompts_dir, batch_size, workers)
        return ScorerOutput(scores, f"learned:{info.method}",
                      {**info.options, "run": str(self.run), "recipe": info.recipe})


def _image_scores(learner: Any, clip: ClipModel, data: LabelledImages, batch_size: int,
                   workers: int | None) -> np.ndarray:
    if data.shards is not None:
        raise DescgenError(f"{data.spec}: a {type(learner).__name__.lower()} run encodes the images"
                           " again through its prompts; webdataset sources are not supported for it")
    dataset = ImageFiles(data.paths, clip.preprocess, image_size(clip.preprocess), data.reader)
    workers = loader_workers(workers, clip.device, len(dataset), batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    out = []
    for images, _, _ in loader:
        out.append(learner.logits(learner.encode(images.to(clip.device))).float().cpu().numpy())
    return np.concatenate(out)
