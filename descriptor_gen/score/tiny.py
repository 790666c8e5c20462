"""A tiny random CLIP for a first smoke run and for tests: an open_clip model config (32 px
images, 2-layer towers, CLIP's tokenizer) and random weights, written as files that `--model`
and `--pretrained` take. Its numbers mean nothing; it runs every command in seconds."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from descriptor_gen.atomic import replace_atomically, write_text_atomically

TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def write_clip_checkpoint(folder: Path, name: str, config: dict[str, Any],
                          seed: int = 0) -> tuple[Path, Path]:
    """`folder/NAME.json` (the model config, registered with open_clip) and `folder/NAME.pt`
    (random weights drawn with `seed`): (config, checkpoint)."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    text = json.dumps(config, indent=1) + "\n"
    write_text_atomically(path, text)
    open_clip.add_model_config(path)
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # open_clip's "no pretrained weights loaded": that is the point
    try:
        model = open_clip.create_model(name, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    checkpoint = folder / f"{name}.pt"
    replace_atomically(checkpoint, lambda tmp: torch.save({"state_dict": model.state_dict()}, tmp))
    return path, checkpoint
