"""What every doctor check returns, and the sizes its reasons print.

Kept apart from the checks so that each area's module, and `llmctl init`, can use them
without importing the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    reason: str
    fix: str | None = None
    details: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "fix": self.fix,
            "details": list(self.details),
        }


def worst(statuses: Sequence[Status]) -> Status:
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


def human_size(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"
