"""The whole stack end to end: llama-server + llama-cpp-python behind the real LiteLLM gateway."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.smoke_model import write_smoke_model
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, json_result


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


# --- the gateway's key: 401 in OpenAI's shape for anything but it (issue 13) ------------------

WRONG_KEY = "sk-llmctl-test-wrong-key-0123456789"


def bad_keys(key: str) -> dict[str, dict[str, str]]:
    """Requests LiteLLM without llmctl's hook answered 400 "No connected db." or 500 (prisma)."""
    return {
        "no key": {},
        "wrong key": {"Authorization": f"Bearer {WRONG_KEY}"},
        "no Bearer": {"Authorization": key},  # the right key, malformed
        "Bearer alone": {"Authorization": "Bearer"},  # h11 refuses to send "Bearer " itself
    }


def test_a_missing_wrong_or_malformed_key_gets_401_in_openais_shape(stack: Stack) -> None:
    key = stack.run("gateway", "key").stdout.strip()
    base = f"http://127.0.0.1:{stack.gateway_port}"
    chat = {"model": "smoke-native", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, headers in bad_keys(key).items():
            for response in (
                client.post("/v1/chat/completions", headers=headers, json=chat),
                client.post("/chat/completions", headers=headers, json={**chat, "stream": True}),
                client.get("/v1/models", headers=headers),
            ):
                where = f"{name}: {response.request.method} {response.request.url.path}"
                assert response.status_code == 401, f"{where}: {response.status_code} {response.text}"
                assert response.headers["content-type"].startswith("application/json"), where
                assert response.headers.get("www-authenticate") == "Bearer", where
                error = response.json()["error"]
                assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key", where
                assert error["param"] is None and "llmctl gateway key" in error["message"], where
                assert key not in response.text and WRONG_KEY not in response.text, where
        # The gateway stays healthy, and the probes that need no key still answer without one.
        for path in ("/health/readiness", "/health/liveliness"):
            assert client.get(path).status_code == 200, path
    logs = stack.run("logs", "gateway", "-n", "300").stdout
    assert '"POST /v1/chat/completions HTTP/1.1" 401' in logs, logs[-3000:]
    assert key not in logs and WRONG_KEY not in logs


def test_the_openai_client_sees_a_bad_key_as_an_authentication_error(stack: Stack) -> None:
    openai = pytest.importorskip("openai")  # in the dev extras; a bare venv skips
    key = stack.run("gateway", "key").stdout.strip()
    base = f"http://127.0.0.1:{stack.gateway_port}/v1"
    for bad in (WRONG_KEY, key[:-1]):  # the client itself refuses an empty key
        client = openai.OpenAI(base_url=base, api_key=bad, max_retries=0, timeout=60)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list()
        assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(
                model="smoke-py", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )


def test_the_right_key_still_lists_chats_and_streams(stack: Stack) -> None:
    openai = pytest.importorskip("openai")
    key = stack.run("gateway", "key").stdout.strip()
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{stack.gateway_port}/v1", api_key=key, max_retries=0, timeout=120
    )
    assert sorted(m.id for m in client.models.list()) == ["smoke-native", "smoke-py"]
    answer = client.chat.completions.create(
        model="smoke-py", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert answer.choices[0].message.role == "assistant"
    # Greedy, so the stream's shape is the same every run: sampled, the random weights often pick
    # bytes that are not UTF-8 on their own, which llama-server holds back and sends as one chunk.
    chunks = list(
        client.chat.completions.create(
            model="smoke-native",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            temperature=0,
            stream=True,
        )
    )
    assert len(chunks) > 1 and chunks[0].model == "smoke-native"
    assert any(c.choices and c.choices[0].finish_reason for c in chunks), chunks
