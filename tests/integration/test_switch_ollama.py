"""`llmctl switch` to models of an Ollama backend, in the real user manager.

Ollama is not installed here, so its unit runs tests/integration/fake_ollama.py: `ollama serve`
answered by the contract-tested Ollama stand-in. Ollama serves every model assigned to it: a
switch loads one through the API (with the backend's keep-alive) and changes no unit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import UserManager, free_port, json_result, stack_up
from tests.integration.fake_ollama import install_fake_ollama

LLMCTL = [sys.executable, "-m", "llmctl"]


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
