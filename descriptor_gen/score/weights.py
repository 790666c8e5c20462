"""Where a pretrained tag's weights come from, decided in seconds: open_clip, asked for weights
that are not cached on a machine that cannot reach their host, retries for minutes and ends in
a traceback; here that is one line naming the weights and the ways out."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from descriptor_gen.errors import DescgenError

OFFLINE_VALUES = ("1", "on", "yes", "true")


def check_weights(model: str, tag: str, seconds: float = 3.0, hub_cache: str | None = None) -> None:
    """Nothing when open_clip can have the weights of `model`/`tag` (cached, or their host
    answers); otherwise one line. An unknown tag is left to open_clip's own error."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg or "file" in cfg or cached(cfg, hub_cache):
        return
    host = "huggingface.co" if cfg.get("hf_hub") else urlparse(cfg.get("url", "")).hostname
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES
    if host and not offline and _answers(host, seconds):
        return
    why = "HF_HUB_OFFLINE is set" if offline else f"{host} cannot be reached"
    raise DescgenError(
        f"CLIP weights {model} / {tag} are not on this machine and {why}: give a checkpoint file"
        f" you have (--pretrained FILE; in a sweep or suite spec --set clip.pretrained=FILE), or run"
        f" once with network access so that open_clip caches them ({_where(cfg)}), or point HF_HOME"
        " at a cache that holds them")


def cached(cfg: dict[str, Any], hub_cache: str | None = None) -> bool:
    """Whether the weights of a pretrained config are in open_clip's caches on this machine."""
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
        return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=hub_cache), str)
                   for name in names)
    url = cfg.get("url", "")
    return bool(url) and (Path.home() / ".cache" / "clip" / os.path.basename(url)).is_file()


def _where(cfg: dict[str, Any]) -> str:
    if cfg.get("hf_hub"):
        return f"the Hugging Face cache, from huggingface.co/{os.path.split(cfg['hf_hub'])[0]}"
    return f"~/.cache/clip, from {cfg.get('url')}"


def _answers(host: str, seconds: float) -> bool:
    try:
        socket.create_connection((host, 443), timeout=seconds).close()
        return True
    except OSError:
        return False
