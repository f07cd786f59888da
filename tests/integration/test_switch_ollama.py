"""`llmctl switch` to models of an Ollama backend, in the real user manager.

Ollama is not installed here, so its unit runs tests/integration/fake_ollama.py: `ollama serve`
answered by the contract-tested Ollama stand-in. Ollama serves every model assigned to it: a
switch loads one through the API (with the backend's keep-alive) and changes no unit.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from llmctl.smoke_model import write_smoke_model
from llmctl.transaction import PAUSE_VARIABLE
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, json_result, stack_up
from tests.integration.fake_ollama import install_fake_ollama

GiB = 1 << 30


class Stack:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.config = root / "llmctl.yaml"
        self.config.write_text(
            yaml.safe_dump({
                "version": 1,
                "backends": {"olla": {"kind": "ollama", "command": str(install_fake_ollama(root)),
                                      "port": self.port, "keep_alive": "10m", "gpus": [],
                                      "models_dir": str(root / "ollama-models"),
                                      "environment": {"FAKE_OLLAMA_MODELS": "llama3:8b,mistral"}}},
                "models": {
                    "llama3": {"backend": "olla", "source": "llama3:8b"},
                    "mistral": {"backend": "olla", "source": "mistral"},
                    "ghost": {"backend": "olla", "source": "ghost:1b"},
                },
                "gateway": {"enabled": False},
            })
        )  # fmt: skip

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args], capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    def loaded(self) -> list[str]:
        models = httpx.get(f"http://127.0.0.1:{self.port}/api/ps", timeout=5).json()["models"]
        return sorted(m["name"] for m in models)


@pytest.fixture
def stack(user_manager: UserManager, tmp_path: Path) -> Iterator[Stack]:
    the_stack = Stack(tmp_path)
    with stack_up(the_stack.run, user_manager):
        yield the_stack


def test_switching_loads_models_into_the_running_ollama(stack: Stack) -> None:
    assert stack.loaded() == []
    pid = json_result(stack.run("status", "--json").stdout)["units"][0]["main_pid"]

    result = stack.run("switch", "llama3", "--json")
    assert result.returncode == 0, result.stderr
    assert "load" in json.loads(result.stdout)["data"]["phases"]
    assert stack.loaded() == ["llama3:8b"]

    assert stack.run("switch", "mistral").returncode == 0
    assert stack.loaded() == ["llama3:8b", "mistral:latest"]  # room for both: nothing unloaded
    assert json_result(stack.run("status", "--json").stdout)["units"][0]["main_pid"] == pid


def test_a_model_ollama_does_not_have_is_refused_before_anything(stack: Stack) -> None:
    result = stack.run("switch", "ghost")
    assert result.returncode == 1
    assert "Ollama model 'ghost:1b' is not pulled" in result.stderr, result.stderr
    assert "ollama pull ghost:1b" in result.stderr
    assert stack.loaded() == []


class GpuStack(Stack):
    """The Ollama and a llama-server, `native`, on one (described) GPU that has room for
    llama3 only once native stops."""

    def __init__(self, root: Path, provisioned: Provisioned) -> None:
        super().__init__(root)
        self.native_port = free_port()
        self.inventory = root / "gpus.json"
        data = yaml.safe_load(self.config.read_text())
        data["backends"]["olla"]["gpus"] = [0]
        data["backends"]["native"] = {"kind": "llama-server", "command": str(provisioned.llama_server),
                                      "port": self.native_port, "model": "alpha", "gpus": [0]}  # fmt: skip
        source = str(write_smoke_model(root / "alpha.gguf", seed=1))
        data["models"]["alpha"] = {"backend": "native", "source": source, "context": 256}
        self.config.write_text(yaml.safe_dump(data))
        total, free = 24 * GiB, GiB // 10
        held = int(0.9 * GiB)
        native = {"pid": 900_001, "used_bytes": held, "unit": "llmctl-native.service"}
        desktop = {"pid": 900_002, "used_bytes": total - free - held, "unit": None}
        self.inventory.write_text(json.dumps({"source": "file", "gpus": [{
            "index": 0, "uuid": "GPU-22222222-2222-2222-2222-222222222222", "name": "Described 24G",
            "total_bytes": total, "used_bytes": total - free, "free_bytes": free, "utilization_percent": 0,
            "processes": [native, desktop],
        }]}))  # fmt: skip

    def native_serves(self) -> list[str]:
        data = httpx.get(f"http://127.0.0.1:{self.native_port}/v1/models", timeout=5).json()["data"]
        return [m["id"] for m in data]


def test_an_ollama_switch_killed_after_its_eviction_is_undone_by_the_next_command(
    user_manager: UserManager, provisioned: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: an Ollama load changes no file, so it takes no snapshot, but its intent record
    names the unit its eviction stops before it stops it."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    stack = GpuStack(tmp_path, provisioned)
    with stack_up(stack.run, user_manager):
        inventory = ("--gpu-inventory", str(stack.inventory))
        dry = stack.run("switch", "llama3", "--dry-run", "--json", *inventory)
        evictions = json.loads(dry.stdout)["data"]["plan"]["evictions"]
        assert [(e["backend"], e["action"]) for e in evictions] == [("native", "stop")], dry.stdout
        process = subprocess.Popen(
            [*LLMCTL, "--config", str(stack.config), "switch", "llama3", *inventory],
            stderr=subprocess.PIPE, text=True, env={**os.environ, PAUSE_VARIABLE: "evict"},
        )  # fmt: skip
        assert process.stderr is not None
        line = ""
        while "paused at evict" not in line:
            line = process.stderr.readline()
            assert line, "switch ended without pausing"
        record_file = tmp_path / "state" / "llmctl" / "intent.json"
        record = json.loads(record_file.read_text())
        assert (record["snapshot"], record["units"]) == ("", ["llmctl-native.service"])
        with pytest.raises(httpx.ConnectError):
            stack.native_serves()  # stopped for room
        process.kill()
        process.wait()

        recovered = stack.run("recover")
        assert recovered.returncode == 0, recovered.stderr
        assert "stopped at phase evict; undoing what it did" in recovered.stderr
        assert "undid the interrupted command" in recovered.stdout
        assert not record_file.exists()
        assert stack.native_serves() == ["alpha"]
        assert stack.loaded() == []  # the load never happened
