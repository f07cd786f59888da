"""What an `up` did, and its text and JSON renderings (the click CLI's and the quick path's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmctl.converge import UnitOutcome
from llmctl.install import FileChange
from llmctl.paths import Paths


@dataclass
class UpResult:
    outcomes: list[UnitOutcome] = field(default_factory=list)
    files: list[FileChange] = field(default_factory=list)
    gateway_key_created: bool = False
    backend_keys_created: list[str] = field(default_factory=list)  # backend names
    redis_password_created: bool = False  # gateway.cache: a new password (redis.env)
    router_key_created: bool = False  # gateway.on_demand: a new router key (router.env)
    snapshot: str | None = None  # taken before changing anything


def up_data(result: UpResult) -> dict[str, Any]:
    return {
        "snapshot": result.snapshot,
        "files": [{"path": c.path, "change": c.kind} for c in result.files],
        "units": [
            {"unit": o.unit, "action": o.action, "seconds": round(o.seconds, 2)} for o in result.outcomes
        ],
    }


def up_lines(result: UpResult, paths: Paths) -> list[str]:
    lines = [f"{change.kind.value:9} {paths.config_home / change.path}" for change in result.files]
    if result.snapshot:
        lines.append(f"snapshot {result.snapshot} holds the previous state (llmctl rollback restores it)")
    if result.gateway_key_created:
        lines.append(f"created the gateway key in {paths.gateway_env_file} (llmctl gateway key prints it)")
    for name in result.backend_keys_created:
        lines.append(f"created the API key of backend {name} in {paths.backend_key_file(name)}")
    if result.redis_password_created:
        lines.append(f"created the password of the gateway's Redis in {paths.redis_env_file}")
    if result.router_key_created:
        lines.append(f"created the key of llmctl's router in {paths.router_key_file}")
    for outcome in result.outcomes:
        timing = f" in {outcome.seconds:.1f}s" if outcome.action in ("started", "restarted") else ""
        lines.append(f"{outcome.unit}: {outcome.action}{timing}")
    return lines
