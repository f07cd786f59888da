"""The gateway supervisor's own logic, with a stdlib stand-in for LiteLLM (tests/gateway_runtime/fake_child.py).

Each test runs the real `llmctl gateway serve` as a process (signals, pipes, the state file,
sd_notify) on a free loopback port; a generation starts in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmctl.errors import LlmctlError
from llmctl.gateway_runtime.reload import reload_wait
from llmctl.gateway_runtime.state import read_state

FAKE_CHILD = Path(__file__).with_name("fake_child.py")
SECRET = "sk-test-secret-that-must-stay-out-of-argv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].lstrip().startswith("Z")
    except OSError:
        return False


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    config: Path
    runtime: Path
    log: Path

    @property
    def state_file(self) -> Path:
        return self.runtime / "state.json"

    def state(self) -> dict[str, Any]:
        state = read_state(self.state_file)
        assert state is not None
        return state

    def get(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def wait_serving(self, generation: int) -> dict[str, Any]:
        def serving() -> dict[str, Any] | None:
            state = read_state(self.state_file)
            if (
                state
                and state["status"] == "serving"
                and (state["serving"] or {}).get("generation") == generation
            ):
                return state
            assert self.process.poll() is None, self.log.read_text()
            return None

        result: dict[str, Any] = wait_for(f"generation {generation} serving", serving)
        return result

    def reload(self, config: str | None, timeout: float = 10.0) -> tuple[bool, str]:
        if config is None:
            self.config.unlink()
        else:
            self.config.write_text(config)
        outcome = reload_wait(self.process.pid, self.state_file, timeout)
        return outcome.ok, outcome.message


Start = Callable[..., Gateway]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    started: list[Gateway] = []

    def start(
        config: str | None,
        *,
        ready_timeout: float = 5.0,
        wrap: list[str] | None = None,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
        host_port: bool = True,
    ) -> Gateway:
        path = tmp_path / f"gw{len(started)}" / "gateway.yaml"
        path.parent.mkdir()
        if config is not None:
            path.write_text(config)
        port = free_port()
        runtime = path.parent / "run"
        argv = [
            sys.executable, "-m", "llmctl", "gateway", "serve",
            "--litellm-python", sys.executable,
            "--child-script", str(FAKE_CHILD),
            "--config", str(path),
            "--runtime-dir", str(runtime),
            "--ready-timeout", str(ready_timeout),
            "--stop-timeout", "5",
        ]  # fmt: skip
        if host_port:
            argv += ["--host", "127.0.0.1", "--port", str(port)]
        log = path.parent / "log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*(wrap or []), *argv],
                env={**os.environ, "TEST_SECRET": SECRET, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=pass_fds,
            )
        gateway = Gateway(process, port, path, runtime, log)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.send_signal(signal.SIGTERM)
            try:
                gateway.process.wait(10)
            except subprocess.TimeoutExpired:
                gateway.process.kill()
                gateway.process.wait()


def config(tag: str, behaviour: str = "ok", ready_delay: float = 0.0, stop_delay: float = 0.0) -> str:
    return f"tag: {tag}\nbehaviour: {behaviour}\nready_delay: {ready_delay}\nstop_delay: {stop_delay}\n"


def test_first_generation_serves_from_a_private_snapshot(start: Start) -> None:
    text = config("a")
    gw = start(text)
    state = gw.wait_serving(1)
    served = gw.get()
    assert (served["tag"], served["generation"]) == ("a", 1)
    snapshot = Path(state["serving"]["config"])
    assert snapshot.parent == gw.runtime and snapshot.suffix == ".yaml"  # LiteLLM ignores other suffixes
    assert snapshot.read_text() == text and stat.S_IMODE(snapshot.stat().st_mode) == 0o400
    assert state["serving"]["config_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert state["serving"]["pid"] == served["pid"] and state["supervisor_pid"] == gw.process.pid
    assert state["listen"] == f"127.0.0.1:{gw.port}" and state["socket_activated"] is False
    assert state["last_reload"] is None
    env = served["env"]
    assert env["CONFIG_FILE_PATH"] == str(snapshot) and env["LITELLM_MODE"] == "PRODUCTION"
    assert env["LISTEN_FDS"] is None and env["NOTIFY_SOCKET"] is None
    # The key travels in the environment only.
    assert env["TEST_SECRET"] == SECRET
    for pid in (gw.process.pid, served["pid"]):
        assert SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_reload_starts_the_next_generation_then_stops_the_old_one(start: Start) -> None:
    gw = start(config("a"))
    old = gw.wait_serving(1)["serving"]
    ok, message = gw.reload(config("b", ready_delay=0.3))
    assert ok, message
    assert message.startswith("reload 1 succeeded") and "generation 2 serves" in message
    served = gw.get()
    assert (served["tag"], served["generation"]) == ("b", 2)
    state = gw.state()
    assert state["status"] == "serving" and state["serving"]["generation"] == 2
    assert (
        state["serving"]["config_sha256"] == hashlib.sha256(config("b", ready_delay=0.3).encode()).hexdigest()
    )
    assert state["last_reload"]["status"] == "succeeded" and state["last_reload"]["seq"] == 1
    assert state["last_reload"]["duration_s"] >= 0.3 and state["reloads"] == {"succeeded": 1, "failed": 0}
    assert state["draining"] == [] and state["starting"] is None
    # Reload returns once the old generation has exited, and its snapshot is gone.
    assert not alive(old["pid"])
    assert sorted(p.name for p in gw.runtime.iterdir()) == ["config-2.yaml", "state.json"]


@pytest.mark.parametrize(
    ("new_config", "error"),
    [
        (config("b", "fail"), "generation 2 exited with status 3 before it was ready"),
        (config("b", "hang"), "generation 2 was not ready within 1 s"),
        (None, "gateway.yaml does not exist"),
        ("  \n", "gateway.yaml is empty"),
    ],
    ids=["child-exits", "child-never-ready", "config-missing", "config-empty"],
)
def test_a_failed_reload_keeps_the_old_generation(start: Start, new_config: str | None, error: str) -> None:
    gw = start(config("a"), ready_timeout=1.0)
    gw.wait_serving(1)
    ok, message = gw.reload(new_config)
    assert not ok
    assert error in message and message.endswith("generation 1 keeps serving"), message
    served = gw.get()
    assert (served["tag"], served["generation"]) == ("a", 1)
    state = gw.state()
    assert state["status"] == "serving" and state["serving"]["generation"] == 1
    assert state["last_reload"]["status"] == "failed" and state["reloads"] == {"succeeded": 0, "failed": 1}
    assert state["starting"] is None
    assert sorted(p.name for p in gw.runtime.iterdir()) == ["config-1.yaml", "state.json"]
    assert "FAILED" in state["message"]
    # A child that was started and failed is gone too (none is started for a bad file).
    started = re.findall(r"generation 2 \(pid (\d+)\) starting", gw.log.read_text())
    assert len(started) == (1 if new_config and new_config.strip() else 0)
    assert not any(alive(int(pid)) for pid in started)
    # The next good config works.
    ok, message = gw.reload(config("c"))
    assert ok, message
    assert gw.get()["tag"] == "c"


def test_refuses_to_start_without_its_config(start: Start) -> None:
    gw = start(None)
    assert gw.process.wait(10) == 1
    state = gw.state()
    assert (
        state["status"] == "failed"
        and "does not exist (LiteLLM would start without any model)" in state["message"]
    )
    assert state["serving"] is None
    assert "child" not in gw.log.read_text()


def test_first_generation_that_fails_fails_the_start(start: Start) -> None:
    gw = start(config("a", "fail"))
    assert gw.process.wait(10) == 1
    assert "generation 1 exited with status 3 before it was ready" in gw.state()["message"]


def test_serving_child_that_dies_makes_the_supervisor_exit_nonzero(start: Start) -> None:
    gw = start(config("a", "die"))
    assert gw.process.wait(10) == 1  # Restart=on-failure: systemd starts it again
    state = gw.state()
    assert state["status"] == "failed"
    assert "generation 1" in state["message"] and "exited on its own (status 7)" in state["message"]


def test_sigterm_stops_the_child_and_exits_zero(start: Start) -> None:
    gw = start(config("a"))
    child = gw.wait_serving(1)["serving"]["pid"]
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(10) == 0
    assert not alive(child)
    assert gw.state()["status"] == "stopped"


def test_stop_while_the_new_generation_starts_abandons_it(start: Start) -> None:
    gw = start(config("a"))
    first = gw.wait_serving(1)["serving"]["pid"]
    gw.config.write_text(config("b", ready_delay=5))
    gw.process.send_signal(signal.SIGHUP)
    starting = wait_for("generation 2 starting", lambda: gw.state()["starting"])
    began = time.monotonic()
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(10) == 0
    assert time.monotonic() - began < 3, "it did not wait for the new generation's start-up"
    assert not alive(first) and not alive(starting["pid"])
    state = gw.state()
    assert state["status"] == "stopped" and state["last_reload"]["status"] == "failed"
    assert "generation 2 was abandoned: the gateway is stopping" in state["last_reload"]["error"]


def test_stop_while_the_old_generation_drains_stops_both_at_once(start: Start) -> None:
    gw = start(config("a", stop_delay=2))
    first = gw.wait_serving(1)["serving"]["pid"]
    gw.config.write_text(config("b", stop_delay=2))
    gw.process.send_signal(signal.SIGHUP)
    wait_for("generation 1 draining", lambda: gw.state()["draining"])
    began = time.monotonic()
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(10) == 0
    # Both drain in parallel: about one stop_delay, not two.
    assert time.monotonic() - began < 3.5
    state = gw.state()
    assert not alive(first) and not alive(state["serving"]["pid"])
    assert state["status"] == "stopped" and state["draining"] == []
    assert state["message"].startswith("stopped (generation 2 ") and "generation 1 " in state["message"]


def test_sighup_during_a_reload_runs_one_more_reload(start: Start) -> None:
    gw = start(config("a"))
    gw.wait_serving(1)
    gw.config.write_text(config("b", ready_delay=0.5))
    gw.process.send_signal(signal.SIGHUP)
    wait_for("reload 1 to begin", lambda: (gw.state()["last_reload"] or {}).get("seq") == 1)
    gw.config.write_text(config("c", ready_delay=0.2))
    gw.process.send_signal(signal.SIGHUP)
    gw.process.send_signal(signal.SIGHUP)  # coalesced with the one before
    state = wait_for(
        "reload 2 to finish",
        lambda: (
            (s := gw.state())["last_reload"]["seq"] == 2 and s["last_reload"]["status"] != "in-progress" and s
        ),
    )
    assert state["last_reload"]["status"] == "succeeded" and state["serving"]["generation"] == 3
    assert gw.get()["tag"] == "c"
    time.sleep(0.3)
    assert gw.state()["last_reload"]["seq"] == 2


def test_socket_from_systemd_and_sd_notify(start: Start, tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify"
    notify.bind(str(notify_path))
    notify.settimeout(10)
    # What systemd does: the socket as fd 3, LISTEN_PID naming the process it execs.
    activate = (
        "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd); "
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execv(sys.argv[2], sys.argv[2:])"
    )
    wrap = [sys.executable, "-c", activate, str(listener.fileno())]
    gw = start(
        config("a"),
        wrap=wrap,
        env={"NOTIFY_SOCKET": str(notify_path)},
        pass_fds=(listener.fileno(),),
        host_port=False,
    )
    first = notify.recv(4096).decode()
    assert first.startswith("STATUS=starting generation 1")
    messages = [notify.recv(4096).decode() for _ in range(1)]
    while not any(m.startswith("READY=1") for m in messages):
        messages.append(notify.recv(4096).decode())
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert ready.startswith("READY=1\nSTATUS=generation 1 (pid ")
    state = gw.state()
    assert state["socket_activated"] is True and state["listen"] == f"127.0.0.1:{port}"
    gw.port = port
    served = gw.get()
    assert served["tag"] == "a" and served["env"]["LISTEN_PID"] is None
    ok, _ = gw.reload(config("b"))
    assert ok and gw.get()["tag"] == "b"
    statuses = []
    with pytest.raises(TimeoutError):
        notify.settimeout(0.3)
        while True:
            statuses.append(notify.recv(4096).decode())
    assert statuses[-1].startswith("STATUS=generation 2 ") and "reload 1 succeeded" in statuses[-1]
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(10) == 0
    # The socket outlives the supervisor (systemd keeps it): it still accepts into its queue.
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    listener.close()
    notify.close()


def test_reload_wait_refuses_a_state_file_of_another_process(start: Start, tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="no gateway state"):
        reload_wait(os.getpid(), tmp_path / "nothing.json", 1)
    gw = start(config("a"))
    gw.wait_serving(1)
    with pytest.raises(LlmctlError, match=f"written by process {gw.process.pid}, not by 1$"):
        reload_wait(1, gw.state_file, 1)
