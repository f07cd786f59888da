"""What the engine knows about one backend between rounds: its unit's last state, the process
it is judging, its probe counts and schedule, and a restart it has decided on."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmctl.supervisor.actions import Invocation, ProbeResult, RestartRequest
from llmctl.supervisor.plan import BackendPlan
from llmctl.systemd import UnitState


@dataclass
class Tracker:
    plan: BackendPlan
    state: UnitState | None = None
    phase: str = "unknown"  # stopped|failed|starting|systemd-restarting|running|loading|held|switching
    invocation: Invocation | None = None
    n_restarts: int | None = None
    loading_since: float | None = None
    fails: int = 0
    deep_fails: int = 0
    next_liveness: float = 0.0
    next_deep: float | None = None
    inflight: set[str] = field(default_factory=set)  # "liveness" (also startup, progress), "deep"
    last_busy: float = 0.0
    working: bool = False  # its main process used CPU between the last two samples
    cpu: tuple[float, float, int] | None = None  # (when, cpu seconds, pid)
    healthy_since: float | None = None
    up: bool | None = None
    last_detail: str = ""
    detected_at: float | None = None
    pending: RestartRequest | None = None
    deferred_noted: bool = False
    restarting: bool = False
    failed_noted: str | None = None
    # A liveness timeout while the process worked, waiting for the progress probe's verdict.
    suspect: ProbeResult | None = None
    # The exit already handled: (when its run started, NRestarts). systemd's own restart
    # raises NRestarts, a restart job starts a new run: either makes the next exit new.
    crash_noted: tuple[int, int] | None = None

    def reset_counts(self) -> None:
        self.fails = 0
        self.deep_fails = 0
        self.pending = None
        self.deferred_noted = False
        self.suspect = None
