"""The nearest classes of each class by CLIP text similarity (Comparative-CLIP's pairs)."""

from __future__ import annotations

from pathlib import Path

from descriptor_gen.paths import TEXT_FEATURES
from descriptor_gen.describe.styles import nearest_classes
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.features import ClipModel, TextFeatureCache, clip_identity, load_clip


def clip_neighbours(classes: list[str], n: int, cache_dir: Path, model: str = "ViT-B-32",
                    pretrained: str = "openai", device: str = "auto",
                    clip: ClipModel | None = None) -> tuple[list[list[int]], dict[str, str]]:
    """Each class's n nearest classes (bare names, CLIP text features, cached) and the identity
    of the CLIP that chose them (it belongs in the descriptors' provenance)."""
    if n >= len(classes):
        raise DescgenError(f"--neighbours {n}: must be fewer than the {len(classes)} classes")
    identity = clip_identity(model, pretrained, "fp32")
    clip = clip or load_clip(model, pretrained, device, "fp32")
    cache = TextFeatureCache(cache_dir / TEXT_FEATURES)
    return nearest_classes(classes, n, lambda texts: cache.features(clip, texts)[0]), identity
