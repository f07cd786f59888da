"""gateway.litellm against the real LiteLLM: `llmctl validate` has LiteLLM check the rendered
file (every kind of key accepted, a wrong value refused), and passthrough settings take effect
in the running gateway (a per-model retry policy, the router's stream_timeout).

The gateway routes remote models to an OpenAI-compatible stand-in in this process, which
counts the requests it gets: no llama.cpp needed, and what LiteLLM did is visible in the counts.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.config.litellm_settings import (
    GeneralSettings,
    LiteLLMPassthrough,
    LitellmSettings,
    PassthroughSection,
    RouterSettings,
)
from llmctl.paths import Paths
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, stack_up

SECTIONS: dict[str, type[PassthroughSection]] = {
    "router_settings": RouterSettings,
    "litellm_settings": LitellmSettings,
    "general_settings": GeneralSettings,
}
SLOW_STREAM_S = 4.0  # the stand-in's wait before a "slow" stream's first byte; stream_timeout: 1


class StandIn:
    """An OpenAI-compatible provider: "flaky-*" answer 500, "slow" streams only after a wait,
    anything else answers with its own name. Counts the requests by model."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                model = request["model"]
                stand_in.requests[model] += 1
                if model.startswith("flaky"):
                    error = {"error": {"message": "stand-in failure", "type": "server_error"}}
                    self._send(500, json.dumps(error).encode(), "application/json")
                    return
                if request.get("stream"):
                    if model == "slow":
                        time.sleep(SLOW_STREAM_S)
                    chunk = {
                        "id": "chatcmpl-1",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": model}}],
                    }
                    body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
                    self._send(200, body, "text/event-stream")
                    return
                answer = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": model},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                self._send(200, json.dumps(answer).encode(), "application/json")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def remote(model: str, port: int) -> dict[str, Any]:
    return {
        "remote": {
            "provider": "openai",
            "model": model,
            "api_base": f"http://127.0.0.1:{port}/v1",
            "api_key_env": "STANDIN_API_KEY",
        }
    }


# Every key the passthrough accepts, with a plausible value (the allow-list, end to end).
EVERY_KEY: dict[str, Any] = {
    "router_settings": {
        "context_window_fallbacks": [{"plain": ["slow"]}],
        "content_policy_fallbacks": [{"slow": ["plain"]}],
        "default_fallbacks": ["plain"],
        "max_fallbacks": 3,
        "retry_policy": {"TimeoutErrorRetries": 1, "RateLimitErrorRetries": 4, "DefaultRetries": 2},
        "model_group_retry_policy": {"plain": {"InternalServerErrorRetries": 0}},
        "allowed_fails_policy": {"RateLimitErrorAllowedFails": 100, "TimeoutErrorAllowedFails": 5},
        "retry_after": 1,
        "stream_timeout": 30,
        "enable_pre_call_checks": True,
        "optional_pre_call_checks": ["prompt_caching"],
        "routing_strategy_args": {"ttl": 60, "lowest_latency_buffer": 0.5, "max_latency_list_size": 20},
        "default_max_parallel_requests": 10,
        "set_verbose": False,
        "debug_level": "INFO",
    },
    "litellm_settings": {
        "drop_params": True,
        "modify_params": False,
        "set_verbose": False,
        "json_logs": True,
        "turn_off_message_logging": True,
        "redact_user_api_key_info": True,
        "force_ipv4": True,
        "num_retries_per_request": 3,
        "callbacks": ["langfuse"],
        "success_callback": ["s3_v2"],
        "failure_callback": ["langfuse"],
        "s3_callback_params": {
            "s3_bucket_name": "llm-logs",
            "s3_region_name": "eu-west-1",
            "s3_endpoint_url": "https://s3.example.com",
            "s3_path": "gateway/logs",
            "s3_aws_access_key_id": "os.environ/AWS_ACCESS_KEY_ID",
            "s3_aws_secret_access_key": "os.environ/AWS_SECRET_ACCESS_KEY",
            "s3_aws_session_token": "os.environ/AWS_SESSION_TOKEN",
        },
    },
    "general_settings": {
        "background_health_checks": False,
        "health_check_interval": 300,
        "health_check_details": False,
        "max_parallel_requests": 10,
        "global_max_parallel_requests": 100,
    },
}


def write_config(path: Path, litellm: Path, passthrough: dict[str, Any], port: int = 4000) -> Path:
    config = {
        "version": 1,
        "models": {name: remote(name, 9) for name in ("plain", "slow")},
        "gateway": {"command": str(litellm), "port": port, "litellm": passthrough},
        "supervisor": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLMCTL, "--config", str(config), "validate", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_litellm_accepts_every_key_the_passthrough_accepts(provisioned: Provisioned, tmp_path: Path) -> None:
    # EVERY_KEY sets each key of the three sections (of the nested ones, some).
    every = [f"{name}.{key}" for name, cls in SECTIONS.items() for key in cls.model_fields]
    assert LiteLLMPassthrough.model_validate(EVERY_KEY, strict=False).set_keys() == every
    result = validate(write_config(tmp_path / "c.yaml", provisioned.litellm, EVERY_KEY))
    assert result.returncode == 0, result.stdout + result.stderr
    check = json.loads(result.stdout)["data"]["litellm_check"]
    assert check == {"outcome": "accepted", "detail": "LiteLLM: config OK (2 models)"}


def test_litellm_refuses_a_callback_it_does_not_know(provisioned: Provisioned, tmp_path: Path) -> None:
    passthrough = {"litellm_settings": {"callbacks": ["langfuze"]}}  # llmctl cannot tell; LiteLLM can
    result = validate(write_config(tmp_path / "c.yaml", provisioned.litellm, passthrough))
    assert result.returncode == 2, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert "LiteLLM refuses the gateway.yaml this config renders" in error["message"]
    assert error["details"][0].startswith("gateway.litellm: ") and len(error["details"][0]) > len(
        "gateway.litellm: "
    )
    assert error["details"][1] == "gateway.litellm sets: litellm_settings.callbacks"


# --- in the running gateway ------------------------------------------------------------------


class Gateway:
    def __init__(self, root: Path, provisioned: Provisioned, stand_in: StandIn) -> None:
        self.port = free_port()
        self.config = root / "llmctl.yaml"
        models = {name: remote(name, stand_in.port) for name in ("flaky-a", "flaky-b", "slow")}
        passthrough = {
            "router_settings": {
                # flaky-a: no retry after a 500; flaky-b keeps gateway.num_retries (2).
                "model_group_retry_policy": {"flaky-a": {"InternalServerErrorRetries": 0}},
                "stream_timeout": 1,
            }
        }
        self.config.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "models": models,
                    "gateway": {
                        "command": str(provisioned.litellm),
                        "port": self.port,
                        "num_retries": 2,
                        "litellm": passthrough,
                    },
                    "supervisor": {"enabled": False},
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

    def chat(self, model: str, *, stream: bool = False) -> httpx.Response:
        key = self.run("gateway", "key").stdout.strip()
        return httpx.post(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
            timeout=120,
        )


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    user_manager: UserManager,
    provisioned: Provisioned,
    stand_in: StandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    # The provider key reaches LiteLLM from secrets.env (0600), as os.environ/STANDIN_API_KEY.
    secrets = Paths.from_env().secrets_env_file
    before = secrets.read_text() if secrets.exists() else None
    secrets.parent.mkdir(parents=True, exist_ok=True)
    secrets.write_text((before or "") + "STANDIN_API_KEY=sk-standin-key\n")
    secrets.chmod(0o600)
    gw = Gateway(tmp_path_factory.mktemp("passthrough"), provisioned, stand_in)
    try:
        with stack_up(gw.run, user_manager):
            yield gw
    finally:
        if before is None:
            secrets.unlink(missing_ok=True)
        else:
            secrets.write_text(before)


def test_a_per_model_retry_policy_takes_effect(gateway: Gateway, stand_in: StandIn) -> None:
    for model in ("flaky-a", "flaky-b"):
        response = gateway.chat(model)
        assert response.status_code == 500, response.text
    # flaky-a: one try, as its retry policy says; flaky-b: one try and gateway.num_retries (2).
    assert stand_in.requests["flaky-a"] == 1
    assert stand_in.requests["flaky-b"] == 3


def test_the_routers_stream_timeout_takes_effect(gateway: Gateway) -> None:
    # The same slow provider: a plain request waits (gateway.timeout, 600 s), while a stream
    # that has sent nothing after stream_timeout (1 s) fails, with LiteLLM's timeout answer.
    assert gateway.chat("slow").status_code == 200
    response = gateway.chat("slow", stream=True)
    assert response.status_code == 408, response.text
    assert "Timeout" in response.json()["error"]["message"]
