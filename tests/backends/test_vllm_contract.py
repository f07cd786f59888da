"""vLLM adapter against its documented behaviour (reference sections 4, 8, 9).

vLLM cannot run here, so the adapter is driven over real sockets against `VllmStandIn`, and the
rendered command line is checked flag by flag against the documented `vllm serve` CLI.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl import status, systemd
from llmctl.backends import vllm
from llmctl.backends.base import Health, probe_client
from llmctl.backends.vllm import VllmAdapter
from llmctl.config.load import parse_config
from llmctl.errors import LlmctlError
from llmctl.lifecycle import ensure_backend_keys
from llmctl.paths import Paths
from llmctl.readiness import probe_once, wait_ready
from llmctl.render.units import RenderOptions, render_stack
from llmctl.secrets import read_backend_key
from llmctl.stack import StackUnit
from tests import systemd_syntax
from tests.backends.standins import Recorder, VllmStandIn
from tests.conftest import dump
from tests.render.test_units import fixed_options

pytestmark = pytest.mark.contract

SERVED = "qwen2.5-7b"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0, trust_env=False) as c:
        yield c


# --- readiness -------------------------------------------------------------------------------


def test_refused_while_loading_then_ready(client: httpx.Client) -> None:
    with VllmStandIn(SERVED, load_time=0.3) as server:
        first = probe_once(client, "vllm", server.url, SERVED)
        # Bound but not listening: refused, never a 503 (there is no loading phase on the wire).
        assert first.health is Health.DOWN and first.detail == "connection refused"
        recorder = Recorder()
        result = wait_ready("vllm", server.url, SERVED, timeout=5, on_probe=recorder)
    assert result.probe.health is Health.OK and result.probe.models == (SERVED,)
    assert result.waited >= 0.2 and result.attempts >= 2
    assert recorder.seen[0][:2] == ("down", "connection refused")
    assert all(detail == "connection refused" for _, detail, _ in recorder.seen[:-1])


def _unit(kind: str = "vllm") -> StackUnit:
    return StackUnit("vllm", "llmctl-vllm.service", kind, "127.0.0.1", 8001, SERVED, (SERVED,), 1200,
                     "/opt/vllm/bin/vllm", None)  # fmt: skip


def _state(active: str) -> systemd.UnitState:
    return systemd.UnitState("llmctl-vllm.service", "loaded", active, "running", 42, 0, "success", "", 0, "")


def test_refused_reads_as_loading_while_the_unit_starts_and_down_after(client: httpx.Client) -> None:
    with VllmStandIn(SERVED, load_time=None) as server:
        probe = probe_once(client, "vllm", server.url, SERVED)
    # The readiness gate still runs (activating): loading. Started and refusing: down.
    assert status._health(_unit(), _state("activating"), probe) == (Health.LOADING, "connection refused")
    assert status._health(_unit(), _state("active"), probe) == (Health.DOWN, "connection refused")


def test_engine_death_is_down_and_names_the_503(client: httpx.Client) -> None:
    with VllmStandIn(SERVED) as server:
        assert probe_once(client, "vllm", server.url, SERVED).health is Health.OK
        server.kill_engine()
        probe = probe_once(client, "vllm", server.url, SERVED)
        assert probe.health is Health.DOWN and "503" in probe.detail and "engine dead" in probe.detail
        with pytest.raises(LlmctlError, match=r"not ready after .*engine dead \(/health answered 503\)"):
            wait_ready("vllm", server.url, SERVED, timeout=0.3, client=client)


def test_wrong_served_model_name_is_not_ok(client: httpx.Client) -> None:
    with VllmStandIn("someone-else") as server:
        probe = probe_once(client, "vllm", server.url, SERVED)
        assert probe.health is Health.DOWN
        assert probe.detail == f"serves ['someone-else'], not {SERVED}"
        assert probe.models == ("someone-else",)
        with pytest.raises(LlmctlError, match=f"not {SERVED}"):
            wait_ready("vllm", server.url, SERVED, timeout=0.3, client=client)


def test_a_server_process_that_exits_while_loading_ends_the_wait_at_once() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with (
        VllmStandIn(SERVED, load_time=None) as server,
        pytest.raises(LlmctlError, match=rf"process {gone.pid} exited before it was ready"),
    ):
        wait_ready("vllm", server.url, SERVED, timeout=30, pid=gone.pid)


def test_api_key_guards_v1_but_never_health(client: httpx.Client) -> None:
    with VllmStandIn(SERVED, api_key="sk-local") as server:
        assert client.get(f"{server.url}/health").status_code == 200
        refused = client.get(f"{server.url}/v1/models")
        assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"})
        # Without the key the gate cannot read /v1/models; /health 200 already means ready,
        # so the probe must not call that "loading" for the whole start timeout.
        probe = probe_once(client, "vllm", server.url, SERVED)
        assert probe.health is Health.OK and "API key" in probe.detail
        with httpx.Client(
            timeout=2.0, trust_env=False, headers={"Authorization": "Bearer sk-local"}
        ) as keyed:
            assert probe_once(keyed, "vllm", server.url, SERVED).models == (SERVED,)
            assert probe_once(keyed, "vllm", server.url, "other").health is Health.DOWN


# --- llmctl's own requests carry the key of a backend started with one (api_key: true) ----------


def _install_keyed(port: int) -> str:
    """Install (as `up` would) the units of a vLLM started with a key on `port`; return the key."""
    paths = Paths.from_env()
    config, _ = parse_config(
        dump(
            {
                "version": 1,
                "backends": {"vllm": {"kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": port,
                                      "model": SERVED, "api_key": True}},
                "models": {SERVED: {"backend": "vllm", "source": "Qwen/Qwen2.5-7B-Instruct-AWQ"}},
                "gateway": {"command": "/opt/litellm/bin/litellm", "port": 4000},
            }
        )
    )  # fmt: skip
    options = RenderOptions(config_path=Path("/c.yaml"), paths=paths, resolve=Path)
    for rel, text in render_stack(config, options).files.items():
        (paths.config_home / rel).parent.mkdir(parents=True, exist_ok=True)
        (paths.config_home / rel).write_text(text)
    assert ensure_backend_keys(config, paths) == ["vllm"]
    return read_backend_key(paths.backend_key_file("vllm"), "VLLM_API_KEY")


def test_status_and_up_probes_send_the_installed_key_and_check_the_served_name() -> None:
    with VllmStandIn(SERVED) as server:
        server.api_key = _install_keyed(server.port)
        with probe_client(2.0) as keyed:
            probe = probe_once(keyed, "vllm", server.url, SERVED)
        assert (probe.health, probe.detail, probe.models) == (Health.OK, "/health 200", (SERVED,))
        result = wait_ready("vllm", server.url, SERVED, timeout=2)  # its own client: the same keys
        assert result.probe.models == (SERVED,)
        with probe_client(2.0) as client:  # as `up` and `switch` wait for a unit
            assert wait_ready("vllm", server.url, SERVED, timeout=2, client=client).attempts == 1
    [models] = [r for r in server.requests if r.path == "/v1/models"][:1]
    assert models.headers["authorization"] == f"Bearer {server.api_key}"


def test_a_server_holding_another_key_is_down_and_says_so() -> None:
    with VllmStandIn(SERVED) as server:
        _install_keyed(server.port)
        server.api_key = "sk-the-key-it-started-with"  # the file was replaced since
        with probe_client(2.0) as keyed:
            probe = probe_once(keyed, "vllm", server.url, SERVED)
    assert probe.health is Health.DOWN
    assert probe.detail == "/v1/models refused the API key (401): restart it to read the current key"


def test_the_switch_one_token_check_and_the_supervisor_deep_probe_send_the_key() -> None:
    from llmctl.supervisor import probes  # noqa: PLC0415
    from llmctl.supervisor.plan import BackendPlan  # noqa: PLC0415
    from llmctl.switch import one_token  # noqa: PLC0415

    with VllmStandIn(SERVED) as server:
        server.api_key = _install_keyed(server.port)
        unit = StackUnit("vllm", "llmctl-vllm.service", "vllm", "127.0.0.1", server.port, SERVED, (SERVED,),
                         1200, "/opt/vllm/bin/vllm", None)  # fmt: skip
        one_token(unit, SERVED, timeout=2)  # raises on anything but 200
        plan = BackendPlan("vllm", "llmctl-vllm.service", "vllm", server.url, SERVED)
        with probes.client() as http:
            deep = probes.deep(http, plan, 2.0)
    assert deep.ok and not deep.skipped, deep.detail
    posts = [r for r in server.requests if r.method == "POST"]
    assert [r.path for r in posts] == ["/v1/chat/completions", "/v1/completions"]
    assert all(r.headers["authorization"] == f"Bearer {server.api_key}" for r in posts)


def test_the_readiness_gate_sends_the_key_without_pydantic_and_never_prints_it() -> None:
    with VllmStandIn(SERVED) as server:
        key = server.api_key = _install_keyed(server.port)
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "llmctl", "wait-ready", "--kind", "vllm",
             "--url", server.url, "--model", SERVED, "--timeout", "5"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ready after ") and result.stdout.rstrip().endswith(": /health 200")
    assert key not in result.stdout + result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "llmctl.secrets" in imported, "the key came from the installed unit's key file"
    assert not {"psutil", "pydantic", "jinja2"} & imported  # (httpx itself imports click)


def test_models_card_has_the_documented_shape(client: httpx.Client) -> None:
    with VllmStandIn(SERVED, root="/srv/qwen", max_model_len=4096) as server:
        body = client.get(f"{server.url}/v1/models").json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert {k: card[k] for k in ("id", "object", "owned_by", "root", "max_model_len")} == {
        "id": SERVED, "object": "model", "owned_by": "vllm", "root": "/srv/qwen", "max_model_len": 4096,
    }  # fmt: skip


# --- sleep mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("wake_up_json", [False, True], ids=["empty-wake-reply", "json-wake-reply"])
def test_sleep_and_wake_up(client: httpx.Client, wake_up_json: bool) -> None:
    with VllmStandIn(SERVED, dev_mode=True, wake_up_json=wake_up_json) as server:
        assert vllm.is_sleeping(client, server.url) is False
        for level in (1, 2):
            vllm.sleep(client, server.url, level)
            assert vllm.is_sleeping(client, server.url) is True
            assert server.sleep_level == level
            # /v1/models keeps answering while asleep, so the probe still says ok.
            assert probe_once(client, "vllm", server.url, SERVED).health is Health.OK
            vllm.wake_up(client, server.url)
            assert vllm.is_sleeping(client, server.url) is False
    sleeps = [r for r in server.requests if r.path == "/sleep"]
    assert [(r.method, r.query) for r in sleeps] == [("POST", {"level": ["1"]}), ("POST", {"level": ["2"]})]
    assert {(r.method, r.path) for r in server.requests if r.path != "/sleep"} >= {
        ("POST", "/wake_up"),
        ("GET", "/is_sleeping"),
    }


def test_the_adapter_says_whether_it_sleeps_and_none_when_it_cannot_tell() -> None:
    adapter = VllmAdapter()
    with probe_client(2.0) as client:
        with VllmStandIn(SERVED, dev_mode=True) as server:
            assert adapter.is_sleeping(client, server.url) is False
            vllm.sleep(client, server.url, 1)
            assert adapter.is_sleeping(client, server.url) is True
            assert adapter.memory_facts(client, server.url, 2.0, sleep_mode=True).asleep is True
            asked = len(server.requests)
            # A backend configured without sleep mode has no such state: not even asked.
            assert adapter.memory_facts(client, server.url, 2.0).asleep is False
            assert all(r.path != "/is_sleeping" for r in server.requests[asked:])
        with VllmStandIn(SERVED, dev_mode=False) as server:
            assert adapter.is_sleeping(client, server.url) is None  # no endpoint
        assert adapter.is_sleeping(client, server.url) is None  # nothing answers


def test_sleep_endpoints_are_unauthenticated(client: httpx.Client) -> None:
    with VllmStandIn(SERVED, dev_mode=True, api_key="sk-local") as server:
        vllm.sleep(client, server.url, 1)
        assert vllm.is_sleeping(client, server.url) is True


def test_without_dev_mode_the_error_says_how_to_enable_sleep_mode(client: httpx.Client) -> None:
    with VllmStandIn(SERVED, dev_mode=False) as server:
        for call in (lambda: vllm.sleep(client, server.url, 1), lambda: vllm.wake_up(client, server.url),
                     lambda: vllm.is_sleeping(client, server.url)):  # fmt: skip
            with pytest.raises(LlmctlError, match=r"no /(sleep|wake_up|is_sleeping) endpoint") as info:
                call()
            assert info.value.hint is not None
            assert "sleep_mode: true" in info.value.hint and "VLLM_SERVER_DEV_MODE=1" in info.value.hint


def test_sleep_level_must_be_documented_and_an_absent_server_is_named(client: httpx.Client) -> None:
    with pytest.raises(ValueError, match="1 or 2"):
        vllm.sleep(client, "http://127.0.0.1:9", 3)
    with (
        VllmStandIn(SERVED, load_time=None) as server,
        pytest.raises(LlmctlError, match="did not answer /is_sleeping"),
    ):
        vllm.is_sleeping(client, server.url)


# --- the rendered unit, flag by flag -----------------------------------------------------------


def _render(backend: dict[str, Any], model: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    config, _ = parse_config(
        dump(
            {
                "version": 1,
                "backends": {"vllm": {"kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8001,
                                      "model": SERVED, **backend}},
                "models": {SERVED: {"backend": "vllm", "source": "Qwen/Qwen2.5-7B-Instruct-AWQ", **model}},
                "gateway": {"command": "/opt/litellm/bin/litellm", "port": 4000},
            }
        )
    )  # fmt: skip
    files = render_stack(config, fixed_options(Path("/c.yaml"))).files
    directives: dict[str, list[str]] = {}
    for _, key, value in systemd_syntax.parse_unit(files["systemd/user/llmctl-vllm.service"]):
        directives.setdefault(key, []).append(value)
    return directives, yaml.safe_load(files["llmctl/gateway.yaml"])


def test_minimal_command_line_is_exactly_the_documented_one() -> None:
    unit, _ = _render({}, {})
    assert systemd_syntax.exec_argv(unit["ExecStart"][0]) == [
        "/opt/vllm/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct-AWQ",
        "--host", "127.0.0.1",  # always: vLLM binds every interface without it
        "--port", "8001",  # VLLM_PORT is not the HTTP port
        "--served-model-name", SERVED,
        "--gpu-memory-utilization", "0.9",  # always: the default moved (0.9 -> 0.92)
    ]  # fmt: skip
    env = systemd_syntax.environment(unit.get("Environment", []))
    assert "VLLM_SERVER_DEV_MODE" not in env and "CUDA_VISIBLE_DEVICES" not in env
    # vLLM can exit 0 after its engine died: on-failure would not restart it.
    assert unit["Restart"] == ["always"]
    assert int(unit["TimeoutStartSec"][0]) >= 1200
    # The engine's own start-up timeout (600 s by default) must not cut the load short.
    assert int(env["VLLM_ENGINE_READY_TIMEOUT_S"]) >= int(unit["TimeoutStartSec"][0])
    gate = systemd_syntax.exec_argv(unit["ExecStartPost"][0])
    assert gate[gate.index("--kind") + 1 :][:5] == [
        "vllm",
        "--url",
        "http://127.0.0.1:8001",
        "--model",
        SERVED,
    ]


def test_every_optional_flag_and_sleep_mode() -> None:
    unit, _ = _render(
        {"gpus": [0, "GPU-8f2a-11"], "gpu_memory_utilization": 0.45, "tensor_parallel_size": 2,
         "sleep_mode": True, "host": "127.0.0.2"},
        {"context": 16384},
    )  # fmt: skip
    argv = systemd_syntax.exec_argv(unit["ExecStart"][0])
    assert argv == [
        "/opt/vllm/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct-AWQ",
        "--host", "127.0.0.2", "--port", "8001", "--served-model-name", SERVED,
        "--gpu-memory-utilization", "0.45",
        "--max-model-len", "16384",
        "--tensor-parallel-size", "2",
        "--enable-sleep-mode",
    ]  # fmt: skip
    env = systemd_syntax.environment(unit["Environment"])
    # The sleep endpoints exist only in dev mode: both halves or neither.
    assert env["VLLM_SERVER_DEV_MODE"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,GPU-8f2a-11"


def test_cpu_only_and_extra_args_come_last() -> None:
    unit, _ = _render({"gpus": [], "args": ["--dtype", "half"], "start_timeout": 1800}, {})
    argv = systemd_syntax.exec_argv(unit["ExecStart"][0])
    assert argv[-2:] == ["--dtype", "half"] and argv.count("--host") == 1
    env = systemd_syntax.environment(unit["Environment"])
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert unit["TimeoutStartSec"] == ["1800"] and env["VLLM_ENGINE_READY_TIMEOUT_S"] == "1800"


def test_gateway_routes_the_served_name_through_hosted_vllm_with_v1() -> None:
    _, gateway = _render({}, {})
    [entry] = [e for e in gateway["model_list"] if e["model_name"] == SERVED]
    params = entry["litellm_params"]
    assert params["model"] == f"hosted_vllm/{SERVED}"
    assert params["api_base"] == "http://127.0.0.1:8001/v1"


def _render_keyed(backend: dict[str, Any]) -> tuple[dict[str, list[tuple[str, str, str]]], dict[str, Any]]:
    """The units (parsed) and the gateway route of a vLLM backend named big-vllm."""
    config, _ = parse_config(
        dump(
            {
                "version": 1,
                "backends": {"big-vllm": {"kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8001,
                                          "model": SERVED, **backend}},
                "models": {SERVED: {"backend": "big-vllm", "source": "Qwen/Qwen2.5-7B-Instruct-AWQ"}},
                "gateway": {"command": "/opt/litellm/bin/litellm", "port": 4000},
            }
        )
    )  # fmt: skip
    files = render_stack(config, fixed_options(Path("/c.yaml"))).files
    units = {
        rel.rsplit("/", 1)[-1]: systemd_syntax.parse_unit(t) for rel, t in files.items() if "systemd" in rel
    }
    [route] = [e["litellm_params"] for e in yaml.safe_load(files["llmctl/gateway.yaml"])["model_list"]]
    return units, route


def _values(parsed: list[tuple[str, str, str]], key: str) -> list[str]:
    return [v for _, k, v in parsed if k == key]


def test_api_key_reaches_vllm_as_vllm_api_key_only_through_its_key_file() -> None:
    units, route = _render_keyed({"api_key": True})
    unit = units["llmctl-big-vllm.service"]
    # No "-": without its key file the unit must not start (vLLM would serve without a key).
    assert _values(unit, "EnvironmentFile") == ["/home/user/.config/llmctl/keys/big-vllm.env"]
    argv = systemd_syntax.exec_argv(_values(unit, "ExecStart")[0])
    assert not [a for a in argv if "api-key" in str(a) or "api_key" in str(a)], "never in the argv"
    assert "VLLM_API_KEY" not in systemd_syntax.environment(_values(unit, "Environment"))
    # The gateway reads the backend's key by a name of its own, from the same file.
    assert route["api_key"] == "os.environ/LLMCTL_API_KEY_BIG_VLLM"
    gateway = units["llmctl-gateway.service"]
    assert _values(gateway, "EnvironmentFile") == [
        "/home/user/.config/llmctl/gateway.env",
        "-/home/user/.config/llmctl/secrets.env",
        "-/home/user/.config/llmctl/keys/big-vllm.env",
    ]
    assert "VLLM_API_KEY" in _values(gateway, "UnsetEnvironment")[0].split()


def test_without_api_key_nothing_changes() -> None:
    units, route = _render_keyed({})
    assert not _values(units["llmctl-big-vllm.service"], "EnvironmentFile")
    assert route["api_key"] == "none"
    gateway = units["llmctl-gateway.service"]
    assert len(_values(gateway, "EnvironmentFile")) == 2
    assert _values(gateway, "UnsetEnvironment") == ["HOST PORT CONFIG_FILE_PATH"]


def test_adapter_constants_match_the_documentation() -> None:
    assert VllmAdapter.restart == "always"
    assert VllmAdapter.default_start_timeout >= 1200
    # `--api-key K` or env VLLM_API_KEY (reference 4.1): the variable keeps it out of the argv.
    assert VllmAdapter.api_key_variable == "VLLM_API_KEY"
