"""Making a batch's pixels while the encoder runs the one before (`--decode torch` on a GPU).

A thread of its own takes the DataLoader's batches and makes each into device tensors on a
side CUDA stream (nvJPEG's batched decode blocks its calling thread, with the GIL released),
`depth` batches ahead; the encoder's stream waits for each batch's event, not for the host.
So decoding (the GPU's JPEG engines), resizing and the encoder overlap, and the host never
waits for the device within a batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_END = object()


@dataclass
class _Failed:
    error: BaseException


def ahead(batches: Iterable[Any], make: Callable[[Any], tuple[Any, ...]], device: str,
          depth: int = 2, prepare: Callable[[], None] | None = None) -> Iterator[tuple[Any, ...]]:
    """`make(batch)` for each batch, in order, made in a thread up to `depth` batches ahead.
    On CUDA it runs on a side stream, and the consumer's current stream waits for it; its
    device tensors are marked as used there (so their memory is not reused too early). An
    error in the thread is raised here; leaving the loop early stops the thread. `prepare`
    runs first in the thread, while the first batch is being read (a decoder's start-up)."""
    import torch

    cuda = device.startswith("cuda")
    stream = torch.cuda.Stream(device) if cuda else None
    handed: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(batches, make, stream, handed, stop, prepare),
                              name="descgen-pixels", daemon=True)
    thread.start()
    try:
        while True:
            item = handed.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            made, event = item
            if cuda:
                _use_on_current_stream(made, event, device)
            yield made
    finally:
        stop.set()
        _drain(handed)
        thread.join(timeout=1.0)  # a daemon: a worker stalled mid-batch cannot hold the exit up


def _produce(batches: Iterable[Any], make: Callable[[Any], tuple[Any, ...]], stream: Any,
             handed: queue.Queue[Any], stop: threading.Event,
             prepare: Callable[[], None] | None) -> None:
    import contextlib

    import torch

    try:
        with torch.inference_mode(), (torch.cuda.stream(stream) if stream is not None
                                      else contextlib.nullcontext()):
            if prepare is not None:
                prepare()
            for batch in batches:
                made = make(batch)
                event = None
                if stream is not None:
                    event = torch.cuda.Event()
                    event.record(stream)
                if not _put(handed, (made, event), stop):
                    return
        _put(handed, _END, stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        _put(handed, _Failed(exc), stop)


def _put(handed: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the consumer has gone (then False)."""
    while not stop.is_set():
        try:
            handed.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _drain(handed: queue.Queue[Any]) -> None:
    while True:
        try:
            handed.get_nowait()
        except queue.Empty:
            return


def _use_on_current_stream(made: tuple[Any, ...], event: Any, device: str) -> None:
    import torch

    current = torch.cuda.current_stream(device)
    current.wait_event(event)
    for value in made:
        if isinstance(value, torch.Tensor) and value.is_cuda:
            value.record_stream(current)
