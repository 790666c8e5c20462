"""The package's pydantic base model: validators are built on a model's first use, not when
its module is imported (a command that never validates a model does not pay for it).

A deferred build is safe only where pydantic builds it under a lock: before pydantic 2.14, two
threads using a model for the first time at once could see it half-built (`AttributeError: ...
has no attribute '__pydantic_core_schema__'`, or the parent's validator). There the models are
built when defined, as plain pydantic models are.
"""

from __future__ import annotations

import pydantic
from pydantic import BaseModel, ConfigDict

THREAD_SAFE_REBUILD = (2, 14)


def defers_safely(version: str) -> bool:
    """Whether pydantic `version` builds a deferred model under its rebuild lock."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= THREAD_SAFE_REBUILD


class Model(BaseModel):
    """`pydantic.BaseModel` with `defer_build` where pydantic makes it thread-safe: the same
    validation, built when first needed."""

    # pydantic 2.10's own default; before it, every field named model_* (a result's
    # `model_loaded`) printed a warning on import.
    model_config = ConfigDict(defer_build=defers_safely(pydantic.VERSION),
                              protected_namespaces=("model_validate", "model_dump"))
