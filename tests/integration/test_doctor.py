"""llmctl doctor against a real user manager and a stack that `llmctl up` brought up: the
verify, ports and units checks pass, then a squatted port and a hand-edited unit show up."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import LLMCTL, Provisioned, UserManager, json_result

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def stack(
    user_manager: UserManager,
    provisioned: Provisioned,
    smoke_model: Path,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> Iterator[tuple[Path, int, int]]:
    """A config with llama-server on the smoke model and the gateway; torn down afterwards."""
    native_port, gateway_port = free_port(), free_port()
    config = tmp_path / "llmctl.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "backends": {
                    "native": {
                        "kind": "llama-server",
                        "command": str(provisioned.llama_server),
                        "port": native_port,
                        "model": "smoke",
                        "gpus": [],
                    }
                },
                "models": {"smoke": {"backend": "native", "source": str(smoke_model), "context": 256}},
                "gateway": {"command": str(provisioned.litellm), "port": gateway_port},
            }
        )
    )
    yield config, native_port, gateway_port
    subprocess.run([*LLMCTL, "--config", str(config), "down"], capture_output=True, check=False)
    user_manager.forget_llmctl_units()


def llmctl(config: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLMCTL, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def doctor(config: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    result = llmctl(config, "doctor", "--json")
    envelope = json.loads(result.stdout)
    assert envelope["command"] == "doctor"
    assert envelope["ok"] is (result.returncode == 0)
    return result.returncode, {c["name"]: c for c in json_result(result.stdout)["checks"]}


def test_doctor_on_a_real_stack_then_a_squatted_port_and_a_hand_edited_unit(
    stack: tuple[Path, int, int], user_manager: UserManager
) -> None:
    config, native_port, gateway_port = stack
    up = llmctl(config, "up")
    assert up.returncode == 0, up.stderr

    code, checks = doctor(config)
    for name in (
        "config",
        "user-manager",
        "unit-files",
        "units",
        "executables",
        "ports",
        "models",
        "gateway-key",
    ):
        assert checks[name]["status"] == "ok", checks[name]
    assert code == 0, checks  # linger may warn (no logind here); nothing fails
    installed = len(list(user_manager.unit_dir.glob("llmctl*")))  # the backend, gateway, socket, target...
    assert checks["unit-files"]["reason"] == f"systemd-analyze verify: {installed} unit file(s) clean"
    ports = checks["ports"]["details"]
    assert f"native: 127.0.0.1:{native_port} held by llmctl-native.service" in ports
    # The gateway's port is held by the user manager for llmctl-gateway.socket.
    assert f"gateway: 127.0.0.1:{gateway_port} held by llmctl-gateway.service" in ports
    assert any("llama-server" in d and "version" in d for d in checks["executables"]["details"])

    # Someone else takes the backend's port while it is stopped.
    subprocess.run(["systemctl", "--user", "stop", "llmctl-native.service"], check=True)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the server's TIME_WAITs
        squatter.bind(("127.0.0.1", native_port))
        squatter.listen()
        code, checks = doctor(config)
    assert code == 1
    assert checks["ports"]["status"] == "fail"
    assert checks["ports"]["reason"] == "taken by another process: native"
    assert any(
        d.startswith(f"native: 127.0.0.1:{native_port} in use by ") and "not by llmctl-native.service" in d
        for d in checks["ports"]["details"]
    ), checks["ports"]
    assert llmctl(config, "up").returncode == 0

    # A unit file edited by hand: systemd-analyze complains, it is out of step with the config,
    # and systemd still runs the old version until a daemon-reload.
    unit = user_manager.unit_dir / "llmctl-native.service"
    unit.write_text(unit.read_text().replace("\nType=exec\n", "\nType=exec\nRestartSecs=5\n"))
    code, checks = doctor(config)
    assert code == 1
    assert checks["unit-files"]["status"] == "fail"
    assert any("Unknown key 'RestartSecs'" in d for d in checks["unit-files"]["details"]), checks[
        "unit-files"
    ]
    assert checks["units"]["status"] == "warn"
    assert checks["units"]["details"] == [
        "changed: systemd/user/llmctl-native.service",
        "llmctl-native.service: changed on disk, systemd still runs the old version",
    ]
    subprocess.run(["systemctl", "--user", "daemon-reload"], check=True)
    _, checks = doctor(config)
    assert checks["units"]["details"] == ["changed: systemd/user/llmctl-native.service"]

    # llmctl up puts the config's unit back; everything is in step again.
    assert llmctl(config, "up").returncode == 0
    code, checks = doctor(config)
    assert code == 0, checks
    assert checks["units"]["status"] == "ok" and checks["unit-files"]["status"] == "ok"
