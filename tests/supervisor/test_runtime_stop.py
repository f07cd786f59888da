"""How the supervisor stops a backend it judged hung: a stop job, then SIGKILL after a grace.

systemd and the process table are replaced by a recorder: which systemctl calls, in which
order, and when the processes are gone."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llmctl import procs, systemd
from llmctl.errors import LlmctlError
from llmctl.supervisor import runtime


class FakeUnit:
    """Processes that exit `exits_after` seconds after SIGTERM (None: never), or on SIGKILL."""

    def __init__(self, exits_after: float | None) -> None:
        self.exits_after = exits_after
        self.calls: list[tuple[str, ...]] = []
        self.termed_at: float | None = None
        self.killed = False

    def running(self) -> bool:
        if self.killed:
            return False
        if self.termed_at is None or self.exits_after is None:
            return True
        return time.monotonic() < self.termed_at + self.exits_after

    def alive(self, pids: list[int]) -> list[int]:
        return list(pids) if self.running() else []

    def stop(self, units: list[str], *, block: bool = True, timeout: float | None = 300) -> None:
        self.calls.append(("stop", *units, "block" if block else "no-block"))
        self.termed_at = time.monotonic()

    def kill(self, units: list[str], signal: str) -> None:
        self.calls.append(("kill", *units, signal))
        self.killed = True

    def show(self, units: list[str]) -> dict[str, Any]:
        state = "active" if self.running() else "inactive"
        return {
            u: systemd.UnitState(u, "loaded", state, "dead", 0, 0, "success", "", 0, "static") for u in units
        }


@pytest.fixture
def unit(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> FakeUnit:
    fake = FakeUnit(request.param)
    monkeypatch.setattr(procs, "alive", fake.alive)
    monkeypatch.setattr(systemd, "stop", fake.stop)
    monkeypatch.setattr(systemd, "kill", fake.kill)
    monkeypatch.setattr(systemd, "show", fake.show)
    monkeypatch.setattr(runtime, "HUNG_STOP_GRACE", 0.3)
    return fake


@pytest.mark.parametrize("unit", [0.05], indirect=True)
def test_a_backend_that_exits_on_sigterm_is_not_killed(unit: FakeUnit) -> None:
    assert runtime.stop_hung("llmctl-a.service", [123]) == "SIGTERM"
    assert unit.calls == [("stop", "llmctl-a.service", "no-block")]


@pytest.mark.parametrize("unit", [None], indirect=True)
def test_a_backend_that_ignores_sigterm_is_killed_after_the_grace_not_after_timeoutstopsec(
    unit: FakeUnit,
) -> None:
    start = time.monotonic()
    how = runtime.stop_hung("llmctl-a.service", [123])
    waited = time.monotonic() - start
    assert how.startswith("SIGKILL after")
    assert unit.calls == [("stop", "llmctl-a.service", "no-block"), ("kill", "llmctl-a.service", "SIGKILL")]
    assert 0.3 <= waited < 5, waited  # the grace, then the kill: never the unit's 60 s


@pytest.mark.parametrize("unit", [None], indirect=True)
def test_processes_that_survive_sigkill_are_an_error(unit: FakeUnit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unit, "kill", lambda units, signal: unit.calls.append(("kill", *units, signal)))
    monkeypatch.setattr(systemd, "kill", unit.kill)
    monkeypatch.setattr(runtime, "GONE_TIMEOUT", 0.2)
    with pytest.raises(LlmctlError, match="still alive after SIGKILL"):
        runtime.stop_hung("llmctl-a.service", [123])
