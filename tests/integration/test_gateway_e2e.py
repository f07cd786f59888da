"""The whole stack end to end: llama-server + llama-cpp-python behind the real LiteLLM gateway."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.smoke_model import write_smoke_model
from tests.integration.conftest import Provisioned, UserManager, free_port, json_result

LLMCTL = [sys.executable, "-m", "llmctl"]


class Stack:
    def __init__(self, root: Path, provisioned: Provisioned) -> None:
        model = write_smoke_model(root / "smoke.gguf")
        self.gateway_port = free_port()
        self.config = root / "llmctl.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "backends": {
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
                    "models": {
                        "smoke-native": {"backend": "native", "source": str(model), "context": 512},
                        "smoke-py": {"backend": "pyserver", "source": str(model), "context": 512},
                    },
                    "gateway": {
                        "command": str(provisioned.litellm),
                        "port": self.gateway_port,
                        "fallbacks": {"smoke-native": ["smoke-py"]},
                    },
                }
            )
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def chat(self, model: str, client: httpx.Client | None = None) -> httpx.Response:
        key = self.run("gateway", "key").stdout.strip()
        return (client or httpx.Client()).post(
            f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=120,
        )

    def units(self) -> dict[str, Any]:
        return {u["name"]: u for u in json_result(self.run("status", "--json").stdout)["units"]}


@pytest.fixture(scope="module")
def stack(
    user_manager: UserManager, provisioned: Provisioned, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    the_stack = Stack(tmp_path_factory.mktemp("e2e"), provisioned)
    up = the_stack.run("up")
    assert up.returncode == 0, up.stderr
    yield the_stack
    the_stack.run("down")
    user_manager.forget_llmctl_units()


def test_a_completion_reaches_each_local_model_through_the_gateway(stack: Stack) -> None:
    for model in ("smoke-native", "smoke-py"):
        response = stack.chat(model)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["role"] == "assistant"


def test_status_shows_the_gateway_and_what_it_routes(stack: Stack) -> None:
    gateway = stack.units()["gateway"]
    assert gateway["health"] == "ok" and gateway["active_state"] == "active"
    assert gateway["models"] == ["smoke-native", "smoke-py"]
    assert gateway["health_detail"] == "/health/readiness 200"


def test_fifty_concurrent_requests_all_succeed_and_nothing_restarts(stack: Stack) -> None:
    before = {name: (u["main_pid"], u["restarts"]) for name, u in stack.units().items()}
    with httpx.Client(limits=httpx.Limits(max_connections=50)) as client, ThreadPoolExecutor(50) as pool:
        models = ["smoke-native", "smoke-py"] * 25
        responses = list(pool.map(lambda m: stack.chat(m, client), models))
    assert [r.status_code for r in responses] == [200] * 50, [
        r.text[:200] for r in responses if r.status_code != 200
    ]
    after = {name: (u["main_pid"], u["restarts"]) for name, u in stack.units().items()}
    assert after == before


def test_fallback_answers_when_a_backend_is_stopped(stack: Stack) -> None:
    assert stack.run("down", "native").returncode == 0
    try:
        response = stack.chat("smoke-native")
        assert response.status_code == 200, response.text
        # LiteLLM says which deployment answered: the fallback model, not the one asked for.
        assert response.headers.get("x-litellm-model-group") == "smoke-py", dict(response.headers)
    finally:
        assert stack.run("up", "native").returncode == 0
    assert stack.chat("smoke-native").headers.get("x-litellm-model-group") == "smoke-native"


def test_a_route_change_reloads_only_the_gateway(stack: Stack) -> None:
    before = {name: u["main_pid"] for name, u in stack.units().items()}
    config = yaml.safe_load(stack.config.read_text())
    config["gateway"]["fallbacks"] = {"smoke-py": ["smoke-native"]}
    stack.config.write_text(yaml.safe_dump(config))
    result = stack.run("up")
    assert result.returncode == 0, result.stderr
    assert "llmctl-gateway.service: reloaded" in result.stdout
    assert (
        "llmctl-native.service: unchanged" in result.stdout
        and "llmctl-pyserver.service: unchanged" in result.stdout
    )
    # Backends untouched; the gateway's supervisor kept running (a new LiteLLM generation serves).
    assert {name: u["main_pid"] for name, u in stack.units().items()} == before
    assert stack.chat("smoke-py").status_code == 200
