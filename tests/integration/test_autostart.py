"""enable / disable, tested as a reboot would: a new user manager on the same files brings the
stack back serving without any llmctl command."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import LLMCTL, WITH_USER_MANAGER, Provisioned, UserManager, json_result


@pytest.fixture
def private_root(tmp_path: Path) -> Iterator[tuple[Path, list[Path]]]:
    """A private root for managers started by the test, and their state dirs to stop at the end."""
    started: list[Path] = []
    yield tmp_path / "root", started
    for state_dir in started:
        subprocess.run([str(WITH_USER_MANAGER), "--stop", str(state_dir)], capture_output=True, check=False)


def start_manager(root: Path, state_dir: Path, started: list[Path]) -> None:
    subprocess.run(
        [str(WITH_USER_MANAGER), "--root", str(root), "--detach", "--state-dir", str(state_dir)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    started.append(state_dir)


def inside(state_dir: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WITH_USER_MANAGER), "--enter", str(state_dir), "--", *argv],
        capture_output=True, text=True, check=False, timeout=timeout, cwd=Path.cwd(),
    )  # fmt: skip


def test_enabled_stack_comes_back_after_a_new_user_manager(
    user_manager: UserManager,
    provisioned: Provisioned,
    smoke_model: Path,
    free_port: Callable[[], int],
    private_root: tuple[Path, list[Path]],
    tmp_path: Path,
) -> None:
    root, started = private_root
    config = tmp_path / "llmctl.yaml"
    port = free_port()
    config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "backends": {
                    "native": {
                        "kind": "llama-server",
                        "command": str(provisioned.llama_server),
                        "port": port,
                        "model": "smoke",
                        "gpus": [],
                    }
                },
                "models": {"smoke": {"backend": "native", "source": str(smoke_model), "context": 256}},
                "gateway": {"enabled": False},
            }
        )
    )
    llmctl = [*LLMCTL, "--config", str(config)]

    start_manager(root, tmp_path / "boot1", started)
    assert inside(tmp_path / "boot1", *llmctl, "up").returncode == 0
    enabled = inside(tmp_path / "boot1", *llmctl, "enable")
    assert enabled.returncode == 0, enabled.stderr
    assert "llmctl.target is wanted by default.target" in enabled.stdout
    assert "linger" in enabled.stderr  # explains what lingering would add (no logind here)
    subprocess.run(
        [str(WITH_USER_MANAGER), "--stop", str(tmp_path / "boot1")], check=True, capture_output=True
    )
    started.remove(tmp_path / "boot1")

    # "Reboot": a new manager on the same files. No llmctl command until status.
    start_manager(root, tmp_path / "boot2", started)
    deadline = time.monotonic() + 60
    while True:
        status = inside(tmp_path / "boot2", *llmctl, "status", "--json")
        units = json_result(status.stdout)["units"]
        if status.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status.returncode == 0, status.stdout
    assert units[0]["health"] == "ok" and units[0]["models"] == ["smoke"]

    # disable: the next manager does not start it.
    assert inside(tmp_path / "boot2", *llmctl, "disable").returncode == 0
    subprocess.run(
        [str(WITH_USER_MANAGER), "--stop", str(tmp_path / "boot2")], check=True, capture_output=True
    )
    started.remove(tmp_path / "boot2")
    start_manager(root, tmp_path / "boot3", started)
    time.sleep(2)
    status = inside(tmp_path / "boot3", *llmctl, "status", "--json")
    assert status.returncode == 3
    assert json_result(status.stdout)["units"][0]["active_state"] == "inactive"
