"""What the engine and the runtime pass each other: the engine asks for probes and restarts
(`Action`), the runtime carries them out and hands back a `ProbeResult` or a `RestartOutcome`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

ProbeName = Literal["startup", "liveness", "deep"]
Invocation = tuple[int, int]  # (MainPID, ActiveEnterTimestampMonotonic): one run of the process


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    latency_ms: float | None = None
    loading: bool = False  # the server says it is (re)loading its model
    skipped: bool = False  # a deep probe that could not run (no model loaded, asleep, needs a key)


@dataclass(frozen=True)
class ProbeRequest:
    backend: str
    probe: ProbeName
    timeout: float
    invocation: Invocation


@dataclass(frozen=True)
class RestartRequest:
    backend: str
    unit: str
    main_pid: int
    probe: str
    reason: str
    evidence: dict[str, Any]
    detected_at: float


class RestartOutcome(enum.StrEnum):
    DONE = "done"  # stopped and started again
    BUSY = "busy"  # another llmctl holds the lock, or a switch is under way: try again later
    GONE = "gone"  # the unit is no longer the process we judged (someone else acted)
    FAILED = "failed"  # systemctl failed


Action = ProbeRequest | RestartRequest
