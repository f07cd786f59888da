"""The pieces every config section is made of, apart from the sections themselves.

Here rather than in `llmctl.config.schema` so that sections in modules of their own
(`llmctl.config.litellm_settings`) can use them while the schema uses those sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic_core import PydanticCustomError

# Model ids are what clients send; they appear in YAML and in argv (as --alias), never as a
# unit name, so they may hold the characters real model names use (dots, colons, slashes).
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
ModelId = Annotated[str, StringConstraints(pattern=MODEL_ID_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


AT_ERROR = "llmctl_at"


def error_at(at: Sequence[str | int], message: str) -> PydanticCustomError:
    """A validation error about a place below the value being validated (a key of a mapping,
    found by a validator of the mapping): `llmctl.config.load` reports it at that key's line."""
    return PydanticCustomError(AT_ERROR, "{message}", {"message": message, "at": list(at)})
