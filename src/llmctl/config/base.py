"""The pieces every config section is made of, apart from the sections themselves.

Here rather than in `llmctl.config.schema` so that sections in modules of their own
(`llmctl.config.litellm_settings`) can use them while the schema uses those sections.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
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


NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control_characters(value: str) -> str:
    # A newline in a unit file would start a new directive; other control characters have no
    # business in a path, an argument or an environment value either.
    match = _CONTROL.search(value)
    if match:
        raise ValueError(f"must not contain control characters (found {match.group()!r})")
    return value


def _not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _executable_name(value: str) -> str:
    # systemd refuses an ExecStart= executable whose path holds a quote or a backslash
    # ("Executable name contains special characters"), however it is quoted.
    bad = sorted({c for c in value if c in "\\\"'"})
    if bad:
        raise ValueError(f"systemd cannot run an executable whose path contains {' or '.join(bad)}")
    return value


SafeStr = Annotated[str, AfterValidator(_no_control_characters)]
NonEmptySafeStr = Annotated[str, AfterValidator(_no_control_characters), AfterValidator(_not_empty)]
Executable = Annotated[NonEmptySafeStr, AfterValidator(_executable_name)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535)]
GpuRef = (
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=r"^(GPU|MIG)-[A-Za-z0-9/-]+$")]
)


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _duration_seconds(value: Any) -> Any:
    """`idle_unload: 10m` and `idle_unload: 600` mean the same: seconds as a number."""
    if isinstance(value, bool):
        return value  # refused by the float check below, with pydantic's own message
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise ValueError("must be seconds (600) or a duration like 90s, 10m, 2h")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if isinstance(value, int):
        return float(value)
    return value


def _valid_host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?", value):
            raise ValueError("must be an IP address or a host name") from None
    return value


Host = Annotated[str, AfterValidator(_valid_host)]
Duration = Annotated[float, BeforeValidator(_duration_seconds), Field(gt=0, le=30 * 86_400)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
