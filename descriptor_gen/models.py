"""The package's pydantic base model: validators are built on a model's first use, not when
its module is imported (a command that never validates a model does not pay for it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """`pydantic.BaseModel` with `defer_build`: the same validation, built when first needed."""

    model_config = ConfigDict(defer_build=True)
