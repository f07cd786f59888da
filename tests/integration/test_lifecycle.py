"""up / status / logs / restart / down against a real user manager and real llama.cpp servers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from llmctl.lock import state_lock
from llmctl.paths import Paths
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, json_result

Run = Callable[..., subprocess.CompletedProcess[str]]


def write_config(path: Path, backends: dict[str, Any], models: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump({"version": 1, "backends": backends, "models": models, "gateway": {"enabled": False}})
    )
    return path


@pytest.fixture
def llmctl(user_manager: UserManager, tmp_path: Path) -> Iterator[Run]:
    """Run the real CLI in a process; afterwards stop whatever the test started."""
    configs: list[Path] = []

    def run(
        config: Path, *args: str, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        configs.append(config)
        return subprocess.run(
            [*LLMCTL, "--config", str(config), *args],
            capture_output=True, text=True, timeout=timeout, check=check,
        )  # fmt: skip

    yield run
    if configs:
        subprocess.run(
            [*LLMCTL, "--config", str(configs[-1]), "down"],
            capture_output=True,
            check=False,
        )
    user_manager.forget_llmctl_units()


@pytest.fixture
def two_backends(
    tmp_path: Path, provisioned: Provisioned, smoke_model: Path, free_port: Callable[[], int]
) -> Path:
    return write_config(
        tmp_path / "llmctl.yaml",
        {
            "native": {
                "kind": "llama-server",
                "command": str(provisioned.llama_server),
                "port": free_port(),
                "model": "smoke-native",
                "gpus": [],
            },
            "pyserver": {
                "kind": "llama-cpp-python",
                "command": str(provisioned.llama_cpp_python),
                "port": free_port(),
                "model": "smoke-py",
                "gpus": [],
            },
        },
        {
            "smoke-native": {"backend": "native", "source": str(smoke_model), "context": 256},
            "smoke-py": {"backend": "pyserver", "source": str(smoke_model), "context": 256},
        },
    )


def status_json(run: Run, config: Path) -> tuple[int, dict[str, Any]]:
    result = run(config, "status", "--json")
    return result.returncode, {u["name"]: u for u in json_result(result.stdout)["units"]}


def chat(port: int, model: str) -> dict[str, Any]:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def port_bound(port: int) -> bool:
    with socket.socket() as sock:
        # As a server binds: connections of the stopped server lingering in TIME_WAIT (the
        # probes close theirs) do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_up_status_chat_restart_logs_down(llmctl: Run, two_backends: Path) -> None:
    config = yaml.safe_load(two_backends.read_text())
    ports = {name: b["port"] for name, b in config["backends"].items()}

    up = llmctl(two_backends, "up")
    assert up.returncode == 0, up.stderr
    assert "llmctl-native.service: started" in up.stdout and "llmctl-pyserver.service: started" in up.stdout

    code, units = status_json(llmctl, two_backends)
    assert code == 0
    for name in ("native", "pyserver"):
        unit = units[name]
        assert unit["health"] == "ok" and unit["active_state"] == "active"
        assert unit["main_pid"] and Path(f"/proc/{unit['main_pid']}").exists()
        assert unit["rss_bytes"] > 1_000_000
    assert units["native"]["models"] == ["smoke-native"]

    assert chat(ports["native"], "smoke-native")["choices"]
    assert chat(ports["pyserver"], "smoke-py")["choices"]

    # Nothing changed: nothing restarts.
    again = llmctl(two_backends, "up")
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert status_json(llmctl, two_backends)[1]["native"]["main_pid"] == units["native"]["main_pid"]

    # A restart by hand shows in status: a new PID, healthy again as soon as systemctl returns.
    subprocess.run(["systemctl", "--user", "restart", "llmctl-native.service"], check=True, timeout=60)
    after = status_json(llmctl, two_backends)[1]["native"]
    assert after["main_pid"] != units["native"]["main_pid"] and after["health"] == "ok"

    # The servers' own lines about the requests: uvicorn's access log for llama-cpp-python,
    # the slot that ran the task for llama-server (it logs request paths only with -v).
    logs = llmctl(two_backends, "logs", "-n", "500")
    assert logs.returncode == 0
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in logs.stdout, logs.stdout[-3000:]
    native_lines = [line for line in logs.stdout.splitlines() if " llmctl-native[" in line]
    assert any("prompt eval time" in line or "launch_slot" in line for line in native_lines), logs.stdout[
        -3000:
    ]

    pids = [units[n]["main_pid"] for n in units] + [after["main_pid"]]
    down = llmctl(two_backends, "down")
    assert down.returncode == 0, down.stderr
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not any(port_bound(p) for p in ports.values())
    code, units = status_json(llmctl, two_backends)
    assert code == 3 and {u["health"] for u in units.values()} == {"down"}


def test_plain_systemctl_start_returns_only_once_serving(llmctl: Run, two_backends: Path) -> None:
    assert llmctl(two_backends, "up", "native").returncode == 0
    port = yaml.safe_load(two_backends.read_text())["backends"]["native"]["port"]
    subprocess.run(["systemctl", "--user", "stop", "llmctl-native.service"], check=True)
    subprocess.run(["systemctl", "--user", "start", "llmctl-native.service"], check=True, timeout=60)
    # No polling: the start job itself waited for the server.
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200


def installed(user_manager: UserManager) -> list[str]:
    return sorted(p.name for p in user_manager.unit_dir.glob("llmctl*"))


def test_port_taken_by_a_foreign_process_changes_nothing(
    llmctl: Run, two_backends: Path, user_manager: UserManager
) -> None:
    port = yaml.safe_load(two_backends.read_text())["backends"]["native"]["port"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = llmctl(two_backends, "up")
    assert result.returncode == 1  # the machine's state, not a usage error
    assert (
        f"native: port {port} is already in use by {psutil.Process().name()} (pid {os.getpid()})"
        in result.stderr
    )
    assert "nothing was changed" in result.stderr
    assert installed(user_manager) == []


def test_missing_executable_and_model_file_change_nothing(
    llmctl: Run, tmp_path: Path, user_manager: UserManager, free_port: Callable[[], int]
) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "native": {
                "kind": "llama-server",
                "command": str(tmp_path / "no-llama-server"),
                "port": free_port(),
                "model": "m",
            }
        },
        {"m": {"backend": "native", "source": str(tmp_path / "gone.gguf")}},
    )
    result = llmctl(config, "up")
    assert result.returncode == 2
    assert f"native: executable '{tmp_path / 'no-llama-server'}' not found" in result.stderr
    assert f"native: model file {tmp_path / 'gone.gguf'} does not exist" in result.stderr
    assert installed(user_manager) == []


def test_model_that_fails_to_load_is_reported_at_once(
    llmctl: Run, tmp_path: Path, provisioned: Provisioned, free_port: Callable[[], int]
) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(64))
    config = write_config(
        tmp_path / "c.yaml",
        {
            "native": {
                "kind": "llama-server",
                "command": str(provisioned.llama_server),
                "port": free_port(),
                "model": "m",
                "gpus": [],
            }
        },
        {"m": {"backend": "native", "source": str(corrupt)}},
    )
    start = time.monotonic()
    result = llmctl(config, "up")
    assert result.returncode == 1
    assert time.monotonic() - start < 30, "reported when the server exited, not at the 300 s deadline"
    assert "native did not become ready" in result.stderr
    assert "journal lines" in result.stderr
    assert "recognised: the server could not load the model file" in result.stderr
    assert "hint: llmctl runbook backend-does-not-start --backend native" in result.stderr


def test_lock_held_by_another_llmctl(llmctl: Run, two_backends: Path) -> None:
    with state_lock(Paths.from_env().state_dir, "switch"):
        result = llmctl(two_backends, "up", "--no-wait")
    assert result.returncode == 1
    assert f"pid {os.getpid()} (switch" in result.stderr and "holds the llmctl lock" in result.stderr


def test_no_user_manager_reachable(two_backends: Path, tmp_path: Path) -> None:
    empty = tmp_path / "runtime"
    empty.mkdir(mode=0o700)
    result = subprocess.run(
        [*LLMCTL, "--config", str(two_backends), "up"],
        capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(empty)},
    )  # fmt: skip
    assert result.returncode == 3  # not running: nothing can run without a manager
    assert "no systemd user manager is reachable" in result.stderr
    assert "enable-linger" in result.stderr
