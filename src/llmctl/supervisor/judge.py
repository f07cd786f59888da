"""What a probe result means for its backend.

A server that says it is loading again (llama-server's 503) is in startup: never restarted
before `startup.budget` has passed. `failure_threshold` failures in a row decide a restart,
which `RestartBook` then carries out, defers or refuses. After a failure the next liveness
probe comes `RETRY` seconds later, not a whole interval: a hung server is confirmed in
seconds, while a healthy one is asked only every `liveness.interval`. A deep probe that fails
is retried after `liveness.interval`, not after `deep.interval`.

A liveness timeout counts only when the process did no CPU work (a busy server can be slow to
answer; a stopped or deadlocked one uses none), or when it worked but made no progress: then
a `progress` probe reads its work counters twice (`Adapter.activity`) and the timeout counts
if they did not move (a server that spins a CPU in a loop). Counters it cannot read, or a
kind without them, leave the timeout excused, as before.
"""

from __future__ import annotations

from llmctl.supervisor.actions import Action, ProbeRequest, ProbeResult
from llmctl.supervisor.reporter import Reporter
from llmctl.supervisor.restarts import RestartBook
from llmctl.supervisor.tracker import Tracker

RETRY = 1.0  # seconds from a counted liveness failure to the next probe


class ProbeJudge:
    def __init__(self, reporter: Reporter, restarts: RestartBook) -> None:
        self.reporter = reporter
        self.restarts = restarts

    def liveness(self, now: float, t: Tracker, result: ProbeResult) -> list[Action]:
        """A liveness or startup probe's result."""
        t.last_detail = result.detail
        held = self.restarts.held(t)
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
                self.reporter.emit(
                    now, t, "recovered", "serving again after the restart",
                    evidence={"detection_to_serving_s": round(now - t.detected_at, 3)},
                )  # fmt: skip
                t.detected_at = None
            self.restarts.end_run_if_healthy(now, t)
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
            return self.restarts.decide(
                now, t, "startup", f"still loading {now - t.loading_since:.0f} s after it began "
                f"(budget {budget:.0f} s): {result.detail}", {"budget_s": budget},
            )  # fmt: skip
        if t.loading_since is not None and now - t.loading_since <= t.plan.startup.budget:
            return []  # failures while loading do not count
        if held or t.pending is not None:
            return []
        if result.timed_out and t.working:
            # A server busy generating can be slow to answer /health (its HTTP threads are all
            # taken), but its process is using CPU; a hung one (stopped, deadlocked) uses none.
            # Working, it must also show progress: its counters decide (`progress`).
            t.last_detail = f"{result.detail} (busy: its process is working)"
            if t.invocation is None:
                return []
            t.suspect = result
            t.inflight.add("liveness")  # the progress probe finishes this liveness probe
            return [ProbeRequest(t.plan.name, "progress", t.plan.liveness.timeout, t.invocation)]
        return self._count(now, t, result)

    def progress(self, now: float, t: Tracker, result: ProbeResult) -> list[Action]:
        """The counters of a server that timed out while it worked: moved, unreadable or flat."""
        suspect, t.suspect = t.suspect, None
        if suspect is None or self.restarts.held(t) or t.pending is not None:
            return []
        if result.ok or result.skipped:
            t.last_detail = f"{suspect.detail} (busy: its process is working; {result.detail})"
            return []
        detail = f"{suspect.detail}, and its process burns CPU but {result.detail}"
        return self._count(now, t, ProbeResult(False, detail, suspect.latency_ms, timed_out=True))

    def _count(self, now: float, t: Tracker, result: ProbeResult) -> list[Action]:
        threshold = t.plan.liveness.failure_threshold
        t.fails += 1
        evidence = {
            "consecutive": t.fails,
            "threshold": threshold,
            "timeout_s": t.plan.liveness.timeout,
            "latency_ms": round(result.latency_ms, 1) if result.latency_ms is not None else None,
        }
        self.reporter.emit(now, t, "probe-failed", result.detail, probe="liveness", evidence=evidence)
        if t.fails < threshold:
            t.next_liveness = min(t.next_liveness, now + min(RETRY, t.plan.liveness.interval))
            return []
        return self.restarts.decide(
            now, t, "liveness", f"liveness failed {t.fails} times in a row: {result.detail}", evidence
        )

    def deep(self, now: float, t: Tracker, result: ProbeResult) -> list[Action]:
        """A deep probe's result."""
        deep = t.plan.deep
        t.cpu = None  # the probe's own work is not activity
        if result.skipped or result.ok:
            t.deep_fails = 0
            t.next_deep = now + deep.interval
            return []
        t.next_deep = now + t.plan.liveness.interval
        if self.restarts.held(t) or t.pending is not None:
            return []
        t.deep_fails += 1
        evidence = {
            "consecutive": t.deep_fails,
            "threshold": deep.failure_threshold,
            "timeout_s": deep.timeout,
            "latency_ms": round(result.latency_ms, 1) if result.latency_ms is not None else None,
            "idle_s": round(now - t.last_busy, 1),
        }
        self.reporter.emit(now, t, "probe-failed", result.detail, probe="deep", evidence=evidence)
        if t.deep_fails < deep.failure_threshold:
            return []
        return self.restarts.decide(
            now, t, "deep", f"deep probe failed {t.deep_fails} times in a row: {result.detail}", evidence
        )
