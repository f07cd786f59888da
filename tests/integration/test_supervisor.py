"""The supervisor against real llama-servers under the real user manager.

Intervals are shortened through the config (liveness every second, two or three failures) so
most scenarios take seconds; a frozen server at the defaults, crashes (which do not depend on
the probe settings) and the load test run at the defaults. Durations are measured by
bench/supervisor.py, not asserted here.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.paths import Paths
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, json_result
from tests.integration.spinning_server import install_spinning_server

SUPERVISOR = "llmctl-supervisor.service"
FAST = {"liveness": {"interval": 1, "timeout": 1, "failure_threshold": 3}, "deep": {"enabled": False}}


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


def show(unit: str) -> dict[str, str]:
    out = subprocess.run(
        ["systemctl", "--user", "show", unit, "-p", "ActiveState,SubState,MainPID,NRestarts,StatusText,Result"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class Stack:
    def __init__(self, root: Path, provisioned: Provisioned, model: Path) -> None:
        self.root = root
        self.provisioned = provisioned
        self.model = model
        self.config = root / "llmctl.yaml"
        self.state_dir = Paths.from_env().state_dir
        self.metrics_port = free_port()

    def write(
        self,
        supervisor: dict[str, Any],
        *,
        command: str | None = None,
        gateway: dict[str, Any] | None = None,
        parallel: int | None = None,
        kind: str = "llama-server",
    ) -> None:
        default = (
            self.provisioned.llama_server if kind == "llama-server" else self.provisioned.llama_cpp_python
        )
        backend: dict[str, Any] = {
            "kind": kind,
            "command": command or str(default),
            "port": free_port(),
            "model": "smoke",
            "gpus": [],
        }
        if parallel:
            backend["args"] = ["--parallel", str(parallel)]
        self.port = backend["port"]
        config = {
            "version": 1,
            "backends": {"native": backend},
            "models": {"smoke": {"backend": "native", "source": str(self.model), "context": 512}},
            "gateway": gateway or {"enabled": False},
            "supervisor": {"watchdog_sec": 5, "metrics": {"port": self.metrics_port}, **supervisor},
        }
        self.config.write_text(yaml.safe_dump(config))

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        path = self.state_dir / "events.jsonl"
        if not path.exists():
            return []
        found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in found if event is None or e["event"] == event]

    def serves(self) -> bool:
        try:
            response = httpx.post(
                f"http://127.0.0.1:{self.port}/v1/completions",
                json={"model": "smoke", "prompt": "hi", "max_tokens": 1},
                timeout=2,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def main_pid(self) -> int:
        return int(show("llmctl-native.service")["MainPID"])

    def record(self) -> dict[str, Any]:
        """The supervisor's record of the backend (supervisor.json): restarts, streak, breaker."""
        data: dict[str, Any] = json.loads((self.state_dir / "supervisor.json").read_text())
        return dict(data["backends"]["native"])


@pytest.fixture
def stack(
    user_manager: UserManager, provisioned: Provisioned, smoke_model: Path, tmp_path: Path
) -> Iterator[Stack]:
    the_stack = Stack(tmp_path, provisioned, smoke_model)
    for leftover in ("events.jsonl", "supervisor.json"):
        (the_stack.state_dir / leftover).unlink(missing_ok=True)
    yield the_stack
    # A frozen process would keep its port: wake everything before stopping it.
    for name in ("llmctl-native.service", SUPERVISOR):
        pid = int(show(name).get("MainPID", "0") or 0)
        if pid:
            os.kill(pid, signal.SIGCONT)
    the_stack.run("down")
    user_manager.forget_llmctl_units()


def test_a_frozen_server_is_restarted_and_serves_again(stack: Stack) -> None:
    stack.write(FAST)
    up = stack.run("up")
    assert up.returncode == 0, up.stderr
    assert show(SUPERVISOR)["ActiveState"] == "active"
    # Its first round came while `up` held the lock (paused); the next one sees the backend.
    wait_for("STATUS= says ok", lambda: show(SUPERVISOR)["StatusText"] == "1 backends: 1 ok", timeout=10)
    pid = stack.main_pid()
    assert stack.serves()

    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    restart = wait_for("a restart event", lambda: stack.events("restart"), timeout=20)[0]
    detected = time.monotonic() - stopped
    assert restart["backend"] == "native" and restart["probe"] == "liveness"
    assert "liveness failed 3 times in a row" in restart["reason"]
    assert [e["probe"] for e in stack.events("probe-failed")] == ["liveness"] * 3
    wait_for("serving again", stack.serves, timeout=30)
    serving = time.monotonic() - stopped
    assert stack.main_pid() != pid
    recovered = wait_for("a recovered event", lambda: stack.events("recovered"), timeout=10)[0]
    print(f"frozen -> restart event {detected:.1f} s, -> serving {serving:.1f} s; {recovered['evidence']}")

    # The journal has it with structured fields.
    journal = subprocess.run(
        ["journalctl", "--no-pager", "-o", "json", "LLMCTL_BACKEND=native", "LLMCTL_EVENT=restart"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    entries = [json.loads(line) for line in journal.splitlines() if line.strip()]
    assert entries and entries[-1]["LLMCTL_PROBE"] == "liveness", journal[-2000:]
    # status shows the last event per backend.
    rows = {u["name"]: u for u in json_result(stack.run("status", "--json").stdout)["units"]}
    assert rows["native"]["last_event"]["event"] in ("restart", "recovered")
    assert rows["supervisor"]["health"] == "ok" and rows["supervisor"]["kind"] == "supervisor"
    events = stack.run("events", "--json", "--since", "10m")
    assert [e["event"] for e in json.loads(events.stdout)["data"]["events"]][-2:] == ["restart", "recovered"]


def kill_and_wait_serving(stack: Stack) -> int:
    pid = stack.main_pid()
    os.kill(pid, signal.SIGKILL)
    wait_for("the old process gone", lambda: not Path(f"/proc/{pid}").exists(), timeout=10, interval=0.01)
    wait_for("serving again", stack.serves, timeout=30, interval=0.05)
    assert stack.main_pid() != pid
    return pid


def wait_ok(stack: Stack) -> None:
    wait_for("STATUS= says ok", lambda: show(SUPERVISOR)["StatusText"] == "1 backends: 1 ok", timeout=20)


def test_a_killed_server_is_restarted_at_once_exactly_once(stack: Stack) -> None:
    """kill -9: the supervisor hears the exit (pidfd) and starts the unit while systemd still
    waits RestartSec=10, so the first restart costs the load time, not the hold-off."""
    stack.write({})  # defaults: crashes do not depend on the probe settings
    assert stack.run("up").returncode == 0
    wait_ok(stack)
    kill_and_wait_serving(stack)
    crashed = wait_for("a crashed event", lambda: stack.events("crashed"), timeout=10)
    assert len(crashed) == 1, crashed
    assert crashed[0]["evidence"]["restarted_by"] == "supervisor", crashed[0]
    assert "restarted at once" in crashed[0]["reason"] and "signal" in crashed[0]["reason"]
    # Exactly one restart, by the supervisor, not systemd's timer; no backoff was announced.
    assert [(r["reason"], r["by"]) for r in stack.record()["restarts"]] == [("crash", "supervisor")]
    assert stack.events("deferred") == [] and stack.events("restart") == []
    recovered = wait_for("a recovered event", lambda: stack.events("recovered"), timeout=20)
    pid = stack.main_pid()
    time.sleep(6)  # longer than the liveness interval: a second restart would show now
    assert stack.main_pid() == pid and len(stack.record()["restarts"]) == 1
    print(
        f"crash -> serving: {recovered[0]['evidence']}; NRestarts {show('llmctl-native.service')['NRestarts']}"
    )


def test_a_repeated_crash_gets_systemds_backoff(stack: Stack) -> None:
    """A second crash right after the first is a repeated failure: no restart at once; systemd
    restarts it after RestartSec=, and the start limit still ends a crash loop."""
    stack.write({})
    assert stack.run("up").returncode == 0
    wait_ok(stack)
    kill_and_wait_serving(stack)
    wait_for("the first crash recorded", lambda: stack.events("crashed"), timeout=10)
    restarts_before = int(show("llmctl-native.service")["NRestarts"])
    kill_and_wait_serving(stack)
    deferred = wait_for("the backoff announced", lambda: stack.events("deferred"), timeout=10)
    assert deferred[0]["probe"] == "crash" and "RestartSec=" in deferred[0]["reason"], deferred
    # systemd's own timer restarted it this time (NRestarts went up), recorded once.
    assert int(show("llmctl-native.service")["NRestarts"]) == restarts_before + 1
    wait_for("two crashes recorded", lambda: len(stack.events("crashed")) == 2, timeout=10)
    assert [r["by"] for r in stack.record()["restarts"]] == ["supervisor", "systemd"]
    assert stack.record()["streak"] == 2


def test_a_frozen_server_is_restarted_at_the_defaults(stack: Stack) -> None:
    stack.write({})
    assert stack.run("up").returncode == 0
    wait_ok(stack)
    pid = stack.main_pid()
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    restart = wait_for("a restart event", lambda: stack.events("restart"), timeout=60, interval=0.2)[0]
    detected = time.monotonic() - stopped
    assert restart["probe"] == "liveness" and "liveness failed 3 times in a row" in restart["reason"]
    failed = stack.events("probe-failed")
    assert len(failed) == 3 and all("timed out" in e["reason"] for e in failed), failed
    wait_for("serving again", stack.serves, timeout=30, interval=0.05)
    assert stack.main_pid() != pid and len(stack.events("restart")) == 1
    print(
        f"frozen at the defaults -> restart event {detected:.1f} s, -> serving {time.monotonic() - stopped:.1f} s"
    )


def test_a_server_that_spins_without_progress_is_restarted(stack: Stack, tmp_path: Path) -> None:
    """It burns a CPU, /health never answers, and /slots shows a request whose token counts do
    not move: the CPU it uses does not excuse the timeouts."""
    stack.write(FAST, command=str(install_spinning_server(tmp_path)))
    up = stack.run("up")
    assert up.returncode == 0, up.stderr
    wait_ok(stack)
    pid = stack.main_pid()
    os.kill(pid, signal.SIGUSR1)
    restart = wait_for("a restart event", lambda: stack.events("restart"), timeout=60, interval=0.2)[0]
    assert "burns CPU but its token counters did not move" in restart["reason"], restart
    assert [e["probe"] for e in stack.events("probe-failed")] == ["liveness"] * 3
    wait_for("serving again", stack.serves, timeout=30, interval=0.05)
    assert stack.main_pid() != pid and len(stack.events("restart")) == 1


def test_llama_cpp_python_is_probed_on_a_route_it_has(stack: Stack) -> None:
    """It has no /health: its liveness probe asks FastAPI's /docs, so its journal shows 200s,
    not a 404 every interval."""
    stack.write(FAST, kind="llama-cpp-python")
    up = stack.run("up")
    assert up.returncode == 0, up.stderr
    wait_ok(stack)
    time.sleep(4)  # a few probes at 1 s
    journal = subprocess.run(
        ["journalctl", "--no-pager", "-o", "cat", "--user-unit", "llmctl-native.service"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert journal.count('"GET /docs HTTP/1.1" 200') >= 3, journal[-2000:]
    # uvicorn's access lines (earlier tests' llama-server lines share the unit name and carry
    # timings such as 309.404: look at the requests, not at any "404").
    assert 'HTTP/1.1" 404' not in journal and "GET /health" not in journal, journal[-2000:]
    assert stack.events("probe-failed") == [] and stack.events("restart") == []


WRAPPER = """#!/bin/sh
# llama-server that freezes soon after it starts serving, so it fails every start, behind a
# main process that ignores SIGTERM while it is wedged (until the test releases it): each
# restart must kill it, not wait out TimeoutStopSec= (60 s). Three seconds of serving: the
# unit's readiness gate must see it ready first, even on a loaded machine (else the unit
# stays "activating" and the supervisor waits out the start budget instead of backing off).
"{real}" "$@" &
child=$!
trap 'if [ -e "{release}" ]; then kill -CONT $child; kill -TERM $child; wait $child; exit 0; fi' TERM
while ! curl -sf "http://127.0.0.1:{port}/health" >/dev/null 2>&1; do sleep 0.05; done
sleep 3
kill -STOP $child
while :; do sleep 1; done
"""


def test_a_backend_that_fails_every_start_backs_off_then_the_breaker_holds_until_reset(
    stack: Stack, tmp_path: Path
) -> None:
    supervisor = {
        "liveness": {"interval": 1, "timeout": 1, "failure_threshold": 2},
        "deep": {"enabled": False},
        "backoff": {"initial": 6, "max": 60, "reset_after": 600},
        "breaker": {"max_restarts": 3, "window": 600},
    }
    wrapper = tmp_path / "freezing-llama-server"
    release = tmp_path / "release"  # the wrapper then exits on SIGTERM (the stack's teardown)
    stack.write(supervisor, command=str(wrapper))
    wrapper.write_text(WRAPPER.format(real=stack.provisioned.llama_server, port=stack.port, release=release))
    wrapper.chmod(0o755)
    try:
        up = stack.run("up")
        assert up.returncode == 0, up.stderr
        wait_for("the breaker opens", lambda: stack.events("breaker-open"), timeout=120, interval=0.5)
        restarts = stack.events("restart")
        assert len(restarts) == 3
        # Each stop: SIGTERM ignored, SIGKILL after the grace (10 s), never TimeoutStopSec=.
        assert [r["evidence"]["stopped_by"] for r in restarts] == ["SIGKILL after 10 s"] * 3, restarts
        # The backoff counts from the end of the last restart; a restart's own stop takes
        # ~10 s more, so only the lower bounds are the policy's.
        times = [time.mktime(time.strptime(e["time"][:19], "%Y-%m-%dT%H:%M:%S")) for e in restarts]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 6 - 1 and gaps[1] >= 12 - 1, gaps
        deferred = [e["evidence"]["backoff_s"] for e in stack.events("deferred")]
        assert 12 in deferred and set(deferred) <= {6, 12}, deferred
        breaker = stack.events("breaker-open")[0]
        assert "llmctl reset native" in breaker["reason"] and len(breaker["evidence"]["restarts"]) == 3
        # Left alone: frozen, but no more restarts.
        time.sleep(8)
        assert len(stack.events("restart")) == 3
        assert "held" in show(SUPERVISOR)["StatusText"]

        reset = stack.run("reset", "native")
        assert reset.returncode == 0 and "breaker closed" in reset.stdout, reset.stderr
        assert stack.events("reset")
        wait_for("acting again after the reset", lambda: len(stack.events("restart")) == 4, timeout=40)
    finally:
        release.touch()


def test_a_frozen_supervisor_is_restarted_by_systemds_watchdog(stack: Stack) -> None:
    stack.write(FAST)
    assert stack.run("up").returncode == 0
    before = show(SUPERVISOR)
    os.kill(int(before["MainPID"]), signal.SIGSTOP)
    # WatchdogSec=5, then RestartSec=5, then its first round.
    after = wait_for(
        "a new supervisor process",
        lambda: (
            (s := show(SUPERVISOR))["MainPID"] not in ("0", before["MainPID"])
            and s["ActiveState"] == "active"
            and s
        ),
        timeout=30,
        interval=0.5,
    )
    assert int(after["NRestarts"]) >= 1
    journal = subprocess.run(
        ["journalctl", "--no-pager", "--user-unit", "llmctl-supervisor.service"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert "Watchdog timeout" in journal or "watchdog" in journal.lower(), journal[-3000:]


def test_stopped_on_purpose_is_not_restarted(stack: Stack) -> None:
    stack.write(FAST)
    assert stack.run("up").returncode == 0
    assert stack.run("down", "native").returncode == 0
    time.sleep(6)
    assert show("llmctl-native.service")["ActiveState"] == "inactive"
    assert stack.run("up", "native").returncode == 0
    subprocess.run(["systemctl", "--user", "stop", "llmctl-native.service"], check=True)
    time.sleep(6)
    assert show("llmctl-native.service")["ActiveState"] == "inactive"
    assert stack.events("restart") == [] and stack.events("probe-failed") == []


def test_no_restart_under_fifty_concurrent_clients_for_a_minute(stack: Stack) -> None:
    gateway_port = free_port()
    stack.write(
        # Default timeout and threshold; probes five times as often, and deep probes allowed
        # after 5 idle seconds: a busy server must not look hung.
        {"liveness": {"interval": 2}, "deep": {"idle": 5, "interval": 10}},
        gateway={"command": str(stack.provisioned.litellm), "port": gateway_port},
        parallel=4,
    )
    up = stack.run("up")
    assert up.returncode == 0, up.stderr
    print(f"up done at {time.strftime('%H:%M:%S')}")
    key = stack.run("gateway", "key").stdout.strip()
    pid = stack.main_pid()
    deadline = time.monotonic() + 60
    codes: list[int] = []

    def client_loop(_: int) -> None:
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < deadline:
                response = client.post(
                    f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "smoke", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                )
                codes.append(response.status_code)

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(client_loop, range(50)))
    assert codes and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
    assert stack.main_pid() == pid
    assert show("llmctl-native.service")["NRestarts"] == "0"
    assert stack.events("restart") == [] and stack.events("probe-failed") == [], [
        (e["time"], e["event"], e["reason"]) for e in stack.events()
    ]
    print(f"{len(codes)} requests in 60 s through the gateway, no probe failure")
