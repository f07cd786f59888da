"""lifecycle: key files for keyed backends; waiting for a unit to serve (with and without a start job)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from llmctl import systemd
from llmctl.backends.base import Health, Probe
from llmctl.config.load import parse_config
from llmctl.errors import LlmctlError
from llmctl.lifecycle import ensure_backend_keys, wait_serving
from llmctl.paths import Paths
from llmctl.secrets import read_backend_key
from llmctl.stack import StackUnit
from tests.conftest import dump, minimal_config


def test_key_files_are_created_for_keyed_backends_only_and_only_once(paths: Paths) -> None:
    config = minimal_config()
    config["backends"]["b-vllm"] = {
        "kind": "vllm",
        "command": "/opt/vllm/bin/vllm",
        "port": 8001,
        "api_key": True,
    }
    config["backends"]["a-vllm"] = {"kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8002}
    parsed, _ = parse_config(dump(config))
    assert ensure_backend_keys(parsed, paths) == ["b-vllm"]
    key = read_backend_key(paths.backend_key_file("b-vllm"), "VLLM_API_KEY")
    assert not paths.backend_key_file("a-vllm").exists() and not paths.backend_key_file("llama").exists()
    assert ensure_backend_keys(parsed, paths) == []
    assert read_backend_key(paths.backend_key_file("b-vllm"), "VLLM_API_KEY") == key


# --- wait_serving with a start job ---------------------------------------------------------------


UNIT = StackUnit("native", "llmctl-native.service", "llama-server", "127.0.0.1", 1, "m", ("m",), 60, "", None)


def state(active: str) -> systemd.UnitState:
    return systemd.UnitState(UNIT.unit, "loaded", active, "running", 1, 0, "success", "", 0, "static")


class FakeManager:
    """`systemctl show` answers from the job: activating while it runs, active once it ended."""

    def __init__(self, job: systemd.StartJob | None, active_after: float) -> None:
        self.job, self.looks = job, 0
        self.active_at = time.monotonic() + active_after

    def show(self, units: list[str]) -> dict[str, systemd.UnitState]:
        self.looks += 1
        done = self.job.finished if self.job is not None else time.monotonic() >= self.active_at
        return {UNIT.unit: state("active" if done else "activating")}


@pytest.fixture
def probes_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmctl import lifecycle  # noqa: PLC0415

    monkeypatch.setattr(lifecycle, "probe_once", lambda *a: Probe(Health.OK, "/health 200"))


def job_ending_after(seconds: float) -> systemd.StartJob:
    return systemd.StartJob(
        UNIT.unit, subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    )


def test_with_a_start_job_the_wait_ends_when_the_job_does_and_looks_rarely(
    monkeypatch: pytest.MonkeyPatch, probes_ok: None
) -> None:
    job = job_ending_after(0.6)
    manager = FakeManager(job, 0)
    monkeypatch.setattr(systemd, "show", manager.show)
    start = time.monotonic()
    wait_serving(UNIT, 10, object(), None, job=job)
    took = time.monotonic() - start
    assert job.finished
    assert took < 0.6 + 0.15, "woken by the job's end, not by the next look"
    assert manager.looks <= 5, f"{manager.looks} looks in 0.6 s: polling at 20 ms would be ~30"


def test_without_a_job_it_polls_fast(monkeypatch: pytest.MonkeyPatch, probes_ok: None) -> None:
    manager = FakeManager(None, 0.3)
    monkeypatch.setattr(systemd, "show", manager.show)
    wait_serving(UNIT, 10, object(), None)
    assert manager.looks >= 8  # every 20 ms for the first seconds


def test_a_wait_that_fails_closes_the_job(monkeypatch: pytest.MonkeyPatch, probes_ok: None) -> None:
    from llmctl import lifecycle  # noqa: PLC0415

    job = job_ending_after(30)
    monkeypatch.setattr(systemd, "show", lambda units: {UNIT.unit: state("activating")})
    monkeypatch.setattr(lifecycle, "failure_report", lambda unit, why: LlmctlError(why))
    with pytest.raises(LlmctlError, match="not ready after"):
        wait_serving(UNIT, 0.3, object(), None, job=job)
    assert job.finished  # the systemctl client was stopped, not left behind


def test_a_failed_start_job_is_reported_once_it_ends(
    monkeypatch: pytest.MonkeyPatch, probes_ok: None
) -> None:
    from llmctl import lifecycle  # noqa: PLC0415

    job = job_ending_after(0.2)
    monkeypatch.setattr(systemd, "show", lambda units: {UNIT.unit: state("failed")})
    monkeypatch.setattr(lifecycle, "failure_report", lambda unit, why: LlmctlError(why))
    with pytest.raises(LlmctlError, match="the unit is failed"):
        wait_serving(UNIT, 10, object(), None, job=job)
    assert job.finished


def test_a_stale_active_state_before_the_restart_begins_is_not_taken_for_ready(
    monkeypatch: pytest.MonkeyPatch, probes_ok: None
) -> None:
    """`systemctl restart` in the background has not reached systemd yet: show still says the
    old process is active (and it answers). The wait must last until the job has ended."""
    job = job_ending_after(0.5)
    looks: list[bool] = []

    def show(units: list[str]) -> dict[str, systemd.UnitState]:
        looks.append(job.finished)
        return {UNIT.unit: state("active")}  # the old process, then the new one

    monkeypatch.setattr(systemd, "show", show)
    wait_serving(UNIT, 10, object(), None, job=job)
    assert job.finished and looks[-1] is True
    assert looks.count(False) >= 1  # it did look while the job ran, and did not stop there
