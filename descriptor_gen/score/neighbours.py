"""The nearest classes of each class by CLIP text similarity (Comparative-CLIP's pairs)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from descriptor_gen.paths import TEXT_FEATURES
from descriptor_gen.describe.styles import NeighbourFinder, nearest_classes
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.caches import TextFeatureCache
from descriptor_gen.score.clip_ref import ClipRef


def clip_neighbours(classes: list[str], n: int, cache_dir: Path, model: str = "ViT-B-32",
                    pretrained: str = "openai", device: str = "auto",
                    clip: Any = None) -> tuple[list[list[int]], dict[str, str]]:
    """Each class's n nearest classes (bare names, CLIP text features, cached) and the identity
    of the CLIP that chose them (it belongs in the descriptors' provenance). Without `clip`,
    the CLIP loads only if a name's features are not cached."""
    if n >= len(classes):
        raise DescgenError(f"--neighbours {n}: must be fewer than the {len(classes)} classes")
    ref = ClipRef(model, pretrained, device, "fp32", cache_dir)
    identity = ref.clip_identity()
    clip = clip or ref
    cache = TextFeatureCache(cache_dir / TEXT_FEATURES)
    return nearest_classes(classes, n, lambda texts: cache.features(clip, texts)[0]), identity


def neighbour_finder(cache_dir: Path, model: str, pretrained: str, device: str = "auto",
                     clip: Any = None) -> NeighbourFinder:
    """`clip_neighbours` with its CLIP fixed: what a comparative style's `prepare` takes."""
    return functools.partial(clip_neighbours, cache_dir=cache_dir, model=model,
                             pretrained=pretrained, device=device, clip=clip)
