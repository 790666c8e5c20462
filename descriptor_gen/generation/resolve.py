"""Generation settings, resolved in one place for the CLI, sweeps and suites alike:
defaults < a preset's < a spec's < flags (a later layer wins; None means "not given")."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from descriptor_gen.describe.presets import Preset, load_preset
from descriptor_gen.describe.styles import STYLES, Style, make_style
from descriptor_gen.errors import DescgenError
from descriptor_gen.generation.backends import GenerationParams

DEFAULT_MODELS = {"openai": "gpt-3.5-turbo-instruct"}


def _given(layer: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.value if isinstance(v, Enum) else v for k, v in layer.items() if v is not None}


def resolve_params(*layers: Mapping[str, Any]) -> GenerationParams:
    """The language model's parameters from the layers, lowest first; the backend's default
    model when none names one. Invalid values are the model's ValidationError."""
    chosen: dict[str, Any] = {}
    for layer in layers:
        chosen.update(_given(layer))
    chosen.setdefault("backend", "openai")
    if "model" not in chosen:
        if chosen["backend"] not in DEFAULT_MODELS:
            raise DescgenError(f"--model is required with --backend {chosen['backend']}")
        chosen["model"] = DEFAULT_MODELS[chosen["backend"]]
    return GenerationParams(**chosen)


def style_params(base: GenerationParams, prompts_dir: Path, style: str,
                 *overrides: Mapping[str, Any]) -> GenerationParams:
    """A generated style's parameters: the base model with the style preset's sampling (the
    recipe's, not the model's), then the overrides."""
    preset = STYLES[style].preset
    sampling = load_preset(prompts_dir, preset).sampling() if preset else {}
    return resolve_params(base.model_dump(), sampling, *overrides)


def preset_style(prompts_dir: Path, name: str, dataset: str | None = None,
                 *layers: Mapping[str, Any]) -> Style:
    """A style from its preset's settings, what the dataset implies (CuPL's own question set),
    then the layers' settings that the style has (a layer may hold other styles' too)."""
    kind = STYLES[name]
    preset = load_preset(prompts_dir, kind.preset) if kind.preset else Preset()
    chosen = {**preset.style, **kind.dataset_defaults(prompts_dir, dataset), "name": name}
    for layer in layers:
        chosen.update({k: v for k, v in _given(layer).items() if k in kind.model_fields})
    return make_style(chosen)
