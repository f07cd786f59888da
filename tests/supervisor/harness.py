"""A harness for the supervisor's decisions: a fake clock, fake unit states and scripted probe
results (each step says what its probes answer)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from llmctl.supervisor.engine import (
    Action,
    Engine,
    ProbeRequest,
    ProbeResult,
    RestartOutcome,
    RestartRequest,
)
from llmctl.supervisor.events import Event
from llmctl.supervisor.plan import BackendPlan, DeepSettings, LivenessSettings, Plan, Policy, StartupSettings
from llmctl.supervisor.store import Store
from llmctl.systemd import UnitState

OK = ProbeResult(True, "/health 200", 2.0)
FAIL = ProbeResult(False, "GET /health: timed out after 5 s", 5000.0, timed_out=True)
# What a progress probe answers (its counters read twice).
MOVED = ProbeResult(True, "its token counters moved in 2 s (4 of 4 slots processing)")
UNREADABLE = ProbeResult(True, "its work counters cannot be read (GET /slots: timed out)", skipped=True)
FLAT = ProbeResult(False, "its token counters did not move in 2 s with requests in flight (4 of 4 slots)")
LOADING = ProbeResult(False, "loading model (/health 503)", 1.0, loading=True)
UNIT = "llmctl-native.service"
T0 = 1_800_000_000.0


def unit_state(
    active: str = "active", sub: str = "running", pid: int = 100, restarts: int = 0, since: int = 1
) -> UnitState:
    return UnitState(
        unit=UNIT, load_state="loaded", active_state=active, sub_state=sub, main_pid=pid,
        n_restarts=restarts, result="success", control_group="/app.slice/" + UNIT,
        active_since_monotonic_us=since, unit_file_state="static",
    )  # fmt: skip


@dataclass
class Harness:
    engine: Engine
    store: Store
    events: list[Event]
    journal: list[str]
    now: float = T0
    state: UnitState = field(default_factory=unit_state)
    busy: str | None = None
    cpu: float | None = 0.0

    def round(self) -> list[Action]:
        return self.engine.round(self.now, {UNIT: self.state}, busy=self.busy, cpu={"native": self.cpu})

    def probes(self, actions: list[Action]) -> list[ProbeRequest]:
        return [a for a in actions if isinstance(a, ProbeRequest)]

    def restarts(self, actions: list[Action]) -> list[RestartRequest]:
        return [a for a in actions if isinstance(a, RestartRequest)]

    def step(
        self,
        seconds: float,
        result: ProbeResult = OK,
        deep: ProbeResult = OK,
        progress: ProbeResult = UNREADABLE,
    ) -> list[Action]:
        """Advance the clock, run a round, answer its probes (and the progress probes they ask
        for); return every action."""
        self.now += seconds
        actions = self.round()
        out: list[Action] = list(actions)
        answers = {"deep": deep, "progress": progress}
        queue = self.probes(actions)
        while queue:
            request = queue.pop(0)
            follow = self.engine.probe_done(
                self.now, request.backend, request.probe, request.invocation,
                answers.get(request.probe, result),
            )  # fmt: skip
            out += follow
            queue += self.probes(follow)
        return out

    def kinds(self) -> list[str]:
        return [e.event for e in self.events]

    def restart(self, request: RestartRequest, outcome: RestartOutcome = RestartOutcome.DONE) -> None:
        self.engine.restart_done(self.now, request, outcome)
        if outcome is RestartOutcome.DONE:
            # systemd starts a new process: activating, then active with a new PID.
            self.state = unit_state(active="activating", sub="start-post", pid=self.state.main_pid + 1)
            # A start leaves "inactive": a new run (what tells one crash from the next).
            self.state = replace(self.state, started_monotonic_us=int(self.now * 1e6))
            self.round()
            self.state = replace(
                self.state,
                active_state="active",
                sub_state="running",
                active_since_monotonic_us=int(self.now),
            )


def make(
    tmp_path: Path,
    *,
    liveness: LivenessSettings | None = None,
    deep: DeepSettings | None = None,
    policy: Policy | None = None,
    startup: StartupSettings | None = None,
) -> Harness:
    backend = BackendPlan(
        "native", UNIT, "llama-server", "http://127.0.0.1:8080", "smoke",
        startup=startup or StartupSettings(interval=2, timeout=5, budget=60),
        liveness=liveness or LivenessSettings(interval=10, timeout=5, failure_threshold=3),
        deep=deep or DeepSettings(enabled=False),
    )  # fmt: skip
    store = Store(tmp_path / "state")
    captured: list[Event] = []
    journal: list[str] = []
    engine = Engine(
        Plan((backend,), policy or Policy()), store, captured.append, lambda unit, st: list(journal)
    )
    return Harness(engine, store, captured, journal)


def hang(h: Harness) -> RestartRequest:
    """Liveness fails until the threshold: the restart request."""
    for _ in range(h.engine.plan.backends[0].liveness.failure_threshold - 1):
        assert not h.restarts(h.step(10, FAIL))
    restarts = h.restarts(h.step(10, FAIL))
    assert len(restarts) == 1
    return restarts[0]


def crash(h: Harness, seconds: float = 1) -> list[RestartRequest]:
    """kill -9: the process is gone and systemd waits RestartSec= (auto-restart)."""
    h.state = replace(h.state, active_state="activating", sub_state="auto-restart", main_pid=0)
    return h.restarts(h.step(seconds))
