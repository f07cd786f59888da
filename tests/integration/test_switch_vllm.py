"""`llmctl switch` with a vLLM in sleep mode, in the real user manager.

vLLM cannot run here (no GPU), so its unit runs tests/integration/fake_vllm.py: the command
line llmctl renders, answered by the contract-tested vLLM stand-in. The llama-server beside
it is real.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.smoke_model import write_smoke_model
from llmctl.transaction import PAUSE_VARIABLE
from tests.integration.broken_models import write_missing_tensor_gguf
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, json_result, stack_up
from tests.integration.fake_vllm import install_fake_vllm

GiB = 1 << 30


class Stack:
    def __init__(self, root: Path, provisioned: Provisioned) -> None:
        self.root = root
        self.vllm_port, self.native_port = free_port(), free_port()
        self.inventory = root / "gpus.json"
        self.config = root / "llmctl.yaml"
        alpha = write_smoke_model(root / "alpha.gguf", seed=1)
        broken = write_missing_tensor_gguf(alpha, root / "broken.gguf")  # llama.cpp refuses it
        native = {"backend": "native", "context": 256}
        self.config.write_text(
            yaml.safe_dump({
                "version": 1,
                "backends": {
                    "big": {"kind": "vllm", "command": str(install_fake_vllm(root)), "port": self.vllm_port,
                            "model": "qwen", "sleep_mode": True, "gpus": [0],
                            "environment": {"FAKE_GPU_INVENTORY": str(self.inventory),
                                            "FAKE_GPU_UNIT": "llmctl-big.service"}},
                    "native": {"kind": "llama-server", "command": str(provisioned.llama_server),
                               "port": self.native_port, "model": "alpha", "gpus": [0]},
                },
                "models": {
                    "qwen": {"backend": "big", "source": "Qwen/Qwen2.5-0.5B-Instruct"},
                    "alpha": {**native, "source": str(alpha)},
                    "beta": {**native, "source": str(write_smoke_model(root / "beta.gguf", seed=2))},
                    "broken": {**native, "source": str(broken)},
                },
                "gateway": {"enabled": False},
            })
        )  # fmt: skip

    def describe_gpu(self) -> None:
        """A 24 GiB card: the vLLM holds 20 GiB, the llama-server 0.6, a desktop 3.3: 0.1 free."""
        used = {"big": 20 * GiB, "native": int(0.6 * GiB), "desktop": int(3.3 * GiB)}
        processes: list[dict[str, Any]] = [
            {"pid": 900_001, "used_bytes": used["big"], "unit": "llmctl-big.service"},
            {"pid": 900_002, "used_bytes": used["native"], "unit": "llmctl-native.service"},
            {"pid": 900_003, "used_bytes": used["desktop"], "unit": None},
        ]
        total = 24 * GiB
        self.inventory.write_text(json.dumps({"source": "file", "gpus": [{
            "index": 0, "uuid": "GPU-11111111-1111-1111-1111-111111111111", "name": "Described 24G",
            "total_bytes": total, "used_bytes": sum(used.values()), "free_bytes": total - sum(used.values()),
            "utilization_percent": 0, "processes": processes,
        }]}))  # fmt: skip

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args], capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip

    def vllm(self, method: str, path: str) -> httpx.Response:
        return httpx.request(method, f"http://127.0.0.1:{self.vllm_port}{path}", timeout=10)

    def asleep(self) -> bool:
        return bool(self.vllm("GET", "/is_sleeping").json()["is_sleeping"])

    def main_pid(self, name: str) -> int:
        units = json_result(self.run("status", "--json").stdout)["units"]
        return int(next(u for u in units if u["name"] == name)["main_pid"])

    def native_serves(self) -> list[str]:
        data = httpx.get(f"http://127.0.0.1:{self.native_port}/v1/models", timeout=5).json()["data"]
        return [m["id"] for m in data]


@pytest.fixture
def stack(user_manager: UserManager, provisioned: Provisioned, tmp_path: Path) -> Iterator[Stack]:
    the_stack = Stack(tmp_path, provisioned)
    with stack_up(the_stack.run, user_manager):
        yield the_stack


def test_switching_to_the_model_a_sleeping_vllm_holds_wakes_it_without_a_restart(stack: Stack) -> None:
    pid = stack.main_pid("big")
    assert stack.vllm("POST", "/sleep?level=1").status_code == 200
    assert stack.asleep()
    status = stack.run("status", "--json")
    big = next(u for u in json_result(status.stdout)["units"] if u["name"] == "big")
    assert status.returncode == 3  # asleep is not serving
    assert (big["health"], big["health_detail"]) == ("loading", "asleep (llmctl switch qwen wakes it)")

    result = stack.run("switch", "qwen", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert "wake" in data["phases"] and "stop" not in data["phases"] and not data["unchanged"]
    assert not stack.asleep()
    assert stack.main_pid("big") == pid  # woken, not restarted
    assert stack.run("status").returncode == 0

    again = stack.run("switch", "qwen")
    assert again.returncode == 0 and "already serves qwen" in again.stdout


def test_a_failed_switch_wakes_the_vllm_it_put_to_sleep(stack: Stack) -> None:
    stack.describe_gpu()
    inventory = ("--gpu-inventory", str(stack.inventory))
    dry = stack.run("switch", "broken", "--dry-run", "--json", *inventory)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    evictions = json.loads(dry.stdout)["data"]["plan"]["evictions"]
    assert [(e["backend"], e["action"]) for e in evictions] == [("big", "sleep")], dry.stdout

    result = stack.run("switch", "broken", *inventory)
    assert result.returncode == 1
    assert "rolled back" in result.stderr
    assert "big woke up again" in result.stderr, result.stderr
    assert not stack.asleep()
    assert stack.native_serves() == ["alpha"]
    gpu = json.loads(stack.inventory.read_text())["gpus"][0]
    assert gpu["free_bytes"] < GiB  # the fake NVML saw the wake-up take the memory back


def test_a_switch_that_needs_room_puts_the_vllm_to_sleep_and_says_so(stack: Stack) -> None:
    stack.describe_gpu()
    result = stack.run("switch", "beta", "--json", "--gpu-inventory", str(stack.inventory))
    assert result.returncode == 0, result.stderr
    phases = json.loads(result.stdout)["data"]["phases"]
    assert list(phases)[:3] == ["check", "plan", "evict"]
    assert stack.asleep()
    assert stack.native_serves() == ["beta"]


class CrowdedStack(Stack):
    """The same, plus a second llama-server, `side`, on the same GPU: a switch of native to beta
    must both stop side and put big to sleep to make room."""

    def __init__(self, root: Path, provisioned: Provisioned) -> None:
        super().__init__(root, provisioned)
        self.side_port = free_port()
        data = yaml.safe_load(self.config.read_text())
        data["backends"]["side"] = {"kind": "llama-server", "command": str(provisioned.llama_server),
                                    "port": self.side_port, "model": "gamma", "gpus": [0]}  # fmt: skip
        data["models"]["gamma"] = {**data["models"]["alpha"], "backend": "side"}
        self.config.write_text(yaml.safe_dump(data))

    def describe_crowded_gpu(self) -> None:
        """24 GiB, 0.1 free: big holds 2.2 GiB (asleep it keeps 2 by the planner's reckoning),
        native 0.3, side 0.25. Beta needs 0.75 with the reserve: neither eviction alone frees enough."""
        used = {"llmctl-big.service": 2.2, "llmctl-native.service": 0.3, "llmctl-side.service": 0.25}
        processes: list[dict[str, Any]] = [
            {"pid": 900_001 + i, "used_bytes": int(gib * GiB), "unit": unit}
            for i, (unit, gib) in enumerate(used.items())
        ]
        total = 24 * GiB
        processes.append({"pid": 900_009, "used_bytes": total - sum(p["used_bytes"] for p in processes) - GiB // 10,
                          "unit": None})  # fmt: skip
        self.inventory.write_text(json.dumps({"source": "file", "gpus": [{
            "index": 0, "uuid": "GPU-11111111-1111-1111-1111-111111111111", "name": "Described 24G",
            "total_bytes": total, "used_bytes": total - GiB // 10, "free_bytes": GiB // 10,
            "utilization_percent": 0, "processes": processes,
        }]}))  # fmt: skip

    def side_serves(self) -> list[str]:
        data = httpx.get(f"http://127.0.0.1:{self.side_port}/v1/models", timeout=5).json()["data"]
        return [m["id"] for m in data]

    def big_holds(self) -> int:
        gpu = json.loads(self.inventory.read_text())["gpus"][0]
        return int(next(p["used_bytes"] for p in gpu["processes"] if p["unit"] == "llmctl-big.service"))


def side_is_stopped(user_manager: UserManager) -> bool:
    state = subprocess.run(
        ["systemctl", "--user", "show", "-p", "ActiveState", "llmctl-side.service"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return state.strip() == "ActiveState=inactive"


@pytest.mark.parametrize("phase", ["evict", "routes-out", "stopped", "started", "routes-in"])
def test_a_switch_killed_after_its_evictions_is_undone_whole_by_the_next_command(
    user_manager: UserManager, provisioned: Provisioned, tmp_path: Path, phase: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Issue 13: the intent names every unit the switch touches before it touches any, so a
    SIGKILL at any phase after the evictions leaves nothing stopped or asleep for good."""
    # Its own state: the module's other tests leave native's serving record at beta.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    crowded = CrowdedStack(tmp_path, provisioned)
    with stack_up(crowded.run, user_manager):
        killed_after_evictions(crowded, user_manager, phase)


def killed_after_evictions(crowded: CrowdedStack, user_manager: UserManager, phase: str) -> None:
    crowded.describe_crowded_gpu()
    inventory = ("--gpu-inventory", str(crowded.inventory))
    dry = crowded.run("switch", "beta", "--dry-run", "--json", *inventory)
    evictions = json.loads(dry.stdout)["data"]["plan"]["evictions"]
    assert [(e["backend"], e["action"]) for e in evictions] == [("big", "sleep"), ("side", "stop")]
    awake_bytes = crowded.big_holds()
    process = subprocess.Popen(
        [*LLMCTL, "--config", str(crowded.config), "switch", "beta", *inventory],
        stderr=subprocess.PIPE, text=True, env={**os.environ, PAUSE_VARIABLE: phase},
    )  # fmt: skip
    assert process.stderr is not None
    line = ""
    while f"paused at {phase}" not in line:
        line = process.stderr.readline()
        assert line, "switch ended without pausing"
    # The evictions are done: side stopped, big asleep; the record names them all.
    assert side_is_stopped(user_manager) and crowded.asleep()
    record = json.loads((Path(os.environ["XDG_STATE_HOME"]) / "llmctl" / "intent.json").read_text())
    assert record["phase"] == phase
    assert record["units"] == ["llmctl-native.service", "llmctl-side.service"]
    assert record["wake"] == ["llmctl-big.service"]
    process.kill()
    process.wait()

    recovered = crowded.run("recover")
    assert recovered.returncode == 0, recovered.stderr
    assert f"stopped at phase {phase}" in recovered.stderr and "big woke up again" in recovered.stderr
    assert not (Path(os.environ["XDG_STATE_HOME"]) / "llmctl" / "intent.json").exists()
    assert crowded.native_serves() == ["alpha"]
    assert crowded.side_serves() == ["gamma"]
    assert not crowded.asleep()
    assert crowded.big_holds() == awake_bytes  # the fake NVML saw it take its memory back
