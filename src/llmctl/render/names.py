"""The names and places of what llmctl installs, without the renderer (jinja2, the config
schema): `status` and `stack_from_installed` read installed units by these names, and must
start fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

TARGET = "llmctl.target"
GATEWAY_UNIT = "llmctl-gateway.service"
GATEWAY_SOCKET = "llmctl-gateway.socket"  # holds the gateway's port; the target Wants= it
GATEWAY_NAME = "gateway"
UNIT_SUBDIR = "systemd/user"
GATEWAY_FILE = "llmctl/gateway.yaml"  # relative to $XDG_CONFIG_HOME
SUPERVISOR_UNIT = "llmctl-supervisor.service"
SUPERVISOR_NAME = "supervisor"
SUPERVISOR_START_TIMEOUT = 90  # READY=1 after the plan child and the first round of probes
GATEWAY_START_TIMEOUT = 180  # also systemd's bound for the gateway's ExecReload=
REDIS_UNIT = "llmctl-redis.service"  # gateway.cache: LiteLLM's response cache
REDIS_NAME = "redis"
REDIS_KIND = "redis"
REDIS_CONF_FILE = "llmctl/redis.conf"  # relative to $XDG_CONFIG_HOME; no secret in it
# Loading a large cache.rdb back takes a while; an empty one well under a second.
REDIS_START_TIMEOUT = 90


def unit_name(backend: str) -> str:
    return f"llmctl-{backend}.service"


def templates_dir() -> Path:
    """units/ ships inside the wheel as llmctl/units; in a checkout it is the top-level units/."""
    from pathlib import Path  # noqa: PLC0415 - every unit's readiness gate imports this module

    packaged = Path(__file__).resolve().parent.parent / "units"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "units"
