"""The supervisor's decisions, with a fake clock, fake unit states and scripted probe results."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from llmctl.supervisor.engine import ProbeResult, RestartOutcome
from llmctl.supervisor.plan import DeepSettings, LivenessSettings, Policy, StartupSettings
from llmctl.supervisor.store import BackendRecord, Store
from tests.supervisor.harness import FAIL, LOADING, MOVED, OK, T0, UNREADABLE, hang, make, unit_state


def test_liveness_restarts_after_the_threshold_and_not_before(tmp_path: Path) -> None:
    h = make(tmp_path)
    first = h.step(0)
    assert [a.probe for a in h.probes(first)] == ["liveness"]
    assert not h.restarts(h.step(10, FAIL)) and not h.restarts(h.step(10, FAIL))
    assert h.kinds() == ["probe-failed", "probe-failed"]
    # A success in between starts the count again.
    h.step(10, OK)
    assert not h.restarts(h.step(10, FAIL)) and not h.restarts(h.step(10, FAIL))
    [request] = h.restarts(h.step(10, FAIL))
    assert (request.probe, request.main_pid) == ("liveness", 100)
    assert "liveness failed 3 times in a row: GET /health: timed out" in request.reason
    h.restart(request)
    assert h.kinds()[-1] == "restart" and h.events[-1].probe == "liveness"
    record = h.store.get("native")
    assert (record.streak, len(record.restarts), record.last_restart) == (1, 1, h.now)
    # Serving again: a `recovered` event says how long detection to serving took.
    h.now += 3
    h.step(0, OK)
    assert h.kinds()[-1] == "recovered"
    assert h.events[-1].evidence["detection_to_serving_s"] == pytest.approx(3.0)


def test_no_probes_or_restarts_while_activating_stopped_or_failed(tmp_path: Path) -> None:
    h = make(tmp_path)
    for active, sub in (("activating", "start-post"), ("inactive", "dead")):
        h.state = unit_state(active=active, sub=sub)
        assert h.step(10, FAIL) == []
    h.state = unit_state(active="failed", sub="failed")
    assert h.step(10, FAIL) == []
    assert h.kinds() == ["failed"]  # noted once, not acted on
    assert h.step(10, FAIL) == [] and h.kinds() == ["failed"]
    assert h.store.get("native").restarts == []


def test_loading_is_startup_never_restarted_inside_the_budget(tmp_path: Path) -> None:
    h = make(tmp_path, startup=StartupSettings(interval=2, timeout=5, budget=60))
    h.step(10, OK)
    kinds = []
    for _ in range(20):  # 40 s of "loading model": probed every 2 s, never acted on
        actions = h.step(2, LOADING)
        assert not h.restarts(actions)
        kinds += [p.probe for p in h.probes(actions)]
    # The liveness probe found it loading; from then on the startup probe, every 2 s.
    assert kinds[0] == "liveness" and set(kinds[1:]) == {"startup"} and len(kinds) >= 15
    assert h.kinds() == []
    for _ in range(30):
        actions = h.step(2, LOADING)
        if h.restarts(actions):
            break
    [request] = h.restarts(actions)
    assert request.probe == "startup" and "budget 60 s" in request.reason
    assert h.now - T0 > 10 + 60


def test_nothing_counts_while_a_switch_holds_the_lock(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.step(10, OK)
    h.step(10, FAIL)
    h.step(10, FAIL)
    h.busy = "a switch is under way (intent.json)"
    assert h.step(10, FAIL) == []
    assert "paused: a switch" in h.engine.summary()
    h.busy = None
    # The count started over: two more failures are not enough.
    assert not h.restarts(h.step(10, FAIL)) and not h.restarts(h.step(10, FAIL))


def test_busy_restart_is_retried_and_gone_is_dropped(tmp_path: Path) -> None:
    h = make(tmp_path)
    request = hang(h)
    h.engine.restart_done(h.now, request, RestartOutcome.BUSY)
    [again] = h.restarts(h.step(1, FAIL))
    assert again == request
    h.engine.restart_done(h.now, again, RestartOutcome.GONE)
    assert "restart" not in h.kinds() and h.store.get("native").restarts == []


def test_backoff_doubles_between_restarts_and_is_capped(tmp_path: Path) -> None:
    policy = Policy(backoff_initial=10, backoff_max=40, backoff_reset_after=600, breaker_max_restarts=100)
    h = make(tmp_path, liveness=LivenessSettings(interval=1, timeout=1, failure_threshold=1), policy=policy)
    h.step(1)
    times = []
    for _ in range(6):
        actions = h.step(1, FAIL)
        while not h.restarts(actions):
            actions = h.step(1, FAIL)
        times.append(h.now)
        h.restart(h.restarts(actions)[0])
    gaps = [round(b - a) for a, b in itertools.pairwise(times)]
    assert gaps == [10, 20, 40, 40, 40]
    assert h.kinds().count("deferred") == 5  # once per wait, not once per round


def test_backoff_run_ends_after_a_healthy_period(tmp_path: Path) -> None:
    policy = Policy(backoff_initial=10, backoff_max=300, backoff_reset_after=60, breaker_max_restarts=100)
    h = make(tmp_path, liveness=LivenessSettings(interval=5, timeout=1, failure_threshold=1), policy=policy)
    h.step(5)
    h.restart(h.restarts(h.step(5, FAIL))[0])
    assert h.store.get("native").streak == 1
    for _ in range(13):  # 65 s healthy
        h.step(5, OK)
    assert h.store.get("native").streak == 0
    assert h.restarts(h.step(5, FAIL)), "the next restart is immediate again"


def test_breaker_opens_after_max_restarts_in_the_window_until_reset(tmp_path: Path) -> None:
    policy = Policy(backoff_initial=1, backoff_max=1, breaker_max_restarts=3, breaker_window=1800)
    h = make(tmp_path, liveness=LivenessSettings(interval=2, timeout=1, failure_threshold=1), policy=policy)
    h.step(2)
    for _ in range(3):
        h.restart(h.restarts(h.step(2, FAIL))[0])
    assert h.restarts(h.step(2, FAIL)) == []
    assert h.kinds()[-1] == "breaker-open" and "llmctl reset native" in h.events[-1].reason
    assert len(h.events[-1].evidence["restarts"]) == 3
    assert h.store.get("native").breaker is not None
    for _ in range(20):  # left alone, and quiet: no more probe-failed events either
        assert h.restarts(h.step(2, FAIL)) == []
    assert h.kinds()[-1] == "breaker-open"
    assert h.engine.trackers["native"].phase == "held"

    # `llmctl reset native` (another process) clears the record; the next round sees it.
    def reset(record: BackendRecord) -> None:
        record.breaker, record.streak, record.restarts = None, 0, []

    Store(tmp_path / "state").update("native", reset)
    assert h.restarts(h.step(2, FAIL))


def test_crashes_count_for_the_breaker(tmp_path: Path) -> None:
    h = make(tmp_path, liveness=LivenessSettings(interval=2, timeout=1, failure_threshold=1))
    h.step(2)
    for n in range(1, 4):
        h.state = unit_state(pid=100 + n, restarts=n, since=n + 1)
        h.step(2)
    assert h.kinds() == ["crashed"] * 3
    assert h.restarts(h.step(2, FAIL)) == [] and h.kinds()[-1] == "breaker-open"


def test_a_failure_a_restart_cannot_fix_is_recorded_not_restarted(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.step(10)
    h.journal.append("ggml_backend_cuda_buffer_type_alloc_buffer: cudaMalloc failed: out of memory")
    h.step(10, FAIL)
    h.step(10, FAIL)
    assert h.restarts(h.step(10, FAIL)) == []
    event = h.events[-1]
    assert event.event == "unfixable" and "a restart cannot fix this" in event.reason
    assert event.evidence["signature"] == "cuda-out-of-memory" and event.evidence["runbook"]
    assert h.store.get("native").breaker is not None
    assert h.restarts(h.step(10, FAIL)) == []


def test_a_crash_with_an_unfixable_signature_says_so(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.step(10)
    h.journal.append("gguf_init_from_file: failed to open GGUF file '/m/x.gguf' (No such file or directory)")
    h.state = unit_state(pid=0, active="activating", sub="auto-restart", restarts=1)
    h.step(10)
    assert h.kinds() == ["crashed"] and "a restart cannot fix this" in h.events[0].reason
    assert h.events[0].evidence["signature"] == "model-file-missing"


def test_deep_probe_only_when_idle_and_rate_limited(tmp_path: Path) -> None:
    deep = DeepSettings(enabled=True, idle=30, interval=100, timeout=5, failure_threshold=2)
    h = make(tmp_path, deep=deep, liveness=LivenessSettings(interval=5, timeout=1, failure_threshold=3))
    h.step(0)
    deep_at = []
    for i in range(60):  # 300 s
        # Busy (1 s of CPU per 5 s round) for the first 60 s, then idle.
        h.cpu = (h.cpu or 0.0) + (1.0 if i < 12 else 0.0)
        actions = h.step(5)
        if any(p.probe == "deep" for p in h.probes(actions)):
            deep_at.append(h.now - T0)
    assert deep_at, "an idle server gets a deep probe"
    assert deep_at[0] >= 60 + 30, deep_at  # only after 30 s without activity
    assert all(b - a >= 100 for a, b in itertools.pairwise(deep_at)), deep_at


def test_deep_failures_restart_and_the_event_names_the_probe(tmp_path: Path) -> None:
    deep = DeepSettings(enabled=True, idle=10, interval=100, timeout=5, failure_threshold=2)
    h = make(tmp_path, deep=deep, liveness=LivenessSettings(interval=5, timeout=1, failure_threshold=3))
    h.step(0)
    bad = ProbeResult(False, "the one-token completion timed out after 5 s", 5000.0)
    restart = []
    for _ in range(20):
        actions = h.step(5, OK, deep=bad)
        restart += h.restarts(actions)
        if restart:
            break
    [request] = restart
    assert request.probe == "deep" and "deep probe failed 2 times in a row" in request.reason
    failed = [e for e in h.events if e.event == "probe-failed"]
    assert [e.probe for e in failed] == ["deep", "deep"]
    # The retry came after liveness.interval, not after the 100 s rate limit.
    assert failed[1].when.timestamp() - failed[0].when.timestamp() <= 10


def test_a_result_about_an_old_process_is_ignored(tmp_path: Path) -> None:
    h = make(tmp_path)
    [request] = h.probes(h.round())
    h.state = unit_state(pid=555, since=9)
    h.round()
    assert h.engine.probe_done(h.now, "native", "liveness", request.invocation, FAIL) == []
    assert h.engine.trackers["native"].fails == 0


def test_status_line(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.step(0)
    assert h.engine.summary() == "1 backends: 1 ok"
    h.step(10, FAIL)
    assert h.engine.summary() == "1 backends: 1 failing (native)"


def test_a_busy_server_slow_to_answer_is_not_counted_a_hung_one_is(tmp_path: Path) -> None:
    """Under load llama-server can take longer than the timeout to answer /health, but its
    process is working; a stopped or deadlocked one uses no CPU. Only the latter counts."""
    h = make(tmp_path)
    h.step(0)
    for progress in (MOVED, UNREADABLE) * 3:
        h.cpu = (h.cpu or 0.0) + 5.0  # 50 % of a core over each 10 s step: generating
        actions = h.step(10, FAIL, progress=progress)
        # Its counters are read (a progress probe); moving or unreadable, the timeout is excused.
        assert [p.probe for p in h.probes(actions)] == ["liveness", "progress"]
        assert not h.restarts(actions)
    assert h.kinds() == []
    assert "busy: its process is working" in h.engine.trackers["native"].last_detail
    # Frozen (kill -STOP): no CPU any more, the same timeouts now count.
    for _ in range(2):
        assert not h.restarts(h.step(10, FAIL))
    assert h.kinds() == ["probe-failed", "probe-failed"]
    assert h.restarts(h.step(10, FAIL))
