"""Whether a restart the engine decided on goes ahead now, later or never, and its record in
the `Store` (backoff, breaker, restart history).

A decided restart first reads the unit's journal: a failure a restart cannot fix
(`llmctl.signatures`, restart_helps=False) is recorded as `unfixable` and the backend is left
alone. Then the breaker: `breaker.max_restarts` restarts within `breaker.window` opens it
instead. Then the backoff: restarts in a run are spaced backoff.initial, x2, ... up to
backoff.max seconds; `backoff.reset_after` seconds of health end the run. Restarts by systemd
itself (crashes) count for the breaker and the backoff too.

A crash (the process exited; systemd waits RestartSec= before its own restart) is restarted at
once when the backoff and the breaker allow a restart now: the first failure of a run costs
its load time, not RestartSec=. A repeated one is left to RestartSec= and the unit's start
limit (StartLimitBurst= starts in StartLimitIntervalSec=), which end a crash loop even when
the supervisor is not running; so is one whose journal shows a failure a restart cannot fix.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from llmctl.supervisor import events
from llmctl.supervisor.actions import Action, RestartOutcome, RestartRequest
from llmctl.supervisor.plan import Policy
from llmctl.supervisor.reporter import Reporter
from llmctl.supervisor.store import BackendRecord, BreakerState, Restart, Store
from llmctl.supervisor.tracker import Tracker
from llmctl.systemd import UnitState


class RestartBook:
    def __init__(self, store: Store, reporter: Reporter, policy: Policy) -> None:
        self.store = store
        self.reporter = reporter
        self.policy = policy  # the plan's: Engine.set_plan replaces it

    def held(self, t: Tracker) -> bool:
        """Its breaker is open (too many restarts, or a failure a restart cannot fix)."""
        return self.store.get(t.plan.name).breaker is not None

    def record_crash(self, now: float, t: Tracker, st: UnitState, count: int) -> None:
        """systemd restarted it `count` times on its own (NRestarts went up)."""
        reason, evidence = self.reporter.why(
            t, st, f"the process exited ({st.result}) and systemd restarted it"
        )

        def change(record: BackendRecord) -> None:
            record.restarts.extend(Restart(now, "crash", by="systemd") for _ in range(count))
            record.streak += count
            record.last_restart = now

        self.store.update(t.plan.name, change)
        self.reporter.emit(now, t, "crashed", reason, evidence=evidence)

    def crashed(self, now: float, t: Tracker) -> RestartRequest | None:
        """The unit waits for systemd's automatic restart: a restart now, or None (once per exit)."""
        st = t.state
        if st is None or t.restarting or t.crash_noted == (st.started_monotonic_us, st.n_restarts):
            return None
        t.crash_noted = (st.started_monotonic_us, st.n_restarts)
        reason, evidence = self.reporter.why(t, st, f"the process exited ({st.result})")
        if "a restart cannot fix this" in reason:
            return None  # systemd's restart and its start limit; `crashed` says why
        record = self.store.get(t.plan.name)
        policy = self.policy
        wait = policy.backoff(record.streak)
        recent = len(record.restarts_within(now, policy.breaker_window))
        if recent >= policy.breaker_max_restarts or (
            record.last_restart is not None and now < record.last_restart + wait
        ):
            self.reporter.emit(
                now, t, "deferred",
                f"{reason}: a repeated failure ({record.streak + 1} in this run, {recent} restarts "
                f"within {policy.breaker_window:.0f} s): systemd restarts it after its RestartSec=",
                probe="crash", evidence={**evidence, "backoff_s": wait, "streak": record.streak},
            )  # fmt: skip
            return None
        t.restarting = True
        t.detected_at = now
        return RestartRequest(
            t.plan.name, t.plan.unit, st.main_pid, "crash", f"{reason}; restarted at once", evidence,
            detected_at=now, crashed=True,
        )  # fmt: skip

    def end_run_if_healthy(self, now: float, t: Tracker) -> None:
        """Healthy for backoff.reset_after seconds: the next restart is immediate again."""
        record = self.store.get(t.plan.name)
        reset_after = self.policy.backoff_reset_after
        if (
            record.streak
            and t.healthy_since is not None
            and now - t.healthy_since >= reset_after
            and (record.last_restart is None or now - record.last_restart >= reset_after)
        ):

            def change(r: BackendRecord) -> None:
                r.streak = 0

            self.store.update(t.plan.name, change)

    def decide(
        self, now: float, t: Tracker, probe: str, reason: str, evidence: dict[str, Any]
    ) -> list[Action]:
        if t.pending is not None or t.restarting or t.state is None:
            return []
        why, found = self.reporter.why(t, t.state, reason, current=True)
        if found.get("signature"):
            evidence = {**evidence, **{k: found[k] for k in ("signature", "runbook", "line")}}
            if "a restart cannot fix this" in why:
                self.hold(now, t, "unfixable", why, probe, evidence)
                return []
        t.detected_at = now
        t.pending = RestartRequest(
            t.plan.name, t.plan.unit, t.state.main_pid, probe, reason, evidence, detected_at=now
        )
        t.deferred_noted = False
        request = self.try_restart(now, t)
        return [request] if request is not None else []

    def hold(
        self, now: float, t: Tracker, event: str, reason: str, probe: str | None, evidence: dict[str, Any]
    ) -> None:
        def change(record: BackendRecord) -> None:
            record.breaker = BreakerState(now, reason)

        self.store.update(t.plan.name, change)
        self.reporter.emit(now, t, event, reason, probe=probe, evidence=evidence)
        t.pending = None
        t.detected_at = None
        t.phase = "held"

    def try_restart(self, now: float, t: Tracker) -> RestartRequest | None:
        request = t.pending
        assert request is not None
        policy = self.policy
        record = self.store.get(t.plan.name)
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
            self.hold(now, t, "breaker-open", reason, request.probe, evidence)
            return None
        wait = policy.backoff(record.streak)
        if record.last_restart is not None and now < record.last_restart + wait:
            if not t.deferred_noted:
                t.deferred_noted = True
                until = datetime.fromtimestamp(record.last_restart + wait, UTC).isoformat(timespec="seconds")
                self.reporter.emit(
                    now, t, "deferred",
                    f"backoff: restart {record.streak + 1} of this run waits until {until} "
                    f"({wait:.0f} s after the last one)",
                    probe=request.probe, evidence={"backoff_s": wait, "streak": record.streak},
                )  # fmt: skip
            return None
        t.restarting = True
        return request

    def done(
        self, now: float, t: Tracker, request: RestartRequest, outcome: RestartOutcome, detail: str = ""
    ) -> None:
        t.restarting = False
        if outcome is RestartOutcome.BUSY and not request.crashed:
            return  # still pending: tried again next round (dropped if a switch is under way)
        t.pending = None
        if outcome is RestartOutcome.GONE or (request.crashed and outcome is not RestartOutcome.DONE):
            # Someone else acted; or (a crash) systemd restarts it after RestartSec= instead.
            t.detected_at = None
            return
        policy = self.policy

        def change(record: BackendRecord) -> None:
            if request.crashed:
                record.restarts.append(Restart(now, "crash", by="supervisor"))
            else:
                record.restarts.append(Restart(now, request.probe))
            record.streak += 1
            record.last_restart = now

        record = self.store.update(request.backend, change)
        if request.crashed:
            evidence = {
                **request.evidence,
                "restarted_by": "supervisor",
                "waited_s": round(now - request.detected_at, 3),
                "restarts_in_window": len(record.restarts_within(now, policy.breaker_window)),
                "next_backoff_s": policy.backoff(record.streak),
            }
            self.reporter.emit(now, t, "crashed", request.reason, evidence=evidence)
            t.next_liveness = now  # look again each tick until the new process runs (and is watched)
            t.phase = "starting"
            t.up = False
            t.healthy_since = None
            return
        evidence = {
            **request.evidence,
            "main_pid": request.main_pid,
            **({"stopped_by": detail} if outcome is RestartOutcome.DONE and detail else {}),
            "restarts_in_window": len(record.restarts_within(now, policy.breaker_window)),
            "next_backoff_s": policy.backoff(record.streak),
        }
        if outcome is RestartOutcome.FAILED:
            self.reporter.emit(
                now, t, "restart-failed", f"{request.reason}; systemctl: {detail}", request.probe, evidence
            )
            t.detected_at = None
            return
        self.reporter.emit(now, t, "restart", request.reason, request.probe, evidence)
        t.next_liveness = now
        t.invocation = None
        t.phase = "starting"
        t.up = False
        t.reset_counts()
        t.healthy_since = None
