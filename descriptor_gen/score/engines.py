"""Where image features are computed: `local` (a DataLoader on this machine) or `ray` (Ray
Data: decoding as CPU tasks, the image tower in a pool of actors that each load the model
once, on one machine or a cluster). Both give the same features in the same order and write
the same feature cache under the same key; the engine is not part of any identity.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from descriptor_gen.data.datasets import LabelledImages
from descriptor_gen.score.features import (
    CLIP_VIEW,
    ClipModel,
    ImageFeatures,
    ImageView,
    OnBatch,
    encode_images,
    encode_stream,
)

EngineName = Literal["local", "ray"]
FAULT_ENV = "DESCRIPTOR_GEN_RAY_FAULT"  # tests: a marker path (one worker dies) or `raise`


class EngineOptions(BaseModel):
    """How to run the image encoder.

    Attributes:
        engine: `local` or `ray`.
        ray_address: an existing cluster (else $RAY_ADDRESS, else a local Ray on this machine).
        ray_actors: encoder actors (each loads the model once); None: on a local Ray, as many
            as its CPUs hold (at most 2), on a cluster 2.
        ray_gpus: GPUs per actor (0: CPU actors).
        ray_actor_cpus: CPUs each actor reserves (its torch threads on a CPU actor).
        ray_cpus: CPUs of a local Ray started here (None: all).
        ray_stall_seconds: a run in which no batch finishes for this long ends in one line
            (a lost node, a pool the cluster cannot schedule); finished chunks are kept.
    """

    model_config = ConfigDict(extra="forbid")

    engine: EngineName = "local"
    ray_address: str | None = None
    ray_actors: int | None = Field(default=None, ge=1)
    ray_gpus: float = Field(default=0.0, ge=0)
    ray_actor_cpus: float = Field(default=1.0, gt=0)
    ray_cpus: int | None = Field(default=None, ge=1)
    ray_stall_seconds: float = Field(default=600.0, gt=0, allow_inf_nan=False)

    @field_validator("ray_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value


def parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address (`HOST:PORT`, `ray://HOST:PORT`); None for `auto` and
    `local`, which Ray resolves itself. A malformed one is a ValueError."""
    if address in ("auto", "local"):
        return None
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def check_engine(options: EngineOptions, precision: str) -> None:
    """What the chosen engine needs, checked before the feature cache is looked at, so that a
    wrong flag is refused whether or not the features are cached."""
    if options.engine == "ray":
        from descriptor_gen.score.ray_engine import check_options

        check_options(options, precision)


def encode(options: EngineOptions, clip: ClipModel, spec: tuple[str, str, str, str],
           data: LabelledImages, batch_size: int, workers: int, progress: bool = False,
           on_batch: OnBatch | None = None,
           view: ImageView = CLIP_VIEW) -> tuple[ImageFeatures, dict[str, float]]:
    """The source's features by the chosen engine, and the engine's own timings (Ray's start-up).

    Args:
        spec: (model, pretrained, precision, device) as `load_clip` takes them, for actors that
            load the model themselves.
        on_batch: told each batch of a file list in input order, as it is done (checkpoints).
        view: the preprocessing and normalisation (the local engine alone takes another
            reference's view; Ray encodes as the CLIP preprocesses).
    """
    if view != CLIP_VIEW:
        options = options.model_copy(update={"engine": "local"})
    if options.engine == "ray":
        from descriptor_gen.score.ray_engine import encode_ray

        return encode_ray(options, clip, spec, data, batch_size, progress, on_batch)
    if data.shards is not None:
        return encode_stream(clip, data.shards, batch_size, workers, progress, view), {}
    return encode_images(clip, data.paths, batch_size, workers, progress, reader=data.reader,
                         on_batch=on_batch, view=view), {}


def fault_hook() -> Callable[[], None]:
    """The test hooks of a failing worker: with $DESCRIPTOR_GEN_RAY_FAULT set to a path, the
    first encoder call anywhere creates it and kills its process (later calls run); set to
    `raise`, every encoder call raises (a bug in the encoder); `sleep:S`, every call takes S
    seconds more (a slow encoder, to act while it works)."""
    marker = os.environ.get(FAULT_ENV)

    def maybe_die() -> None:
        if not marker:
            return
        if marker == "raise":
            raise RuntimeError("injected encoder failure")
        if marker.startswith("sleep:"):
            time.sleep(float(marker.split(":", 1)[1]))
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)

    return maybe_die
