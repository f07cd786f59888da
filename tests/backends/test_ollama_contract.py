"""Ollama adapter against its documented behaviour (reference sections 1, 8, 9).

Ollama cannot run here, so the adapter is driven over real sockets against `OllamaStandIn`,
and the rendered unit is checked against the documented `ollama serve` (no flags, env only).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.backends import ollama
from llmctl.backends.base import Health, MemoryFacts, probe_client
from llmctl.config.load import parse_config
from llmctl.errors import LlmctlError
from llmctl.readiness import probe_once, wait_ready
from llmctl.render.units import render_stack
from tests import systemd_syntax
from tests.backends.standins import OllamaStandIn, OnDisk, VllmStandIn
from tests.conftest import dump
from tests.render.test_units import fixed_options

pytestmark = pytest.mark.contract

LLAMA = OnDisk("llama3.1:8b", vram_fraction=0.52)
QWEN = OnDisk("qwen2.5:latest", size=1_000_000_000)
EMBED = OnDisk("nomic-embed-text:latest", size=274_302_450, capabilities=("embedding",), family="nomic-bert")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0, trust_env=False) as c:
        yield c


@pytest.fixture
def server() -> Iterator[OllamaStandIn]:
    with OllamaStandIn([LLAMA, QWEN, EMBED], unload_delay=0.2) as s:
        yield s


def _generate_bodies(server: OllamaStandIn) -> list[Any]:
    return [r.body for r in server.requests if r.path in ("/api/generate", "/api/embeddings")]


# --- readiness and status ----------------------------------------------------------------------


def test_ready_at_once_with_nothing_loaded(server: OllamaStandIn) -> None:
    result = wait_ready("ollama", server.url, None, timeout=2)
    assert result.attempts == 1
    assert result.probe.health is Health.OK and result.probe.models == ()


def test_probe_lists_the_loaded_models_from_api_ps(client: httpx.Client, server: OllamaStandIn) -> None:
    ollama.load(client, server.url, "qwen2.5", "10m")
    ollama.load(client, server.url, "llama3.1:8b", -1)
    probe = probe_once(client, "ollama", server.url, None)
    assert probe.health is Health.OK
    # /api/ps: longest remaining expires_at first; the pinned one (-1) never expires.
    assert probe.models == ("llama3.1:8b", "qwen2.5:latest")


def test_documented_endpoints_answer_as_documented(client: httpx.Client, server: OllamaStandIn) -> None:
    root = client.get(f"{server.url}/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert client.get(f"{server.url}/api/version").json() == {"version": "0.33.0"}
    names = [m["name"] for m in client.get(f"{server.url}/api/tags").json()["models"]]
    assert names == ["llama3.1:8b", "qwen2.5:latest", "nomic-embed-text:latest"]
    assert client.get(f"{server.url}/api/ps").json() == {"models": []}


def test_chat_loads_the_model_on_demand_and_answers_one_message(
    client: httpx.Client, server: OllamaStandIn
) -> None:
    body = {"model": "qwen2.5", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    answer = client.post(f"{server.url}/api/chat", json=body).json()
    assert answer["done"] is True
    assert answer["message"]["role"] == "assistant"
    assert [m["name"] for m in client.get(f"{server.url}/api/ps").json()["models"]] == ["qwen2.5:latest"]
    missing = client.post(f"{server.url}/api/chat", json={**body, "model": "ghost"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'ghost' not found"})


def test_a_foreign_host_header_is_refused_and_the_probe_says_so(server: OllamaStandIn) -> None:
    # localhost and 127.0.0.1 are what llmctl probes; a rebinding name gets 403 (loopback bind).
    with httpx.Client(timeout=2.0, trust_env=False) as local:
        assert probe_once(local, "ollama", f"http://localhost:{server.port}", None).health is Health.OK
    with httpx.Client(timeout=2.0, trust_env=False, headers={"Host": "attacker.example"}) as foreign:
        assert foreign.get(f"{server.url}/api/version").status_code == 403
        probe = probe_once(foreign, "ollama", server.url, None)
    assert probe.health is Health.DOWN and "403" in probe.detail and "Host" in probe.detail


def test_nothing_listening_is_down(client: httpx.Client) -> None:
    with VllmStandIn("x", load_time=None) as closed:  # a bound port that refuses
        probe = probe_once(client, "ollama", closed.url, None)
        assert (probe.health, probe.detail) == (Health.DOWN, "connection refused")
        with pytest.raises(LlmctlError, match="did not answer"):
            ollama.loaded_models(client, closed.url)
        with pytest.raises(LlmctlError, match="did not answer"):
            ollama.load(client, closed.url, "qwen2.5", None)


# --- model management ----------------------------------------------------------------------------


def test_loaded_models_carry_sizes_and_expiry(client: httpx.Client, server: OllamaStandIn) -> None:
    before = datetime.now(UTC)
    ollama.load(client, server.url, "llama3.1:8b", "30m")
    [loaded] = ollama.loaded_models(client, server.url)
    assert loaded.name == "llama3.1:8b"
    assert loaded.size > LLAMA.size and loaded.size_vram == int(loaded.size * 0.52)
    assert loaded.expires_at is not None and loaded.expires_at.tzinfo is not None
    assert timedelta(minutes=29) < loaded.expires_at - before < timedelta(minutes=31)


def test_the_adapter_gives_the_planner_each_loaded_models_size(server: OllamaStandIn) -> None:
    adapter = ollama.OllamaAdapter()
    with probe_client(2.0) as client:
        assert adapter.memory_facts(client, server.url, 2.0) == MemoryFacts()  # nothing loaded
        ollama.load(client, server.url, "llama3.1:8b", None)
        [loaded] = adapter.memory_facts(client, server.url, 2.0).loaded
        assert (
            loaded
            == ollama.loaded_models(client, server.url)[0]
            == adapter.loaded_models(client, server.url)[0]
        )
        assert loaded.size_vram == int(loaded.size * 0.52)
        server.stop()
        # Not answering: nothing known (the planner keeps the holding as NVML says).
        assert adapter.memory_facts(client, server.url, 2.0) == MemoryFacts()


def test_load_sends_the_documented_request(client: httpx.Client, server: OllamaStandIn) -> None:
    ollama.load(client, server.url, "qwen2.5", "30m")
    ollama.load(client, server.url, "qwen2.5", None)
    assert _generate_bodies(server) == [
        {"model": "qwen2.5", "stream": False, "keep_alive": "30m"},
        {"model": "qwen2.5", "stream": False},  # OLLAMA_KEEP_ALIVE applies
    ]


@pytest.mark.parametrize(("keep_alive", "sent"), [("300", 300), ("-1", -1), (600, 600), ("1h", "1h")])
def test_keep_alive_in_seconds_is_sent_as_a_number(
    client: httpx.Client, server: OllamaStandIn, keep_alive: str | int, sent: str | int
) -> None:
    # Bare seconds are valid in the config (and OLLAMA_KEEP_ALIVE), but a JSON *string* goes
    # through Go's time.ParseDuration, which refuses "300": the stand-in does the same.
    refused = client.post(f"{server.url}/api/generate", json={"model": "qwen2.5", "keep_alive": "300"})
    assert refused.status_code == 400 and "missing unit" in refused.json()["error"]
    ollama.load(client, server.url, "qwen2.5", keep_alive)
    assert _generate_bodies(server)[-1]["keep_alive"] == sent
    assert [m.name for m in ollama.loaded_models(client, server.url)] == ["qwen2.5:latest"]


def test_load_of_an_unknown_model_names_it_and_says_to_pull(
    client: httpx.Client, server: OllamaStandIn
) -> None:
    with pytest.raises(
        LlmctlError, match=r"does not have model 'mistral:7b'.*404.*model 'mistral:7b' not found"
    ) as info:
        ollama.load(client, server.url, "mistral:7b", "5m")
    assert info.value.hint is not None and "ollama pull mistral:7b" in info.value.hint


def test_load_of_an_embedding_model_uses_the_embeddings_endpoint(
    client: httpx.Client, server: OllamaStandIn
) -> None:
    ollama.load(client, server.url, "nomic-embed-text", "10m")
    assert [m.name for m in ollama.loaded_models(client, server.url)] == ["nomic-embed-text:latest"]
    assert [r.path for r in server.requests if r.method == "POST"] == ["/api/generate", "/api/embeddings"]


def test_keep_alive_zero_is_not_a_load(client: httpx.Client, server: OllamaStandIn) -> None:
    for zero in (0, "0", "0s", "0m"):
        with pytest.raises(ValueError, match="unload"):
            ollama.load(client, server.url, "qwen2.5", zero)
    assert _generate_bodies(server) == []


def test_unload_answers_at_once_but_frees_memory_later(client: httpx.Client, server: OllamaStandIn) -> None:
    # What the stand-in replays, per the documentation: done_reason "unload" at once, while
    # /api/ps still lists the model until the runner is torn down.
    ollama.load(client, server.url, "llama3.1:8b", "5m")
    answer = client.post(f"{server.url}/api/generate", json={"model": "llama3.1:8b", "keep_alive": 0})
    assert (answer.status_code, answer.json()["done_reason"]) == (200, "unload")
    assert [m.name for m in ollama.loaded_models(client, server.url)] == ["llama3.1:8b"]


def test_unload_returns_only_once_api_ps_no_longer_lists_it(
    client: httpx.Client, server: OllamaStandIn
) -> None:
    ollama.load(client, server.url, "llama3.1:8b", "5m")
    ollama.load(client, server.url, "qwen2.5", "5m")
    start = time.monotonic()
    ollama.unload(client, server.url, "llama3.1:8b", timeout=5)
    assert time.monotonic() - start >= 0.15  # it waited for the asynchronous unload
    assert [m.name for m in ollama.loaded_models(client, server.url)] == ["qwen2.5:latest"]
    assert _generate_bodies(server)[-1] == {"model": "llama3.1:8b", "keep_alive": 0, "stream": False}


def test_unload_matches_an_untagged_name_to_latest(client: httpx.Client, server: OllamaStandIn) -> None:
    ollama.load(client, server.url, "qwen2.5", "5m")
    ollama.unload(client, server.url, "qwen2.5", timeout=5)
    assert ollama.loaded_models(client, server.url) == []


def test_unload_of_a_model_that_is_not_loaded_or_unknown_returns(
    client: httpx.Client, server: OllamaStandIn
) -> None:
    ollama.unload(client, server.url, "qwen2.5", timeout=1)
    ollama.unload(client, server.url, "never-pulled:1b", timeout=1)


def test_unload_that_never_completes_names_the_model(client: httpx.Client) -> None:
    with OllamaStandIn([LLAMA], unload_delay=60) as server:
        ollama.load(client, server.url, "llama3.1:8b", "5m")
        start = time.monotonic()
        with pytest.raises(LlmctlError, match=r"still has 'llama3.1:8b' loaded 0.3 s after"):
            ollama.unload(client, server.url, "llama3.1:8b", timeout=0.3)
        assert time.monotonic() - start < 2


def test_unload_polls_on_the_given_clock(client: httpx.Client) -> None:
    now = [0.0]
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds

    with OllamaStandIn([LLAMA], unload_delay=60) as server:
        ollama.load(client, server.url, "llama3.1:8b", "5m")
        with pytest.raises(LlmctlError, match="still has"):
            ollama.unload(client, server.url, "llama3.1:8b", timeout=3, clock=lambda: now[0], sleep=nap)
    assert naps[:4] == [0.05, 0.1, 0.2, 0.4] and max(naps) <= 0.5 and sum(naps) == pytest.approx(3)


# --- the rendered unit ---------------------------------------------------------------------------


def _render(backend: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    config, _ = parse_config(
        dump(
            {
                "version": 1,
                "backends": {"ollama": {"kind": "ollama", "command": "/usr/local/bin/ollama", "port": 11434,
                                        **backend}},
                "models": {"llama3.1-8b": {"backend": "ollama", "source": "llama3.1:8b"}},
                "gateway": {"command": "/opt/litellm/bin/litellm", "port": 4000},
            }
        )
    )  # fmt: skip
    files = render_stack(config, fixed_options(Path("/c.yaml"))).files
    directives: dict[str, list[str]] = {}
    for _, key, value in systemd_syntax.parse_unit(files["systemd/user/llmctl-ollama.service"]):
        directives.setdefault(key, []).append(value)
    return directives, yaml.safe_load(files["llmctl/gateway.yaml"])


def test_ollama_serve_takes_no_flags_and_everything_goes_through_the_environment() -> None:
    unit, _ = _render(
        {"keep_alive": "30m", "max_loaded_models": 2, "models_dir": "/srv/ollama/models",
         "gpus": [0, "GPU-8f2a-11"]}
    )  # fmt: skip
    assert systemd_syntax.exec_argv(unit["ExecStart"][0]) == ["/usr/local/bin/ollama", "serve"]
    assert systemd_syntax.environment(unit["Environment"]) == {
        "OLLAMA_HOST": "127.0.0.1:11434",  # no scheme: "http://host" without a port binds 80
        "OLLAMA_MODELS": "/srv/ollama/models",
        "OLLAMA_KEEP_ALIVE": "30m",
        "OLLAMA_MAX_LOADED_MODELS": "2",
        "CUDA_VISIBLE_DEVICES": "0,GPU-8f2a-11",
    }
    gate = systemd_syntax.exec_argv(unit["ExecStartPost"][0])
    assert gate[gate.index("--kind") + 1 : gate.index("--kind") + 4] == [
        "ollama",
        "--url",
        "http://127.0.0.1:11434",
    ]
    assert "--model" not in gate  # it serves many models, loaded on demand


def test_defaults_set_only_the_host_and_an_ipv6_host_is_bracketed() -> None:
    unit, _ = _render({})
    assert systemd_syntax.environment(unit["Environment"]) == {"OLLAMA_HOST": "127.0.0.1:11434"}
    unit, _ = _render({"host": "::1"})
    host = systemd_syntax.environment(unit["Environment"])["OLLAMA_HOST"]
    assert host == "[::1]:11434" and "://" not in host


def test_args_are_refused_because_ollama_serve_takes_none() -> None:
    with pytest.raises(LlmctlError, match="takes no args") as info:
        _render({"args": ["--verbose"]})
    assert info.value.hint is not None and "OLLAMA_" in info.value.hint


def test_gateway_routes_through_ollama_chat_without_v1() -> None:
    _, gateway = _render({})
    [entry] = [e for e in gateway["model_list"] if e["model_name"] == "llama3.1-8b"]
    assert entry["litellm_params"] == {
        "model": "ollama_chat/llama3.1:8b",
        "api_base": "http://127.0.0.1:11434",
    }


# --- switch: load one model, unloading what the plan evicts ------------------------------------


def test_switch_unloads_what_the_plan_evicts_then_loads_with_the_keep_alive(
    client: httpx.Client, server: OllamaStandIn
) -> None:
    from llmctl.switch import load_into_ollama  # noqa: PLC0415

    ollama.load(client, server.url, "llama3.1:8b", None)
    load_into_ollama(client, server.url, "qwen2.5", "30m", ["llama3.1:8b"], timeout=10)
    assert [m.name for m in ollama.loaded_models(client, server.url)] == ["qwen2.5:latest"]
    bodies = _generate_bodies(server)
    # The unload (keep_alive 0) came before the load, and the load carries the configured keep-alive.
    assert (bodies[-2]["model"], bodies[-2]["keep_alive"]) == ("llama3.1:8b", 0)
    assert bodies[-1]["model"] == "qwen2.5" and bodies[-1]["keep_alive"] == "30m"


def test_switch_to_a_model_ollama_does_not_have_says_to_pull(
    client: httpx.Client, server: OllamaStandIn
) -> None:
    from llmctl.switch import load_into_ollama  # noqa: PLC0415

    with pytest.raises(LlmctlError, match="does not have model") as info:
        load_into_ollama(client, server.url, "mistral:7b", None, [], timeout=10)
    assert "ollama pull mistral:7b" in (info.value.hint or "")
