"""What the engine and the runtime pass each other: the engine asks for probes and restarts
(`Action`), the runtime carries them out and hands back a `ProbeResult` or a `RestartOutcome`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

from llmctl.backends.checks import Check

# "progress": a liveness probe that timed out while the process used CPU is followed by two
# readings of its work counters (Adapter.activity): did it make progress, or does it spin?
ProbeName = Literal["startup", "liveness", "progress", "deep"]
Invocation = tuple[int, int]  # (MainPID, ActiveEnterTimestampMonotonic): one run of the process

# What the adapters answer (ok, detail, latency, loading, skipped, timed_out). A progress
# probe's result is one too: ok = its counters moved, skipped = they could not be read,
# not ok = requests in flight (or none) and counters that did not move.
ProbeResult = Check


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
    # The process exited and systemd waits RestartSec= before its own restart: restart it now
    # (only while the unit is still waiting; never a process that runs).
    crashed: bool = False


class RestartOutcome(enum.StrEnum):
    DONE = "done"  # stopped and started again
    BUSY = "busy"  # another llmctl holds the lock, or a switch is under way: try again later
    GONE = "gone"  # the unit is no longer the process we judged (someone else acted)
    FAILED = "failed"  # systemctl failed


Action = ProbeRequest | RestartRequest
