"""The exit wait that wakes the supervisor when a backend's main process exits."""

from __future__ import annotations

import subprocess
import threading

from llmctl.supervisor.exits import ExitWait


def run_in_thread(wait: ExitWait, timeout: float) -> tuple[threading.Thread, list[list[int]]]:
    out: list[list[int]] = []
    thread = threading.Thread(target=lambda: out.append(wait.run(timeout)))
    thread.start()
    return thread, out


def test_returns_the_pid_of_a_process_that_exits_not_the_ones_that_run() -> None:
    keeps = subprocess.Popen(["sleep", "60"])
    dies = subprocess.Popen(["sleep", "60"])
    try:
        thread, out = run_in_thread(ExitWait([keeps.pid, dies.pid]), timeout=60)
        dies.kill()  # still a zombie (not reaped) when the wait sees it: that is enough
        thread.join(30)
        assert not thread.is_alive() and out == [[dies.pid]]
    finally:
        keeps.kill()
        keeps.wait()
        dies.wait()


def test_a_pid_that_is_gone_already_returns_at_once_and_cancel_ends_a_wait() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert ExitWait([gone.pid]).run(60) == [gone.pid]
    keeps = subprocess.Popen(["sleep", "60"])
    try:
        wait = ExitWait([keeps.pid])
        thread, out = run_in_thread(wait, timeout=60)
        wait.cancel()
        thread.join(30)
        assert not thread.is_alive() and out == [[]]
        wait.cancel()  # after the end: harmless
    finally:
        keeps.kill()
        keeps.wait()
