"""The supervisor's decisions, with no I/O of its own: probes and restarts are requested and
their results delivered back, time is passed in, events go to a callback, and the persistent
record (backoff, breaker, history) is a `Store`. Tests drive it with a fake clock and
scripted probe results.

`Engine` runs the rounds and reads what systemd says; `judge` says what a probe result means,
`restarts` whether a restart goes ahead (backoff, breaker), `reporter` turns what it saw into
events, `tracker` is what it knows about each backend and `actions` what it asks of the
runtime (re-exported here).

One round, per backend:

1. What systemd says decides whether there is anything to do. Not running (stopped on
   purpose, or never started), activating (loading: the unit's own readiness gate is the
   startup probe, bounded by TimeoutStartSec=), or failed (systemd gave up): the supervisor
   does nothing but note it. A process that exited and waits for systemd's own restart
   (SubState auto-restart, RestartSec=) is restarted at once when the backoff allows it (a
   first failure: `RestartBook.crashed`); a repeated failure is left to RestartSec= and the
   unit's start limit. An automatic restart by systemd (NRestarts went up) is recorded as a
   `crashed` event and counts for the breaker; it is never followed by a second restart.
2. While `llmctl switch`, `up` or another llmctl command holds the state lock or an intent
   record exists, nothing is probed, counted or restarted.
3. An active unit gets its liveness probe every `liveness.interval` (sooner after a failure);
   a server that says it is
   loading again (llama-server's 503) is in startup, probed every `startup.interval`. The deep
   probe (a one-token completion) runs only when the server has been idle (no CPU used by its
   main process) for `deep.idle` seconds, at most once per `deep.interval`. What a result
   means (the startup budget, `failure_threshold` failures in a row) is `judge`'s.
4. A decided restart goes through `restarts`: never after a failure a restart cannot fix, nor
   while the breaker is open; otherwise once the backoff allows it.
"""

from __future__ import annotations

from collections.abc import Callable

from llmctl.supervisor import events
from llmctl.supervisor.actions import (
    Action,
    Invocation,
    ProbeName,
    ProbeRequest,
    ProbeResult,
    RestartOutcome,
    RestartRequest,
)
from llmctl.supervisor.judge import ProbeJudge
from llmctl.supervisor.plan import Plan
from llmctl.supervisor.reporter import JournalLines, Reporter
from llmctl.supervisor.restarts import RestartBook
from llmctl.supervisor.store import Store
from llmctl.supervisor.tracker import Tracker
from llmctl.systemd import UnitState

__all__ = [
    "BUSY_CPU_FRACTION",
    "Action",
    "Engine",
    "Invocation",
    "JournalLines",
    "ProbeName",
    "ProbeRequest",
    "ProbeResult",
    "RestartOutcome",
    "RestartRequest",
    "Tracker",
]

# The main process used at least this share of a core since the last look: it is working.
BUSY_CPU_FRACTION = 0.02


class Engine:
    def __init__(
        self,
        plan: Plan,
        store: Store,
        emit: Callable[[events.Event], None],
        journal: JournalLines,
        on_probe: Callable[[str, str, ProbeResult], None] | None = None,
    ) -> None:
        self.store = store
        self.reporter = Reporter(emit, journal)
        self.restarts = RestartBook(store, self.reporter, plan.policy)
        self.judge = ProbeJudge(self.reporter, self.restarts)
        self.on_probe = on_probe
        self.plan = plan
        self.trackers: dict[str, Tracker] = {b.name: Tracker(b) for b in plan.backends}
        self.busy: str | None = None

    # -- plan ---------------------------------------------------------------------------------

    def set_plan(self, plan: Plan) -> None:
        """Take a new plan; a backend whose address, kind or model changed starts afresh."""
        trackers = {}
        for backend in plan.backends:
            old = self.trackers.get(backend.name)
            same = old is not None and (old.plan.unit, old.plan.url, old.plan.kind, old.plan.model) == (
                backend.unit,
                backend.url,
                backend.kind,
                backend.model,
            )
            if old is not None and same:
                old.plan = backend
                trackers[backend.name] = old
            else:
                trackers[backend.name] = Tracker(backend)
        self.plan = plan
        self.restarts.policy = plan.policy
        self.trackers = trackers

    # -- helpers ------------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether a round has anything to do now (the runtime asks systemd only then)."""
        return any(
            (now >= t.next_liveness and "liveness" not in t.inflight and not t.restarting)
            or (t.pending is not None and not t.restarting)
            for t in self.trackers.values()
        )

    def next_wakeup(self, now: float) -> float:
        times = [t.next_liveness for t in self.trackers.values() if "liveness" not in t.inflight]
        return min(times, default=now + 1.0)

    # -- a round ------------------------------------------------------------------------------

    def round(
        self,
        now: float,
        states: dict[str, UnitState],
        *,
        busy: str | None = None,
        cpu: dict[str, float | None] | None = None,
    ) -> list[Action]:
        """Look at every backend; return the probes to run and the restarts to carry out."""
        if self.store.refresh():
            self._after_reset()
        self.busy = busy
        actions: list[Action] = []
        for t in self.trackers.values():
            if t.restarting:
                continue
            self._observe(now, t, states.get(t.plan.unit))
            held = self.restarts.held(t)
            if held and t.phase in ("running", "loading"):
                t.phase = "held"
                t.pending = None
            if busy is not None:
                # A switch or another llmctl command is changing things: nothing counts now.
                t.reset_counts()
                if t.phase in ("running", "loading", "held"):
                    t.phase = "switching"
                continue
            self._sample_cpu(now, t, (cpu or {}).get(t.plan.name))
            if t.phase == "systemd-restarting":
                # Exited, and systemd waits RestartSec=: a first failure is restarted now.
                kick = None if held else self.restarts.crashed(now, t)
                actions += [kick] if kick is not None else []
            if t.phase not in ("running", "loading", "held") or t.invocation is None:
                continue
            if now >= t.next_liveness and "liveness" not in t.inflight:
                loading = t.loading_since is not None
                settings = t.plan.startup if loading else t.plan.liveness
                t.next_liveness = now + settings.interval
                t.inflight.add("liveness")
                actions.append(
                    ProbeRequest(
                        t.plan.name, "startup" if loading else "liveness", settings.timeout, t.invocation
                    )
                )
            if self._deep_due(now, t) and not held:
                t.inflight.add("deep")
                actions.append(ProbeRequest(t.plan.name, "deep", t.plan.deep.timeout, t.invocation))
            if t.pending is not None and not held:
                request = self.restarts.try_restart(now, t)
                if request is not None:
                    actions.append(request)
        return actions

    def _after_reset(self) -> None:
        """supervisor.json changed under us (`llmctl reset`): a closed breaker frees the backend."""
        for t in self.trackers.values():
            if not self.restarts.held(t) and t.phase == "held":
                t.phase = "unknown"
                t.reset_counts()
                t.detected_at = None

    def _sample_cpu(self, now: float, t: Tracker, sample: float | None) -> None:
        pid = t.state.main_pid if t.state else 0
        if sample is None or not pid:
            t.cpu = None
            return
        t.working = False
        if t.cpu is not None and t.cpu[2] == pid:
            elapsed, used = now - t.cpu[0], sample - t.cpu[1]
            if elapsed > 0 and (used < 0 or used / elapsed >= BUSY_CPU_FRACTION):
                t.last_busy = now
                t.working = used >= 0
        t.cpu = (now, sample, pid)

    def _deep_due(self, now: float, t: Tracker) -> bool:
        deep = t.plan.deep
        return (
            deep.enabled
            and t.phase == "running"
            and "deep" not in t.inflight
            and t.fails == 0
            and t.up is True
            and t.next_deep is not None
            and now >= t.next_deep
            and now - t.last_busy >= deep.idle
        )

    def _observe(self, now: float, t: Tracker, st: UnitState | None) -> None:
        t.state = st
        if st is None or not st.exists:
            self._not_running(t, "stopped")
            t.n_restarts = None
            return
        if t.n_restarts is not None and st.n_restarts > t.n_restarts:
            self.restarts.record_crash(now, t, st, st.n_restarts - t.n_restarts)
        t.n_restarts = st.n_restarts
        if st.active_state == "failed":
            self._not_running(t, "failed")
            key = f"{st.result}:{st.active_since_monotonic_us}:{st.n_restarts}"
            if t.failed_noted != key:
                t.failed_noted = key
                reason, evidence = self.reporter.why(
                    t, st, f"systemd gave up on the unit (Result={st.result})"
                )
                self.reporter.emit(now, t, "failed", reason, evidence=evidence)
            return
        if st.active_state == "inactive":
            self._not_running(t, "stopped")  # stopped on purpose (llmctl down, systemctl stop)
            return
        if st.sub_state == "auto-restart":
            self._not_running(t, "systemd-restarting")  # its own Restart= is on it
            return
        if st.active_state != "active":
            # activating (loading, behind its readiness gate), deactivating, reloading
            self._not_running(t, "starting" if st.active_state == "activating" else st.active_state)
            return
        t.failed_noted = None
        invocation = (st.main_pid, st.active_since_monotonic_us)
        if invocation != t.invocation:
            # A new process (started by up, switch, us, systemd, or before we started).
            t.invocation = invocation
            t.reset_counts()
            t.loading_since = None
            t.healthy_since = None
            t.last_busy = now
            t.cpu = None
            t.next_liveness = now
            t.next_deep = now + t.plan.deep.idle
        if t.phase != "held":
            t.phase = "loading" if t.loading_since is not None else "running"

    def _not_running(self, t: Tracker, phase: str) -> None:
        t.phase = phase
        t.invocation = None
        t.up = None if phase != "failed" else False
        t.loading_since = None
        t.reset_counts()

    # -- results ------------------------------------------------------------------------------

    def discard(self, name: str, probe: ProbeName) -> None:
        """Forget a probe whose result says nothing (its process is no longer the one asked)."""
        t = self.trackers.get(name)
        if t is not None:
            t.inflight.discard("deep" if probe == "deep" else "liveness")

    def probe_done(
        self, now: float, name: str, probe: ProbeName, invocation: Invocation, result: ProbeResult
    ) -> list[Action]:
        t = self.trackers.get(name)
        if t is None:
            return []
        t.inflight.discard("deep" if probe == "deep" else "liveness")
        if invocation != t.invocation or t.restarting or self.busy is not None:
            return []  # about a process that is gone, or judged while things were changing
        if self.on_probe is not None:
            self.on_probe(name, probe, result)
        if probe == "deep":
            return self.judge.deep(now, t, result)
        if probe == "progress":
            return self.judge.progress(now, t, result)
        return self.judge.liveness(now, t, result)

    def restart_done(
        self, now: float, request: RestartRequest, outcome: RestartOutcome, detail: str = ""
    ) -> None:
        t = self.trackers.get(request.backend)
        if t is not None:
            self.restarts.done(now, t, request, outcome, detail)

    # -- reporting ----------------------------------------------------------------------------

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        if not self.trackers:
            return "no backends to watch"
        groups: dict[str, list[str]] = {}
        for name, t in sorted(self.trackers.items()):
            if t.restarting or (t.phase == "starting" and t.detected_at is not None):
                label = "restarting"
            elif t.phase == "running":
                label = "ok" if t.up else ("failing" if t.fails or t.pending else "checking")
            else:
                label = t.phase
            groups.setdefault(label, []).append(name)
        order = ["ok", "checking", "failing", "restarting", "loading", "starting", "systemd-restarting"]
        labels = sorted(groups, key=lambda g: (order.index(g) if g in order else len(order), g))
        parts = [
            f"{len(groups[g])} {g}" if g == "ok" else f"{len(groups[g])} {g} ({', '.join(groups[g])})"
            for g in labels
        ]
        line = f"{len(self.trackers)} backends: " + ", ".join(parts)
        if self.busy:
            line += f"; paused: {self.busy}"
        return line
