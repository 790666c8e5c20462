"""Named generation presets (`prompts/presets/NAME.yaml`): prompt options and generation
parameters that reproduce a reference's recipe; explicit flags override them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError

from descriptor_gen.models import Model
from descriptor_gen.errors import DescgenError
from descriptor_gen.inputs import read_yaml, validation_message


class Preset(Model):
    """A reference's recipe: prompt options, prompt style (`cupl`, `comparative`) and
    generation parameters."""

    model_config = ConfigDict(extra="forbid")

    prompt: dict[str, Any] = {}
    style: dict[str, Any] = {}
    generation: dict[str, Any] = {}

    def sampling(self) -> dict[str, Any]:
        """The generation settings that belong to the recipe, not to the model it is run on."""
        return {k: self.generation[k] for k in SAMPLING_KEYS if k in self.generation}


SAMPLING_KEYS = ("temperature", "max_tokens", "samples", "stop", "parser")


def preset_names(prompts_dir: Path) -> list[str]:
    return sorted(p.stem for p in (prompts_dir / "presets").glob("*.yaml"))


def load_preset(prompts_dir: Path, name: str) -> Preset:
    path = prompts_dir / "presets" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(preset_names(prompts_dir)) or "none"
        raise DescgenError(f"unknown preset {name!r} (known: {known})")
    try:
        return Preset.model_validate(read_yaml(path, "preset"))
    except ValidationError as exc:
        raise DescgenError(f"{path}: {validation_message(exc)}") from exc
