"""The supervisor's decisions, with no I/O of its own: probes and restarts are requested and
their results delivered back, time is passed in, events go to a callback, and the persistent
record (backoff, breaker, history) is a `Store`. Tests drive it with a fake clock and
scripted probe results.

One round, per backend:

1. What systemd says decides whether there is anything to do. Not running (stopped on
   purpose, or never started), activating (loading: the unit's own readiness gate is the
   startup probe, bounded by TimeoutStartSec=), restarting under its own Restart= (SubState
   auto-restart), or failed (systemd gave up): the supervisor does nothing but note it. An
   automatic restart by systemd (NRestarts went up) is recorded as a `crashed` event and counts
   for the breaker; it is never followed by a second restart.
2. While `llmctl switch`, `up` or another llmctl command holds the state lock or an intent
   record exists, nothing is probed, counted or restarted.
3. An active unit gets its liveness probe every `liveness.interval`. A server that says it is
   loading again (llama-server's 503) is in startup: probed every `startup.interval`, never
   restarted before `startup.budget` has passed. `failure_threshold` failures in a row decide
   a restart. The deep probe (a one-token completion) runs only when the server has been idle
   (no CPU used by its main process) for `deep.idle` seconds, at most once per
   `deep.interval` (retried after `liveness.interval` when it fails).
4. A decided restart first reads the unit's journal: a failure a restart cannot fix
   (`llmctl.signatures`, restart_helps=False) is recorded as `unfixable` and the backend is
   left alone. Then the breaker: `breaker.max_restarts` restarts within `breaker.window` opens
   it instead. Then the backoff: restarts in a run are spaced backoff.initial, x2, ... up to
   backoff.max seconds; `backoff.reset_after` seconds of health end the run.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from llmctl.signatures import match_lines
from llmctl.supervisor import events
from llmctl.supervisor.plan import BackendPlan, Plan
from llmctl.supervisor.store import BackendRecord, BreakerState, Restart, Store
from llmctl.systemd import UnitState

ProbeName = Literal["startup", "liveness", "deep"]
Invocation = tuple[int, int]  # (MainPID, ActiveEnterTimestampMonotonic): one run of the process
# The main process used at least this share of a core since the last look: it is working.
BUSY_CPU_FRACTION = 0.02


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
    inflight: set[str] = field(default_factory=set)  # "liveness" (also startup), "deep"
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

    def reset_counts(self) -> None:
        self.fails = 0
        self.deep_fails = 0
        self.pending = None
        self.deferred_noted = False


JournalLines = Callable[[str, UnitState | None], list[str]]


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
        self.emit_event = emit
        self.journal = journal
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
        self.trackers = trackers

    # -- helpers ------------------------------------------------------------------------------

    def _emit(
        self,
        now: float,
        t: Tracker,
        event: str,
        reason: str,
        probe: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        self.emit_event(events.make(t.plan.name, event, reason, probe=probe, evidence=evidence, at=now))

    def _record(self, t: Tracker) -> BackendRecord:
        return self.store.get(t.plan.name)

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
            held = self._record(t).breaker is not None
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
                request = self._try_restart(now, t)
                if request is not None:
                    actions.append(request)
        return actions

    def _after_reset(self) -> None:
        """supervisor.json changed under us (`llmctl reset`): a closed breaker frees the backend."""
        for t in self.trackers.values():
            if self._record(t).breaker is None and t.phase == "held":
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
            self._crashed(now, t, st, st.n_restarts - t.n_restarts)
        t.n_restarts = st.n_restarts
        if st.active_state == "failed":
            self._not_running(t, "failed")
            key = f"{st.result}:{st.active_since_monotonic_us}:{st.n_restarts}"
            if t.failed_noted != key:
                t.failed_noted = key
                reason, evidence = self._why(t, st, f"systemd gave up on the unit (Result={st.result})")
                self._emit(now, t, "failed", reason, evidence=evidence)
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

    def _why(
        self, t: Tracker, st: UnitState | None, what: str, *, current: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """`what`, plus the failure signature the journal shows, if any: in the current run's
        lines (`current`), else in the unit's last lines (a process that has exited)."""
        evidence: dict[str, Any] = {}
        if st is not None:
            evidence.update(
                active_state=st.active_state,
                sub_state=st.sub_state,
                result=st.result,
                n_restarts=st.n_restarts,
                exit_code=st.exec_main_code,
                exit_status=st.exec_main_status,
            )
        matches = match_lines(self.journal(t.plan.unit, st if current else None))
        if not matches:
            return what, evidence
        found = matches[0]
        evidence.update(signature=found.signature.id, runbook=found.signature.runbook, line=found.line)
        cannot = "" if found.signature.restart_helps else "; a restart cannot fix this"
        return f"{what}: {found.signature.summary}{cannot}", evidence

    def _crashed(self, now: float, t: Tracker, st: UnitState, count: int) -> None:
        reason, evidence = self._why(t, st, f"the process exited ({st.result}) and systemd restarted it")

        def change(record: BackendRecord) -> None:
            record.restarts.extend(Restart(now, "crash", by="systemd") for _ in range(count))
            record.streak += count
            record.last_restart = now

        self.store.update(t.plan.name, change)
        self._emit(now, t, "crashed", reason, evidence=evidence)

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
            return self._deep_done(now, t, result)
        return self._liveness_done(now, t, probe, result)

    def _liveness_done(self, now: float, t: Tracker, probe: str, result: ProbeResult) -> list[Action]:
        t.last_detail = result.detail
        held = self._record(t).breaker is not None
        if result.ok and not result.loading:
            t.up = True
            t.loading_since = None
            t.fails = 0
            t.pending = None  # it recovered by itself
            t.deferred_noted = False
            if t.phase == "loading":
                t.phase = "running"
            if t.healthy_since is None:
                t.healthy_since = now
            if t.detected_at is not None:
                self._emit(
                    now, t, "recovered", "serving again after the restart",
                    evidence={"detection_to_serving_s": round(now - t.detected_at, 3)},
                )  # fmt: skip
                t.detected_at = None
            self._maybe_end_run(now, t)
            return []
        t.up = False
        t.healthy_since = None
        if result.loading:
            if t.loading_since is None:
                t.loading_since = now
                t.next_liveness = min(t.next_liveness, now + t.plan.startup.interval)
                if t.phase == "running":
                    t.phase = "loading"
            budget = t.plan.startup.budget
            if now - t.loading_since <= budget or held:
                return []  # still inside its startup budget: never restarted
            return self._decide(
                now, t, "startup", f"still loading {now - t.loading_since:.0f} s after it began "
                f"(budget {budget:.0f} s): {result.detail}", {"budget_s": budget},
            )  # fmt: skip
        if t.loading_since is not None and now - t.loading_since <= t.plan.startup.budget:
            return []  # failures while loading do not count
        if held or t.pending is not None:
            return []
        if "timed out" in result.detail and t.working:
            # A server busy generating can be slow to answer /health (its HTTP threads are all
            # taken), but its process is using CPU; a hung one (stopped, deadlocked) uses none.
            # Only a timeout without work counts.
            t.last_detail = f"{result.detail} (busy: its process is working)"
            return []
        threshold = t.plan.liveness.failure_threshold
        t.fails += 1
        evidence = {
            "consecutive": t.fails,
            "threshold": threshold,
            "timeout_s": t.plan.liveness.timeout,
            "latency_ms": round(result.latency_ms, 1) if result.latency_ms is not None else None,
        }
        self._emit(now, t, "probe-failed", result.detail, probe="liveness", evidence=evidence)
        if t.fails < threshold:
            return []
        return self._decide(
            now, t, "liveness", f"liveness failed {t.fails} times in a row: {result.detail}", evidence
        )

    def _deep_done(self, now: float, t: Tracker, result: ProbeResult) -> list[Action]:
        deep = t.plan.deep
        t.cpu = None  # the probe's own work is not activity
        if result.skipped or result.ok:
            t.deep_fails = 0
            t.next_deep = now + deep.interval
            return []
        t.next_deep = now + t.plan.liveness.interval
        if self._record(t).breaker is not None or t.pending is not None:
            return []
        t.deep_fails += 1
        evidence = {
            "consecutive": t.deep_fails,
            "threshold": deep.failure_threshold,
            "timeout_s": deep.timeout,
            "latency_ms": round(result.latency_ms, 1) if result.latency_ms is not None else None,
            "idle_s": round(now - t.last_busy, 1),
        }
        self._emit(now, t, "probe-failed", result.detail, probe="deep", evidence=evidence)
        if t.deep_fails < deep.failure_threshold:
            return []
        return self._decide(
            now, t, "deep", f"deep probe failed {t.deep_fails} times in a row: {result.detail}", evidence
        )

    def _maybe_end_run(self, now: float, t: Tracker) -> None:
        """Healthy for backoff.reset_after seconds: the next restart is immediate again."""
        record = self._record(t)
        reset_after = self.plan.policy.backoff_reset_after
        if (
            record.streak
            and t.healthy_since is not None
            and now - t.healthy_since >= reset_after
            and (record.last_restart is None or now - record.last_restart >= reset_after)
        ):

            def change(r: BackendRecord) -> None:
                r.streak = 0

            self.store.update(t.plan.name, change)

    # -- restarts -----------------------------------------------------------------------------

    def _decide(
        self, now: float, t: Tracker, probe: str, reason: str, evidence: dict[str, Any]
    ) -> list[Action]:
        if t.pending is not None or t.restarting or t.state is None:
            return []
        why, found = self._why(t, t.state, reason, current=True)
        if found.get("signature"):
            evidence = {**evidence, **{k: found[k] for k in ("signature", "runbook", "line")}}
            if "a restart cannot fix this" in why:
                self._hold(now, t, "unfixable", why, probe, evidence)
                return []
        t.detected_at = now
        t.pending = RestartRequest(
            t.plan.name, t.plan.unit, t.state.main_pid, probe, reason, evidence, detected_at=now
        )
        t.deferred_noted = False
        request = self._try_restart(now, t)
        return [request] if request is not None else []

    def _hold(
        self, now: float, t: Tracker, event: str, reason: str, probe: str | None, evidence: dict[str, Any]
    ) -> None:
        def change(record: BackendRecord) -> None:
            record.breaker = BreakerState(now, reason)

        self.store.update(t.plan.name, change)
        self._emit(now, t, event, reason, probe=probe, evidence=evidence)
        t.pending = None
        t.detected_at = None
        t.phase = "held"

    def _try_restart(self, now: float, t: Tracker) -> RestartRequest | None:
        request = t.pending
        assert request is not None
        policy = self.plan.policy
        record = self._record(t)
        if record.breaker is not None:
            t.pending = None
            return None
        recent = record.restarts_within(now, policy.breaker_window)
        if len(recent) >= policy.breaker_max_restarts:
            reason = (
                f"{len(recent)} restarts within {policy.breaker_window:.0f} s, and it failed again "
                f"({request.reason}): left alone until `llmctl reset {t.plan.name}`"
            )
            evidence = {
                **request.evidence,
                "restarts": [
                    {"time": events.now_iso(r.time), "reason": r.reason, "by": r.by} for r in recent
                ],
            }
            self._hold(now, t, "breaker-open", reason, request.probe, evidence)
            return None
        wait = policy.backoff(record.streak)
        if record.last_restart is not None and now < record.last_restart + wait:
            if not t.deferred_noted:
                t.deferred_noted = True
                until = datetime.fromtimestamp(record.last_restart + wait, UTC).isoformat(timespec="seconds")
                self._emit(
                    now, t, "deferred",
                    f"backoff: restart {record.streak + 1} of this run waits until {until} "
                    f"({wait:.0f} s after the last one)",
                    probe=request.probe, evidence={"backoff_s": wait, "streak": record.streak},
                )  # fmt: skip
            return None
        t.restarting = True
        return request

    def restart_done(
        self, now: float, request: RestartRequest, outcome: RestartOutcome, detail: str = ""
    ) -> None:
        t = self.trackers.get(request.backend)
        if t is None:
            return
        t.restarting = False
        if outcome is RestartOutcome.BUSY:
            return  # still pending: tried again next round (dropped if a switch is under way)
        t.pending = None
        if outcome is RestartOutcome.GONE:
            t.detected_at = None
            return
        policy = self.plan.policy

        def change(record: BackendRecord) -> None:
            record.restarts.append(Restart(now, request.probe))
            record.streak += 1
            record.last_restart = now

        record = self.store.update(request.backend, change)
        evidence = {
            **request.evidence,
            "main_pid": request.main_pid,
            "restarts_in_window": len(record.restarts_within(now, policy.breaker_window)),
            "next_backoff_s": policy.backoff(record.streak),
        }
        if outcome is RestartOutcome.FAILED:
            self._emit(
                now, t, "restart-failed", f"{request.reason}; systemctl: {detail}", request.probe, evidence
            )
            t.detected_at = None
            return
        self._emit(now, t, "restart", request.reason, request.probe, evidence)
        t.invocation = None
        t.phase = "starting"
        t.up = False
        t.reset_counts()
        t.healthy_since = None

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
