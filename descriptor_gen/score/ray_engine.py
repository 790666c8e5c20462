"""The Ray engine (optional extra `ray`): images as a Ray Dataset, decoded and preprocessed in
CPU tasks, encoded by a pool of actors (`map_batches` over a callable class, so each actor
loads CLIP once), gathered back in input order on the driver.

What crosses the network: the image list (paths, or shard names), the preprocessed pixels from
the decoding tasks to the actors (in Ray's object store), and the features back to the
driver. The feature cache stays where the driver runs, written once every feature is in.
"""

from __future__ import annotations

import contextlib
import logging
import time
import os
import re
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from descriptor_gen.data.images import LabelledImages
from descriptor_gen.errors import DescgenError
from descriptor_gen.machine import usable_cores
from descriptor_gen.score.engine_options import FAULT_ENV, EngineOptions, fault_hook, parse_address
from descriptor_gen.score.features import (
    ClipModel,
    ImageFeatures,
    ImageFiles,
    OnBatch,
    autocast_for,
    encode_batch,
    image_size,
    load_clip,
)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is the part used
    except ImportError as exc:
        raise DescgenError("--engine ray needs Ray Data: pip install -e '.[ray]'"
                           " (or pip install 'ray[data]')") from exc
    return ray


DECODE_CPUS = 0.5  # per decoding task: decoding is light next to the image tower


def check_options(options: EngineOptions, precision: str) -> None:
    """What a Ray run needs that can be known without starting it: Ray installed, GPU actors
    for fp16, and a cluster address that answers."""
    _ray()
    if options.ray_gpus == 0 and precision == "fp16":
        raise DescgenError("--precision fp16 needs GPU actors: give --ray-gpus (e.g. 1)")
    address = options.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)


def start(options: EngineOptions) -> tuple[float, EngineOptions]:
    """Connect to the cluster (`ray_address`, else $RAY_ADDRESS) or start a Ray of this
    machine's own (never one that happens to run here: address `local`); returns the seconds
    it took (0 when Ray was already up in this process) and the options with the actor count
    chosen (on a local Ray: what its CPUs hold, said on stderr)."""
    ray = _ray()
    address = options.ray_address or os.environ.get("RAY_ADDRESS")
    started = time.perf_counter()
    if not ray.is_initialized():
        try:
            with _quiet(), _driver_logs_quiet(attached=bool(address)):
                ray.init(**init_arguments(options, address))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DescgenError(f"Ray: cannot start or reach {address or 'a local Ray'}:"
                               f" {' '.join(str(exc).split())[:160]}") from exc
        ray.data.DataContext.get_current().enable_progress_bars = False
    if not address:
        options = _fitted(options, ray.cluster_resources())
    elif options.ray_actors is None:
        options = options.model_copy(update={"ray_actors": DEFAULT_ACTORS})
    return time.perf_counter() - started, options


def init_arguments(options: EngineOptions, address: str | None) -> dict[str, Any]:
    """`ray.init`'s arguments: a cluster's address, or a local Ray of `--ray-cpus` CPUs, else
    of the usable cores (Ray counts every core of the machine, lowered only to a container's
    quota: not a batch system's affinity, nor a quota of a cgroup nested below the mount)."""
    arguments: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                 "configure_logging": False, "address": address or "local"}
    if not address:
        arguments["num_cpus"] = options.ray_cpus if options.ray_cpus is not None else usable_cores()
    return arguments


DEFAULT_ACTORS = 2
BACKEND_LOG_ENV = "RAY_BACKEND_LOG_LEVEL"


@contextlib.contextmanager
def _driver_logs_quiet(attached: bool) -> Iterator[None]:
    """When attached, the driver's core worker keeps writing to stderr after `encode_ray` returns
    (when a node goes, at exit); its level is read once, at `ray.init`. Only when attaching: a
    local Ray's processes start inside `ray.init` and would inherit the level, losing their log
    files. A level the user set is kept."""
    if not attached or BACKEND_LOG_ENV in os.environ:
        yield
        return
    os.environ[BACKEND_LOG_ENV] = "fatal"
    try:
        yield
    finally:
        os.environ.pop(BACKEND_LOG_ENV, None)


def driver_log() -> Path:
    """Where the driver's native lines go during a Ray run (kept only after a failed run that
    wrote some)."""
    return Path(tempfile.gettempdir()) / f"descgen-ray-driver-{os.getpid()}.log"


@contextlib.contextmanager
def _native_stderr_to(log: Path) -> Iterator[None]:
    """Ray's C++ core worker writes its warnings (an actor-restart notice, the level it read) to
    file descriptor 2, not through Python: for the run, fd 2 goes to `log`, and Python's
    `sys.stderr`, when it wrote to fd 2, to a copy of the terminal, so descgen's lines and bars
    stay where they were. The log is removed after a run that succeeded."""
    sys.stderr.flush()
    python_stream = sys.stderr
    terminal = os.dup(2)
    on_fd2 = _fileno(python_stream) == 2
    if on_fd2:
        sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1,
                               encoding=python_stream.encoding, errors=python_stream.errors)
    with open(log, "ab") as sink:
        os.dup2(sink.fileno(), 2)
    failed = True
    try:
        yield
        failed = False
    finally:
        if on_fd2:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = python_stream
        os.dup2(terminal, 2)
        os.close(terminal)
        with contextlib.suppress(OSError):
            if not failed or log.stat().st_size == 0:  # kept only to explain a failure
                log.unlink()


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def _fitted(options: EngineOptions, resources: dict[str, float]) -> EngineOptions:
    """On a local Ray (no autoscaler) the pool must fit: the actors asked for, else as many as
    its CPUs hold next to a decoding task (at most 2), said on stderr."""
    if options.ray_actors is None:
        room = (resources.get("CPU", 0) - DECODE_CPUS) // options.ray_actor_cpus
        gpus = resources.get("GPU", 0) // options.ray_gpus if options.ray_gpus else DEFAULT_ACTORS
        actors = int(max(1, min(DEFAULT_ACTORS, room, gpus)))
        options = options.model_copy(update={"ray_actors": actors})
        print(f"Ray: a local Ray of {resources.get('CPU', 0):g} CPUs: {actors} encoder"
              f" actor{'s' if actors > 1 else ''} x {options.ray_actor_cpus:g} CPU"
              f" (+{DECODE_CPUS:g} for decoding); --ray-actors to choose", file=sys.stderr)
    _check_fits(resources, options)
    return options


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """Ray waits minutes on an address nobody answers; a plain connect says so in seconds."""
    try:
        where = parse_address(address)
    except ValueError as exc:  # $RAY_ADDRESS is not checked by the options
        raise DescgenError(f"RAY_ADDRESS: {exc}") from exc
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=seconds).close()
    except OSError as exc:
        raise DescgenError(f"Ray: nothing answers at {address} ({exc.strerror or exc});"
                           " start the cluster (ray start --head) or fix --ray-address") from exc


def _check_fits(resources: dict[str, float], options: EngineOptions) -> None:
    """A local Ray has no autoscaler: an actor pool larger than the machine would wait forever."""
    assert options.ray_actors is not None
    cpus = options.ray_actors * options.ray_actor_cpus + DECODE_CPUS
    if resources.get("CPU", 0) < cpus:
        raise DescgenError(f"Ray: {options.ray_actors} actors x {options.ray_actor_cpus:g} CPUs plus"
                           f" {DECODE_CPUS:g} for decoding need {cpus:g} CPUs; the local Ray has"
                           f" {resources.get('CPU', 0):g} (lower --ray-actors or --ray-actor-cpus,"
                           " or raise --ray-cpus)")
    gpus = options.ray_actors * options.ray_gpus
    if resources.get("GPU", 0) < gpus:
        raise DescgenError(f"Ray: {options.ray_actors} actors x {options.ray_gpus:g} GPUs need"
                           f" {gpus:g} GPUs; the local Ray has {resources.get('GPU', 0):g}")


class _Decode:
    """Open and preprocess images as the local engine does (its own `ImageFiles`)."""

    def __init__(self, images: ImageFiles) -> None:
        self.images = images

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = [self.images[int(i)] for i in batch["index"]]
        n = len(decoded)
        return {"index": batch["index"], "pixels": np.stack([t.numpy() for t, _, _ in decoded]),
                "ok": np.array([ok for _, ok, _ in decoded]),
                "error": np.array([why for _, _, why in decoded], dtype=object),
                "label": np.full(n, -1), "key": np.array([""] * n, dtype=object)}


class _DecodeShard:
    """Every sample of one webdataset shard, decoded as the local engine does (its label and
    its name, `SHARD#KEY` with the shard as the source names it, with it)."""

    def __init__(self, preprocess: Any, size: int) -> None:
        self.preprocess, self.size = preprocess, size

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        import webdataset as wds

        from descriptor_gen.data.wds import decode_sample

        out = []
        samples = wds.WebDataset(row["path"], shardshuffle=False, nodesplitter=None,
                                 workersplitter=None, empty_check=False)
        for position, sample in enumerate(samples):
            pixels, ok, error, label = decode_sample(sample, self.preprocess, self.size)
            error = error or ("" if label >= 0 else "no class label")
            out.append({"index": int(row["shard_index"]) * 10_000_000 + position,
                        "pixels": pixels.numpy(), "ok": ok and label >= 0, "error": error,
                        "label": max(label, 0), "key": f"{row['shard']}#{sample['__key__']}"})
        return out


class _Encoder:
    """One actor: loads CLIP once, encodes batches of preprocessed pixels (the local engine's
    own `encode_batch`, so the features are the same)."""

    def __init__(self, model: str, pretrained: str, precision: str, device: str) -> None:
        self.clip = load_clip(model, pretrained, device, precision)
        self.fault = fault_hook()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self.fault()
        images = torch.from_numpy(np.ascontiguousarray(batch["pixels"], np.float32))
        ok = torch.from_numpy(np.asarray(batch["ok"], bool))
        with torch.inference_mode(), autocast_for(self.clip):
            features = encode_batch(self.clip, images, ok)
        return {"index": batch["index"], "features": features, "ok": batch["ok"],
                "error": batch["error"], "label": batch["label"], "key": batch["key"]}


def encode_ray(options: EngineOptions, clip: ClipModel, spec: tuple[str, str, str, str],
               data: LabelledImages, batch_size: int, progress: bool = False,
               on_batch: OnBatch | None = None) -> tuple[ImageFeatures, dict[str, float]]:
    """Features of every image of `data` in input order, computed on Ray; Ray's native driver
    lines go to `driver_log()`, not the terminal."""
    with _native_stderr_to(driver_log()):
        return _encode_ray(options, clip, spec, data, batch_size, progress, on_batch)


def _encode_ray(options: EngineOptions, clip: ClipModel, spec: tuple[str, str, str, str],
                data: LabelledImages, batch_size: int, progress: bool,
                on_batch: OnBatch | None) -> tuple[ImageFeatures, dict[str, float]]:
    model, pretrained, precision, _ = spec
    # Ray shows an actor only its own GPUs, as cuda:0 (and up)
    actor_device = "cuda" if options.ray_gpus > 0 else "cpu"
    check_options(options, precision)
    ray = _ray()
    startup, options = start(options)
    assert options.ray_actors is not None
    model, pretrained = _absolute(model), _absolute(pretrained)
    size = image_size(clip.preprocess)
    if data.shards is not None:
        items = [{"shard_index": i, "shard": s, "path": _absolute(s)}
                 for i, s in enumerate(data.shards)]
        dataset = ray.data.from_items(items).flat_map(_DecodeShard(clip.preprocess, size),
                                                      num_cpus=DECODE_CPUS)
        total = None
    else:
        dataset = ray.data.from_items([{"index": i} for i in range(len(data.paths))])
        paths = data.paths if data.reader is not None else [_absolute(p) for p in data.paths]
        dataset = dataset.map_batches(_Decode(ImageFiles(paths, clip.preprocess, size, data.reader)),
                                      batch_size=batch_size, batch_format="numpy",
                                      num_cpus=DECODE_CPUS)
        total = len(data.paths)
    fault = os.environ.get(FAULT_ENV)
    # Ray Data restarts a dead actor and retries its batch (max_restarts=-1 by default).
    dataset = dataset.map_batches(
        _Encoder, fn_constructor_kwargs={"model": model, "pretrained": pretrained,
                                         "precision": precision, "device": actor_device},
        compute=ray.data.ActorPoolStrategy(size=_pool_size(options.ray_actors, total, batch_size)),
        num_cpus=options.ray_actor_cpus, num_gpus=options.ray_gpus or None,
        batch_size=batch_size, batch_format="numpy",
        runtime_env={"env_vars": {FAULT_ENV: fault}} if fault else None)
    # in input order, so that finished chunks can be checkpointed as they come back
    dataset.context.execution_options.preserve_order = on_batch is not None
    rows: list[dict[str, np.ndarray]] = []
    try:
        with _quiet(), tqdm(total=total, disable=not progress, desc="images (ray)", unit="img") as bar:
            for batch in _watched(dataset.iter_batches(batch_size=None, batch_format="numpy"),
                                  options, ray):
                rows.append(batch)
                bar.update(len(batch["index"]))
                if on_batch is not None and data.shards is None:
                    _tell(on_batch, batch)
    except DescgenError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker failures in its own errors
        raise DescgenError(f"Ray engine: encoding failed ({_root_cause(exc)}); nothing was cached"
                           f" (Ray's own logs: /tmp/ray/session_latest/logs and {driver_log()})") from exc
    return _gather(rows, data), {"ray_startup": round(startup, 4)}


def _watched(batches: Iterator[Any], options: EngineOptions, ray: Any) -> Iterator[Any]:
    """The batches as they come, pulled in a thread of their own; when none comes for
    `ray_stall_seconds` (a node lost with the actor or tasks it held, a pool the cluster
    cannot schedule), the run ends in one line that says what the cluster has."""
    import queue
    import threading

    inbox: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=4)

    def pull() -> None:
        try:
            for batch in batches:
                inbox.put(("batch", batch))
            inbox.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread
            inbox.put(("error", exc))

    threading.Thread(target=pull, name="ray-batches", daemon=True).start()
    while True:
        try:
            kind, item = inbox.get(timeout=options.ray_stall_seconds)
        except queue.Empty:
            why = _resources(ray, options)
            _stop(ray)
            raise DescgenError(f"Ray engine: no batch finished for {options.ray_stall_seconds:g} s"
                               f" ({why}): a node may have been lost or the pool cannot be"
                               " scheduled; finished chunks are kept, run again"
                               " (--ray-stall-seconds waits longer)") from None
        if kind == "done":
            return
        if kind == "error":
            raise item
        yield item


def _stop(ray: Any) -> None:
    """Stop the stalled execution here, not in a thread at exit. The thread still pulling
    batches would, on its next Ray call, start a local Ray of its own (Ray's auto-init): that is
    turned off first, for this process."""
    with contextlib.suppress(ImportError, AttributeError):
        from ray._private import auto_init_hook

        auto_init_hook.enable_auto_connect = False
    with _quiet(), contextlib.suppress(Exception):
        ray.shutdown()


def _resources(ray: Any, options: EngineOptions) -> str:
    try:
        free, total = ray.available_resources(), ray.cluster_resources()
    except Exception:  # noqa: BLE001 - the cluster itself may be gone
        return "the cluster does not answer"
    return (f"the cluster has {free.get('CPU', 0):g} of {total.get('CPU', 0):g} CPUs and"
            f" {free.get('GPU', 0):g} of {total.get('GPU', 0):g} GPUs free; each actor needs"
            f" {options.ray_actor_cpus:g} CPU{f' and {options.ray_gpus:g} GPU' if options.ray_gpus else ''},"
            f" each decoding task {DECODE_CPUS:g}")


def _tell(on_batch: OnBatch, batch: dict[str, np.ndarray]) -> None:
    index = batch["index"]
    first = int(index[0])
    errors = {first + i: str(e) for i, e in enumerate(batch["error"]) if e}
    if np.array_equal(index, np.arange(first, first + len(index))):
        on_batch(first, batch["features"], batch["ok"], errors)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Ray Data's progress lines and warnings are not ours to print; its log files keep them."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for log in loggers:
            log.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels):
                log.setLevel(level)


_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)): (.*)$")


def _root_cause(exc: BaseException) -> str:
    """The worker's own exception as one short line: Ray keeps it only as traceback text inside
    its wrappers (the exception object does not cross the process)."""
    for line in str(exc).splitlines():
        found = _RAISED.match(line)
        if found and not found.group(1).startswith("ray."):
            return f"{found.group(1)}: {found.group(2)[:200]}"
    first = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {first[:200]}"


def _pool_size(actors: int, images: int | None, batch_size: int) -> int:
    """No more actors than batches: an actor without a batch only loads the model."""
    if images is None:
        return actors
    return max(1, min(actors, -(-images // batch_size)))


def _absolute(path: str) -> str:
    """Workers need not share the driver's working directory: local files go as absolute paths
    (on a cluster they must be on a file system every node mounts at the same place)."""
    if "://" in path or not os.path.exists(path):
        return path
    return os.path.abspath(path)


def _gather(rows: list[dict[str, np.ndarray]], data: LabelledImages) -> ImageFeatures:
    if not rows:
        return ImageFeatures(np.zeros((0, 0), np.float16), np.zeros(0, bool), {},
                             [] if data.shards is not None else None,
                             [] if data.shards is not None else None)
    index = np.concatenate([r["index"] for r in rows])
    order = np.argsort(index, kind="stable")
    feats = np.concatenate([r["features"] for r in rows])[order]
    ok = np.concatenate([r["ok"] for r in rows])[order].astype(bool)
    errors_all = np.concatenate([r["error"] for r in rows])[order]
    errors = {i: str(e) for i, e in enumerate(errors_all) if e}
    if data.shards is None:
        if len(feats) != len(data.paths) or not np.array_equal(index[order], np.arange(len(data.paths))):
            raise DescgenError(f"Ray engine: {len(feats)} features came back for"
                               f" {len(data.paths)} images")
        return ImageFeatures(feats, ok, errors)
    labels = [int(x) for x in np.concatenate([r["label"] for r in rows])[order]]
    keys = [str(x) for x in np.concatenate([r["key"] for r in rows])[order]]
    return ImageFeatures(feats, ok, errors, labels, keys)


encode = encode_ray  # the engine interface of score/engines.py
