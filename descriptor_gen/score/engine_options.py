"""How the image encoder runs, as options every engine reads (the local DataLoader and Ray
actors alike), and the fault hooks the tests inject into a worker. The engines themselves
import this module; it imports none of them."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError

EngineName = Literal["local", "ray"]
FAULT_ENV = "DESCRIPTOR_GEN_RAY_FAULT"  # tests: a marker path (one worker dies) or `raise`


class EngineOptions(Model):
    """How to run the image encoder.

    Attributes:
        engine: `local` or `ray`.
        ray_address: an existing cluster (else $RAY_ADDRESS, else a local Ray on this machine).
        ray_actors: encoder actors (each loads the model once); None: on a local Ray, as many
            as its CPUs hold (at most 2), on a cluster 2.
        ray_gpus: GPUs per actor (0: CPU actors).
        ray_actor_cpus: CPUs each actor reserves (its torch threads on a CPU actor).
        ray_cpus: CPUs of a local Ray started here (None: the usable cores).
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


DEVICE_FORMS = ("auto", "cpu", "cuda")


def check_device_name(device: str) -> None:
    """The `--device` value's form, checked without torch (whether CUDA is there is checked
    when a model is loaded)."""
    if device not in DEVICE_FORMS and not device.startswith("cuda:"):
        raise DescgenError(f"--device {device}: choose auto, cpu, cuda or cuda:N")


# engines beside the local one, imported by name when chosen (Ray is an optional extra);
# each module has `check_options(options, precision)` and `encode(options, clip, spec, data,
# batch_size, progress, on_batch)`
ENGINES: dict[str, str] = {"ray": "descriptor_gen.score.ray_engine"}


def engine_module(name: str) -> Any:
    return importlib.import_module(ENGINES[name])


def check_engine(options: EngineOptions, precision: str, decode: str = "pil") -> None:
    """What the chosen engine needs, checked before the feature cache is looked at, so that a
    wrong flag is refused whether or not the features are cached."""
    if options.engine in ENGINES:
        if decode != "pil":
            raise DescgenError(f"--decode {decode} runs on the local engine; the {options.engine}"
                               " engine's workers decode with PIL (--decode pil)")
        engine_module(options.engine).check_options(options, precision)


def parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address (`HOST:PORT`, `ray://HOST:PORT`); None for `auto` and
    `local`, which Ray resolves itself. A malformed one is a ValueError."""
    if address in ("auto", "local"):
        return None
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def fault_hook() -> Callable[[], None]:
    """The test hooks of a failing worker: with $DESCRIPTOR_GEN_RAY_FAULT set to a path, the
    first encoder call anywhere creates it and kills its process (later calls run); set to
    `raise`, every encoder call raises (a bug in the encoder); `sleep:S[:PATH]`, every call
    takes S seconds more (a slow encoder, to act while it works) and first touches PATH (so a
    test knows the encoders have started)."""
    marker = os.environ.get(FAULT_ENV)

    def maybe_die() -> None:
        if not marker:
            return
        if marker == "raise":
            raise RuntimeError("injected encoder failure")
        if marker.startswith("sleep:"):
            _, seconds, *started = marker.split(":", 2)
            if started:
                open(started[0], "a").close()
            time.sleep(float(seconds))
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)

    return maybe_die
