"""Where image features are computed: `local` (a DataLoader on this machine) or `ray` (Ray
Data: decoding as CPU tasks, the image tower in a pool of actors that each load the model
once, on one machine or a cluster). Both give the same features in the same order and write
the same feature cache under the same key; the engine is not part of any identity.
"""

from __future__ import annotations

from descriptor_gen.data.images import LabelledImages
from descriptor_gen.score.engine_options import (
    ENGINES,
    FAULT_ENV,
    EngineName,
    EngineOptions,
    check_engine,
    engine_module,
    fault_hook,
)
from descriptor_gen.score.features import (
    CLIP_VIEW,
    ClipModel,
    ImageFeatures,
    ImageView,
    OnBatch,
    Reading,
    encode_images,
    encode_stream,
)

__all__ = ["ENGINES", "EngineName", "EngineOptions", "FAULT_ENV", "check_engine", "encode",
           "fault_hook"]


def encode(options: EngineOptions, clip: ClipModel, spec: tuple[str, str, str, str],
           data: LabelledImages, batch_size: int, workers: int | None, progress: bool = False,
           on_batch: OnBatch | None = None, view: ImageView = CLIP_VIEW,
           decode: str = "pil",
           reading: Reading | None = None) -> tuple[ImageFeatures, dict[str, float]]:
    """The source's features by the chosen engine, and the engine's own timings (Ray's start-up).

    Args:
        spec: (model, pretrained, precision, device) as `load_clip` takes them, for actors that
            load the model themselves.
        on_batch: told each batch of a file list in input order, as it is done (checkpoints).
        view: the preprocessing and normalisation (the local engine alone takes another
            reference's view; Ray encodes as the CLIP preprocesses).
        reading: the local engine's `features.Reading` of these files, started before the CLIP
            was built.
    """
    if view != CLIP_VIEW:
        options = options.model_copy(update={"engine": "local"})
    if options.engine in ENGINES:
        return engine_module(options.engine).encode(options, clip, spec, data, batch_size,
                                                     progress, on_batch)
    if data.shards is not None:
        return encode_stream(clip, data.shards, batch_size, workers, progress, view), {}
    return encode_images(clip, data.paths, batch_size, workers, progress, reader=data.reader,
                         on_batch=on_batch, view=view, decode=decode, reading=reading), {}


