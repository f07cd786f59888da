"""The supervisor's decisions about a crash (restarted at once, or left to systemd's RestartSec=
and start limit) and about a server that does not answer while its process works (its work
counters decide), with a fake clock and scripted probe results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llmctl.supervisor.engine import RestartOutcome
from llmctl.supervisor.plan import LivenessSettings, Policy
from tests.supervisor.harness import FAIL, FLAT, OK, T0, crash, make, unit_state


def test_a_first_crash_is_restarted_at_once_and_serves_again(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.step(10)
    [kick] = crash(h, 0.1)
    assert kick.crashed and kick.probe == "crash" and "the process exited" in kick.reason
    assert h.engine.summary() == "1 backends: 1 restarting (native)"
    assert crash(h, 0.1) == []  # one restart per exit, however many rounds see it
    h.restart(kick)
    event = h.events[-1]
    assert (event.event, event.evidence["restarted_by"]) == ("crashed", "supervisor")
    assert event.evidence["waited_s"] == pytest.approx(0.1)  # from seeing the exit to the start
    record = h.store.get("native")
    assert [(r.reason, r.by) for r in record.restarts] == [("crash", "supervisor")] and record.streak == 1
    h.now += 2
    h.step(0, OK)
    assert h.kinds() == ["crashed", "recovered"]
    assert h.events[-1].evidence["detection_to_serving_s"] == pytest.approx(2.1)


def test_a_repeated_crash_waits_for_systemds_restart_and_is_recorded_once(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.step(10)
    h.restart(crash(h)[0])
    h.step(5, OK)
    # Crashes again 5 s later: inside the backoff (10 s after the first restart), so systemd's
    # RestartSec= spaces it, and the event says so.
    assert crash(h) == []
    assert h.kinds()[-1] == "deferred" and "RestartSec=" in h.events[-1].reason
    assert h.events[-1].evidence["backoff_s"] == 10
    h.state = unit_state(pid=300, restarts=1, since=3)  # systemd restarted it (NRestarts 1)
    assert not h.restarts(h.step(10, OK))
    assert h.kinds()[-1] == "crashed" and "systemd restarted it" in h.events[-1].reason
    assert [(r.by) for r in h.store.get("native").restarts] == ["supervisor", "systemd"]
    assert h.store.get("native").streak == 2
    # Once the backoff has passed, a crash is restarted at once again.
    h.step(25, OK)
    assert len(crash(h)) == 1


def test_a_crash_restart_systemd_beat_or_a_switch_blocked_is_left_to_systemd(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.step(10)
    [kick] = crash(h)
    h.engine.restart_done(h.now, kick, RestartOutcome.BUSY)
    assert h.store.get("native").restarts == [] and h.kinds() == []
    assert crash(h) == []  # not retried: systemd's own restart follows
    h.state = unit_state(pid=200, restarts=1, since=2)
    h.step(10, OK)
    assert [r.by for r in h.store.get("native").restarts] == ["systemd"]
    h.step(10, OK)
    [kick] = crash(h)
    h.engine.restart_done(h.now, kick, RestartOutcome.GONE)
    assert [r.by for r in h.store.get("native").restarts] == ["systemd"]


def test_no_restart_at_once_for_a_crash_loop_an_open_breaker_or_an_unfixable_failure(tmp_path: Path) -> None:
    policy = Policy(backoff_initial=1, backoff_max=1, breaker_max_restarts=2, breaker_window=1800)
    h = make(tmp_path, policy=policy)
    h.step(10)
    for _ in range(2):
        [kick] = crash(h, 5)
        h.restart(kick)
        h.step(5, OK)
    assert crash(h, 5) == []  # two restarts in the window: systemd and its start limit now
    assert h.kinds()[-1] == "deferred"

    h2 = make(tmp_path / "b")
    h2.step(10)
    h2.journal.append("gguf_init_from_file: failed to open GGUF file '/m/x.gguf' (No such file or directory)")
    assert crash(h2) == []


def test_crash_restarts_are_not_asked_for_while_a_switch_holds_the_lock(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.step(10)
    h.busy = "llmctl switch holds the lock"
    assert crash(h) == []


def test_a_server_that_spins_without_progress_is_hung(tmp_path: Path) -> None:
    """Its process burns CPU, /health times out, and its token counters stand still with
    requests in flight: each such timeout counts, and the third restarts it."""
    h = make(tmp_path)
    h.step(0)
    for n in (1, 2, 3):
        h.cpu = (h.cpu or 0.0) + 10.0  # a whole core
        actions = h.step(10, FAIL, progress=FLAT)
        assert bool(h.restarts(actions)) == (n == 3)
    [request] = h.restarts(actions)
    assert "burns CPU but its token counters did not move" in request.reason
    assert h.kinds() == ["probe-failed"] * 3


def test_a_failure_is_confirmed_by_probes_a_second_apart(tmp_path: Path) -> None:
    """Healthy: probed every interval. After a failure the next probe is 1 s later, so a hung
    server is restarted within interval + threshold x (timeout + 1 s), not interval x threshold."""
    h = make(tmp_path, liveness=LivenessSettings(interval=5, timeout=3, failure_threshold=3))
    h.step(0)
    assert not h.probes(h.step(1)) and not h.probes(h.step(3))
    assert h.probes(h.step(1, FAIL))  # 5 s after the first
    h.now += 3  # the probe's timeout
    sent = []
    for _ in range(10):
        actions = h.step(0.5, FAIL)
        sent += [h.now] * len(h.probes(actions))
        if h.restarts(actions):
            break
    assert h.restarts(actions), "restarted"
    assert sent[0] - (T0 + 5 + 3) <= 1.0
    assert h.now - T0 <= 5 + 3 + 2 * 1.0, h.now - T0


def test_a_crash_of_a_run_no_round_saw_is_still_a_new_crash(tmp_path: Path) -> None:
    """The restarted process crashes before any round has seen it run: a new exit all the same
    (a new run), so it is judged (here: a repeated failure, left to systemd's RestartSec=)."""
    h = make(tmp_path)
    h.step(10)
    [kick] = crash(h)
    h.engine.restart_done(h.now, kick, RestartOutcome.DONE)
    h.state = replace(h.state, started_monotonic_us=5_000_000)  # the run the restart started
    assert crash(h) == []
    assert h.kinds()[-1] == "deferred"
