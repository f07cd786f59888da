"""lifecycle and converge: key files for keyed backends; waiting for a unit to serve (with and
without a start job); the checks before a start."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmctl import systemd
from llmctl.backends.base import Health, Probe
from llmctl.config.load import parse_config
from llmctl.converge import preflight, wait_serving
from llmctl.errors import ExitCode, LlmctlError
from llmctl.lifecycle import ensure_backend_keys
from llmctl.paths import Paths
from llmctl.secrets import read_backend_key
from llmctl.stack import GATEWAY_KIND, StackUnit
from tests.conftest import dump, free_port, minimal_config


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
    from llmctl import converge  # noqa: PLC0415

    monkeypatch.setattr(converge, "probe_once", lambda *a: Probe(Health.OK, "/health 200"))


def job_ending_after(seconds: float, code: int = 0) -> systemd.StartJob:
    """A stand-in for `systemctl start`: exits `code` (0: the job is done, the unit active)."""
    return systemd.StartJob(
        UNIT.unit,
        subprocess.Popen(
            [sys.executable, "-c", f"import sys, time; time.sleep({seconds}); sys.exit({code})"]
        ),
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


def test_a_start_job_that_succeeded_is_believed_without_a_show(
    monkeypatch: pytest.MonkeyPatch, probes_ok: None
) -> None:
    """systemctl start exits 0 only once the unit is active: one probe confirms it serves."""
    job = job_ending_after(0.05)
    manager = FakeManager(job, 0)
    monkeypatch.setattr(systemd, "show", manager.show)
    wait_serving(UNIT, 10, object(), None, job=job)
    assert manager.looks == 0


def test_a_start_job_that_succeeded_but_does_not_serve_is_looked_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmctl import converge  # noqa: PLC0415

    answers = iter([Probe(Health.DOWN, "connection refused"), Probe(Health.OK, "/health 200")])
    monkeypatch.setattr(converge, "probe_once", lambda *a: next(answers))
    job = job_ending_after(0.05)
    manager = FakeManager(job, 0)
    monkeypatch.setattr(systemd, "show", manager.show)
    wait_serving(UNIT, 10, object(), None, job=job)
    assert manager.looks == 1  # the job's word was not enough: systemd asked, then probed again


def test_without_a_job_it_polls_fast(monkeypatch: pytest.MonkeyPatch, probes_ok: None) -> None:
    manager = FakeManager(None, 0.3)
    monkeypatch.setattr(systemd, "show", manager.show)
    wait_serving(UNIT, 10, object(), None)
    assert manager.looks >= 8  # every 20 ms for the first seconds


def test_a_wait_that_fails_closes_the_job(monkeypatch: pytest.MonkeyPatch, probes_ok: None) -> None:
    from llmctl import converge  # noqa: PLC0415

    job = job_ending_after(30)
    monkeypatch.setattr(systemd, "show", lambda units: {UNIT.unit: state("activating")})
    monkeypatch.setattr(converge, "failure_report", lambda unit, why: LlmctlError(why))
    with pytest.raises(LlmctlError, match="not ready after"):
        wait_serving(UNIT, 0.3, object(), None, job=job)
    assert job.finished  # the systemctl client was stopped, not left behind


def test_a_failed_start_job_is_reported_once_it_ends(
    monkeypatch: pytest.MonkeyPatch, probes_ok: None
) -> None:
    from llmctl import converge  # noqa: PLC0415

    job = job_ending_after(0.2, code=1)  # systemctl exits 1 when the job failed
    monkeypatch.setattr(systemd, "show", lambda units: {UNIT.unit: state("failed")})
    monkeypatch.setattr(converge, "failure_report", lambda unit, why: LlmctlError(why))
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


# --- gateway.cache --------------------------------------------------------------------------------


def test_a_new_redis_conf_or_password_restarts_redis_and_a_new_password_the_gateway_too() -> None:
    from llmctl.install import ChangeKind, FileChange  # noqa: PLC0415
    from llmctl.lifecycle import _to_restart  # noqa: PLC0415
    from llmctl.up_report import UpResult  # noqa: PLC0415

    conf = UpResult(files=[FileChange("llmctl/redis.conf", ChangeKind.CHANGED, "a", "b")])
    assert _to_restart(conf) == {"llmctl/redis.conf", "systemd/user/llmctl-redis.service"}
    password = UpResult(redis_password_created=True)
    assert _to_restart(password) == {
        "systemd/user/llmctl-redis.service",
        "systemd/user/llmctl-gateway.service",
    }
    assert _to_restart(UpResult()) == set()


def test_ensure_redis_makes_a_private_data_dir_and_the_password_only_with_a_cache(paths: Paths) -> None:
    import stat  # noqa: PLC0415

    from llmctl.lifecycle import ensure_redis  # noqa: PLC0415

    plain, _ = parse_config(dump(minimal_config()))
    assert ensure_redis(plain, paths) is False
    assert not paths.redis_env_file.exists() and not paths.redis_data_dir.exists()
    config = minimal_config()
    config["gateway"]["cache"] = {"type": "redis"}
    cached, _ = parse_config(dump(config))
    assert ensure_redis(cached, paths) is True
    assert ensure_redis(cached, paths) is False
    assert stat.S_IMODE(paths.redis_data_dir.stat().st_mode) == 0o700
    assert paths.redis_env_file.exists() and paths.redis_auth_file.exists()


def test_redis_is_probed_over_resp_not_http() -> None:
    from llmctl.readiness import probe_once  # noqa: PLC0415
    from tests.conftest import free_port  # noqa: PLC0415

    probe = probe_once(object(), "redis", f"http://127.0.0.1:{free_port()}", None)  # type: ignore[arg-type]
    assert (probe.health, probe.detail) == (Health.DOWN, "connection refused")


def test_converge_uses_the_states_it_is_given_when_they_cover_its_units(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmctl.converge import converge  # noqa: PLC0415

    shows: list[list[str]] = []

    def show(units: list[str]) -> dict[str, systemd.UnitState]:
        shows.append(units)
        return {u: state("active") for u in units}

    monkeypatch.setattr(systemd, "show", show)
    running = {UNIT.unit: state("active"), "llmctl-other.service": state("inactive")}
    outcomes = converge([UNIT], set(), states=running)
    assert [(o.unit, o.action) for o in outcomes] == [(UNIT.unit, "unchanged")]
    assert shows == []  # what `up` had just seen
    converge([UNIT], set(), states={"llmctl-other.service": state("inactive")})
    assert shows == [[UNIT.unit]]  # not covered: asked again


# --- gateway.litellm_metrics -----------------------------------------------------------------------


def fake_litellm(tmp_path: Path, python: str) -> Path:
    """A `litellm` entry point whose #! names `python`, as pip writes it into a venv."""
    entry = tmp_path / "bin" / "litellm"
    entry.parent.mkdir(exist_ok=True)
    entry.write_text(f"#!{python}\nimport sys\n")
    entry.chmod(0o755)
    return entry


def gateway_unit(command: Path) -> StackUnit:
    return StackUnit(
        name="gateway", unit="llmctl-gateway.service", kind=GATEWAY_KIND, host="127.0.0.1",
        port=free_port(), model=None, models=(), start_timeout=60, command=str(command), model_file=None,
    )  # fmt: skip


def test_up_refuses_litellm_metrics_when_litellms_python_lacks_prometheus_client(tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("#!/bin/sh\nexit 1\n")  # finds no module
    python.chmod(0o755)
    unit = gateway_unit(fake_litellm(tmp_path, str(python)))
    with pytest.raises(LlmctlError) as info:
        preflight([unit], {}, litellm_metrics=True)
    assert "nothing was changed" in info.value.message
    assert info.value.exit_code == ExitCode.USAGE
    (problem,) = info.value.details
    assert "gateway.litellm_metrics needs prometheus_client" in problem
    assert f"{python} -m pip install prometheus-client" in problem
    assert "gateway.litellm_metrics: false" in problem
    preflight([unit], {}, litellm_metrics=False)  # off: nothing to import


def test_up_lets_litellm_metrics_through_when_the_module_is_there(tmp_path: Path) -> None:
    # The dev venv's python has prometheus_client (llmctl's supervisor uses it).
    preflight([gateway_unit(fake_litellm(tmp_path, sys.executable))], {}, litellm_metrics=True)
