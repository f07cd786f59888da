"""enable / disable, tested as a reboot would: a new user manager on the same files brings the
stack back serving without any llmctl command."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import LLMCTL, Provisioned, UserManager, json_result

SYSTEMD = next(
    (p for p in (Path("/lib/systemd/systemd"), Path("/usr/lib/systemd/systemd")) if p.exists()),
    Path("/lib/systemd/systemd"),
)


class Boot:
    """One "boot" of the user: a user manager of its own on a private root kept from boot to
    boot (XDG_CONFIG_HOME with its unit files, XDG_STATE_HOME, XDG_DATA_HOME), with a new, empty
    XDG_RUNTIME_DIR each boot, as a reboot empties /run/user/UID.

    It runs as a transient service of the session's manager with Delegate=yes: its own cgroup
    subtree to put its units in, which is all that an ordinary user needs to run a second
    manager (no root, no second harness). Its units' lines are filed under the boot's unit
    rather than their own; this test reads their state, not their logs."""

    def __init__(self, root: Path, name: str) -> None:
        self.unit = f"{name}-{uuid.uuid4().hex[:8]}.service"
        runtime = root / f"run-{name}"  # a new one each boot (an old one keeps 0000 dirs of systemd's)
        runtime.mkdir(mode=0o700, parents=True)
        self.env = {
            "XDG_RUNTIME_DIR": str(runtime),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_DATA_HOME": str(root / "data"),
        }

    def start(self) -> None:
        argv = ["systemd-run", "--user", "--quiet", "--unit", self.unit, "--collect"]
        argv += ["-p", "Delegate=yes", "-p", "Type=notify"]
        argv += [f"--setenv={key}={value}" for key, value in self.env.items()]
        subprocess.run([*argv, str(SYSTEMD), "--user"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while (state := self.run("systemctl", "--user", "is-system-running").stdout.strip()) not in (
            "running",
            "degraded",
        ):
            assert time.monotonic() < deadline, f"{self.unit}: the manager is {state or 'not answering'}"
            time.sleep(0.1)

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout, env={**os.environ, **self.env}
        )

    def stop(self) -> None:
        """As at shutdown: the manager stops every unit, then exits."""
        self.run("systemctl", "--user", "exit")
        deadline = time.monotonic() + 60
        while outer("is-active", self.unit).stdout.strip() in ("active", "activating", "deactivating"):
            if time.monotonic() > deadline:
                outer("stop", self.unit)  # SIGTERM, then SIGKILL of its whole cgroup
                break
            time.sleep(0.1)


def outer(*args: str) -> subprocess.CompletedProcess[str]:
    """systemctl --user of the session's own manager."""
    return subprocess.run(
        ["systemctl", "--user", *args], capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture
def boots(tmp_path: Path) -> Iterator[Callable[[str], Boot]]:
    """Start a boot on this test's private root; every boot is stopped at the end."""
    started: list[Boot] = []

    def boot(name: str) -> Boot:
        started.append(Boot(tmp_path / "root", name))
        started[-1].start()
        return started[-1]

    yield boot
    for each in started:
        each.stop()


def test_enabled_stack_comes_back_after_a_new_user_manager(
    user_manager: UserManager,
    provisioned: Provisioned,
    smoke_model: Path,
    free_port: Callable[[], int],
    boots: Callable[[str], Boot],
    tmp_path: Path,
) -> None:
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

    boot1 = boots("boot1")
    up = boot1.run(*llmctl, "up")
    assert up.returncode == 0, up.stderr
    enabled = boot1.run(*llmctl, "enable")
    assert enabled.returncode == 0, enabled.stderr
    assert "llmctl.target is wanted by default.target" in enabled.stdout
    assert "linger" in enabled.stderr  # explains what lingering would add (no logind here)
    boot1.stop()

    # "Reboot": a new manager on the same files. No llmctl command until status.
    boot2 = boots("boot2")
    deadline = time.monotonic() + 60
    while True:
        status = boot2.run(*llmctl, "status", "--json")
        units = json_result(status.stdout)["units"]
        if status.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status.returncode == 0, status.stdout
    assert units[0]["health"] == "ok" and units[0]["models"] == ["smoke"]
    # Started by the boot's own manager, in its cgroup: not by the session's manager.
    cgroup = boot2.run(
        "systemctl", "--user", "show", "-p", "ControlGroup", "--value", "llmctl-native.service"
    )
    assert f"/{boot2.unit}/" in cgroup.stdout, cgroup.stdout

    # disable: the next manager does not start it.
    assert boot2.run(*llmctl, "disable").returncode == 0
    boot2.stop()
    # A manager answers "running" only once its start-up jobs are done: an enabled target
    # would be active (or activating) by then.
    boot3 = boots("boot3")
    status = boot3.run(*llmctl, "status", "--json")
    assert status.returncode == 3
    assert json_result(status.stdout)["units"][0]["active_state"] == "inactive"
