"""Snapshots, rollback and crash-safe apply against the real user manager and llama-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.transaction import PAUSE_VARIABLE
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, json_result


class Stack:
    """One llama-server backend whose model the tests change through the config."""

    def __init__(self, tmp_path: Path, provisioned: Provisioned, smoke_model: Path, port: int) -> None:
        self.config = tmp_path / "llmctl.yaml"
        self.port = port
        self.provisioned = provisioned
        self.good = smoke_model
        self.corrupt = tmp_path / "corrupt.gguf"
        self.corrupt.write_bytes(b"GGUF" + os.urandom(64))

    def write(self, model: str, *, source: Path | None = None, context: int = 256) -> None:
        self.config.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "backends": {
                        "native": {
                            "kind": "llama-server",
                            "command": str(self.provisioned.llama_server),
                            "port": self.port,
                            "model": model,
                            "gpus": [],
                        }
                    },
                    "models": {
                        "alpha": {"backend": "native", "source": str(self.good), "context": context},
                        "beta": {"backend": "native", "source": str(source or self.good), "context": context},
                    },
                    "gateway": {"enabled": False},
                }
            )
        )

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )

    def serving(self) -> list[str]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/v1/models", timeout=5)
        return [m["id"] for m in response.json()["data"]]

    def snapshot_ids(self) -> list[str]:
        listing = json.loads(self.run("snapshot", "list", "--json").stdout)
        return [s["id"] for s in listing["data"]["snapshots"]]


@pytest.fixture
def stack(
    user_manager: UserManager,
    tmp_path: Path,
    provisioned: Provisioned,
    smoke_model: Path,
    free_port: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    # A state dir per test: a serving record left by one test's switch must not decide the next.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    the_stack = Stack(tmp_path, provisioned, smoke_model, free_port())
    yield the_stack
    the_stack.run("down")
    user_manager.forget_llmctl_units()


def unit_text(user_manager: UserManager) -> str:
    return (user_manager.unit_dir / "llmctl-native.service").read_text()


def test_failed_change_is_rolled_back_and_the_old_model_serves(
    stack: Stack, user_manager: UserManager
) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    before = unit_text(user_manager)
    assert stack.serving() == ["alpha"]

    stack.write("beta", source=stack.corrupt)
    result = stack.run("up")
    assert result.returncode == 1
    assert "native did not become ready" in result.stderr
    assert "rolled back to snapshot" in result.stderr, result.stderr
    assert "the previous state serves again" in result.stderr
    assert unit_text(user_manager) == before
    assert stack.serving() == ["alpha"]
    # The user's edit is still there to fix, not overwritten by the rollback.
    assert yaml.safe_load(stack.config.read_text())["backends"]["native"]["model"] == "beta"
    status = stack.run("status", "--json")
    assert json.loads(status.stdout)["ok"] is True, status.stdout


def test_no_rollback_keeps_the_failed_state(stack: Stack, user_manager: UserManager) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    stack.write("beta", source=stack.corrupt)
    result = stack.run("up", "--no-rollback")
    assert result.returncode == 1 and "rolled back" not in result.stderr
    assert "--model " + str(stack.corrupt) in unit_text(user_manager)
    # status names the runbook the failed unit's journal points to.
    status = stack.run("status")
    assert status.returncode == 3
    assert "(llmctl runbook backend-does-not-start --backend native)" in status.stdout
    assert status_units(stack)["native"]["runbook"] == "backend-does-not-start"


def test_rollback_to_an_older_snapshot_and_back(stack: Stack, user_manager: UserManager) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    stack.write("beta")
    assert stack.run("up").returncode == 0
    assert stack.serving() == ["beta"]

    back = stack.run("rollback")
    assert back.returncode == 0, back.stderr
    assert stack.serving() == ["alpha"]
    assert yaml.safe_load(stack.config.read_text())["backends"]["native"]["model"] == "alpha"

    # The rollback snapshotted where we were: rolling back again returns there.
    again = stack.run("rollback")
    assert again.returncode == 0, again.stderr
    assert stack.serving() == ["beta"]
    assert yaml.safe_load(stack.config.read_text())["backends"]["native"]["model"] == "beta"

    diff = stack.run("snapshot", "diff", stack.snapshot_ids()[0])
    assert diff.returncode == 0


def test_rollback_to_an_unknown_snapshot_changes_nothing(stack: Stack, user_manager: UserManager) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    before = unit_text(user_manager)
    result = stack.run("rollback", "no-such-snapshot")
    assert result.returncode != 0 and "no-such-snapshot" in result.stderr
    assert unit_text(user_manager) == before and stack.serving() == ["alpha"]


@pytest.mark.parametrize("phase", ["snapshot-taken", "files-written"])
def test_sigkill_during_up_is_recovered_by_the_next_command(
    stack: Stack, user_manager: UserManager, phase: str
) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    before = unit_text(user_manager)
    stack.write("beta", context=512)
    process = subprocess.Popen(
        [*LLMCTL, "--config", str(stack.config), "up"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, PAUSE_VARIABLE: phase},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    line = ""
    while f"paused at {phase}" not in line and time.monotonic() < deadline:
        line = process.stderr.readline()
    assert f"paused at {phase}" in line
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (Path(os.environ["XDG_STATE_HOME"]) / "llmctl" / "intent.json").exists()

    recovered = stack.run("recover")
    assert recovered.returncode == 0, recovered.stderr
    assert "rolled back to snapshot" in recovered.stdout
    # The old state, whole: the old unit file, serving the old model.
    assert unit_text(user_manager) == before
    assert stack.serving() == ["alpha"]
    assert not (Path(os.environ["XDG_STATE_HOME"]) / "llmctl" / "intent.json").exists()
    # And the change can then be applied normally.
    assert stack.run("up").returncode == 0
    assert stack.serving() == ["beta"]


def test_two_changes_at_once_are_serialised(stack: Stack) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    stack.write("beta")
    first = subprocess.Popen(
        [*LLMCTL, "--config", str(stack.config), "up"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, PAUSE_VARIABLE: "files-written"},
    )
    assert first.stderr is not None
    line = ""
    while "paused at files-written" not in line:
        line = first.stderr.readline()
        assert line, "the first up ended without pausing"
    blocked = stack.run("up", "--no-wait")
    assert blocked.returncode == 1
    assert f"pid {first.pid} (up:" in blocked.stderr and "holds the llmctl lock" in blocked.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    # The next command takes the lock over from the dead holder and recovers first.
    after = stack.run("up")
    assert after.returncode == 0, after.stderr
    assert "stopped at phase files-written" in after.stderr
    assert stack.serving() == ["beta"]


@pytest.mark.parametrize("phase", ["routes-out", "stopped", "started"])
def test_sigkill_during_switch_is_recovered_by_the_next_command(
    stack: Stack, user_manager: UserManager, phase: str
) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    before = unit_text(user_manager)
    process = subprocess.Popen(
        [*LLMCTL, "--config", str(stack.config), "switch", "beta"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, PAUSE_VARIABLE: phase},
    )
    assert process.stderr is not None
    line = ""
    while f"paused at {phase}" not in line:
        line = process.stderr.readline()
        assert line, "switch ended without pausing"
    process.send_signal(signal.SIGKILL)
    process.wait()
    recovered = stack.run("recover")
    assert recovered.returncode == 0, recovered.stderr
    # Whole old state: the old unit, serving the old model, the old serving record.
    assert unit_text(user_manager) == before
    assert stack.serving() == ["alpha"]
    assert status_units(stack)["native"]["models"] == ["alpha"]
    assert stack.run("switch", "beta").returncode == 0
    assert stack.serving() == ["beta"]


def test_two_switches_at_once(stack: Stack) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    first = subprocess.Popen(
        [*LLMCTL, "--config", str(stack.config), "switch", "beta"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, PAUSE_VARIABLE: "routes-out"},
    )
    assert first.stderr is not None
    line = ""
    while "paused at routes-out" not in line:
        line = first.stderr.readline()
        assert line, "the first switch ended without pausing"
    second = stack.run("switch", "alpha", "--no-wait")
    assert second.returncode == 1
    assert f"pid {first.pid} (switch:" in second.stderr and "holds the llmctl lock" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    # A waiting second switch would have queued behind the first; after its death it recovers.
    after = stack.run("switch", "beta")
    assert after.returncode == 0, after.stderr
    assert "stopped at phase routes-out" in after.stderr
    assert stack.serving() == ["beta"]


def truncate_manifest(snapshot_id: str) -> None:
    manifest = Path(os.environ["XDG_STATE_HOME"]) / "llmctl" / "snapshots" / snapshot_id / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])


def test_a_plain_rollback_refuses_a_corrupt_newest_snapshot_and_changes_nothing(
    stack: Stack, user_manager: UserManager
) -> None:
    """Issue 16: snapshot B (of the first up's state) is truncated; `rollback` must not reach
    past it to A, from before the first up, and take the stack down."""
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    stack.write("beta")
    assert stack.run("up").returncode == 0
    first, second = stack.snapshot_ids()
    truncate_manifest(second)
    listing = stack.run("snapshot", "list")
    assert f"{second}  CORRUPT: manifest.json is not valid JSON (truncated?)" in listing.stdout
    before = unit_text(user_manager)

    refused = stack.run("rollback")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"the newest snapshot, {second}, is corrupt: manifest.json is not valid JSON" in refused.stderr
    assert "so nothing was rolled back" in refused.stderr
    assert f"the newest usable older snapshot is {first} (" in refused.stderr
    assert f"`llmctl rollback {first}` would:" in refused.stderr
    assert "remove systemd/user/llmctl-native.service (it stops llmctl-native.service)" in refused.stderr
    assert "hint: Nothing was changed." in refused.stderr
    # Nothing changed: the same unit, still serving, the config as edited, no new snapshot.
    assert unit_text(user_manager) == before
    assert stack.serving() == ["beta"]
    assert yaml.safe_load(stack.config.read_text())["backends"]["native"]["model"] == "beta"
    assert stack.snapshot_ids() == [first, second]


def test_recovery_refuses_an_intent_whose_snapshot_is_corrupt_until_a_rollback_id_ends_it(
    stack: Stack, user_manager: UserManager
) -> None:
    stack.write("alpha")
    assert stack.run("up").returncode == 0
    before = unit_text(user_manager)
    assert stack.run("snapshot", "create", "-m", "known good").returncode == 0
    (good,) = stack.snapshot_ids()[-1:]
    process = subprocess.Popen(
        [*LLMCTL, "--config", str(stack.config), "switch", "beta"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, PAUSE_VARIABLE: "stopped"},
    )  # fmt: skip
    assert process.stderr is not None
    line = ""
    while "paused at stopped" not in line:
        line = process.stderr.readline()
        assert line, "switch ended without pausing"
    process.kill()
    process.wait()
    record = Path(os.environ["XDG_STATE_HOME"]) / "llmctl" / "intent.json"
    taken = json.loads(record.read_text())["snapshot"]
    truncate_manifest(taken)

    for command in (["recover"], ["up"], ["rollback"]):
        refused = stack.run(*command)
        assert refused.returncode == 1, refused.stderr
        assert f"cannot be used: snapshot {taken} is corrupt" in refused.stderr
        assert "nothing was changed" in refused.stderr
        assert f"`llmctl rollback {good}` would:" in refused.stderr
        assert record.exists()
    # The way out the error names: the snapshot the user picks, with the unit the switch stopped.
    ended = stack.run("rollback", good)
    assert ended.returncode == 0, ended.stderr
    assert not record.exists()
    assert unit_text(user_manager) == before
    assert stack.serving() == ["alpha"]


def status_units(stack: Stack) -> dict[str, Any]:
    return {u["name"]: u for u in json_result(stack.run("status", "--json").stdout)["units"]}
