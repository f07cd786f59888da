"""`llmctl init --from-litellm` on a real machine, the way a migration goes.

A user's own llama-server and llama-cpp-python run (real, provisioned builds, the smoke model)
on ports that are none of the usual ones, behind a LiteLLM config that names them only as
`openai/...` at an api_base: which backend each is, and which GGUF it serves, can only come from
asking the running servers. The import must find both, the real LiteLLM must accept the
gateway.yaml the imported config renders (`llmctl validate`), and once the user's servers are
stopped, `llmctl up` must serve both models under their LiteLLM names through the gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, json_result

CLOUD_KEY = "sk-integration-LITERAL-0123456789abcdef"


def wait_for_models(port: int, process: subprocess.Popen[bytes], limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server on port {port} exited ({process.returncode})"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"nothing served /v1/models on port {port} in {limit:.0f} s")


class Machine:
    def __init__(self, root: Path, provisioned: Provisioned, smoke_model: Path) -> None:
        self.root = root
        self.provisioned = provisioned
        self.model = smoke_model
        self.native_port, self.py_port = free_port(), free_port()
        self.config = root / "llmctl.yaml"
        self.source = root / "litellm.yaml"
        self.servers: list[subprocess.Popen[bytes]] = []
        bins = [
            p.parent for p in (provisioned.litellm, provisioned.llama_server, provisioned.llama_cpp_python)
        ]
        self.env = os.environ | {"PATH": os.pathsep.join([*map(str, bins), os.environ.get("PATH", "")])}
        self.env["HOME"] = str(root / "home")

    def start_servers(self) -> None:
        """The user's own servers, started by hand as before llmctl."""
        log = (self.root / "servers.log").open("ab")
        common = ["--host", "127.0.0.1"]
        self.servers.append(subprocess.Popen(
            [str(self.provisioned.llama_server), "-m", str(self.model), *common,
             "--port", str(self.native_port), "-c", "512"],
            stdout=log, stderr=log,
        ))  # fmt: skip
        self.servers.append(subprocess.Popen(
            [str(self.provisioned.llama_cpp_python), "-m", "llama_cpp.server", "--model", str(self.model),
             *common, "--port", str(self.py_port), "--n_ctx", "512"],
            stdout=log, stderr=log,
        ))  # fmt: skip
        wait_for_models(self.native_port, self.servers[0])
        wait_for_models(self.py_port, self.servers[1])

    def stop_servers(self) -> None:
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            server.wait(timeout=30)
        self.servers.clear()

    def write_source(self) -> None:
        self.source.write_text(
            yaml.safe_dump(
                {
                    "model_list": [
                        {"model_name": "coder-native", "litellm_params": {
                            "model": "openai/whatever", "api_base": f"http://localhost:{self.native_port}/v1",
                            "api_key": "not-needed"}},
                        {"model_name": "coder-py", "litellm_params": {
                            "model": "openai/whatever", "api_base": f"http://127.0.0.1:{self.py_port}/v1"}},
                        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": CLOUD_KEY}},
                    ],
                    "router_settings": {
                        "num_retries": 1,
                        "fallbacks": [{"coder-native": ["coder-py", "gpt-4o"]}],
                        "retry_policy": {"TimeoutErrorRetries": 1},
                    },
                    "litellm_settings": {"request_timeout": 120, "json_logs": True},
                    "general_settings": {"master_key": "sk-their-own-master-key-123456"},
                },
                sort_keys=False,
            )
        )  # fmt: skip

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=300, check=False, env=self.env,
        )  # fmt: skip


def effective(machine: Machine, config: Path) -> dict[str, Any]:
    """What LiteLLM's Router takes from `config` (tests/integration/litellm_effective.py)."""
    python = machine.provisioned.env["LLMCTL_TEST_LITELLM_PYTHON"]
    script = Path(__file__).with_name("litellm_effective.py")
    done = subprocess.run(
        [python, str(script), str(config)], capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(machine.root / "home"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.fixture(scope="module")
def machine(
    user_manager: UserManager,
    provisioned: Provisioned,
    smoke_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Machine]:
    the_machine = Machine(tmp_path_factory.mktemp("from-litellm"), provisioned, smoke_model)
    secrets = user_manager.config_home / "llmctl" / "secrets.env"
    had_secrets = secrets.exists()
    the_machine.write_source()
    the_machine.start_servers()
    try:
        yield the_machine
    finally:
        the_machine.stop_servers()
        the_machine.run("down")
        user_manager.forget_llmctl_units()
        if not had_secrets:
            secrets.unlink(missing_ok=True)  # the next module's gateway must not read our key


def test_a_migration_from_litellm(machine: Machine, user_manager: UserManager) -> None:
    imported = machine.run("init", "--from-litellm", str(machine.source), "--json")
    assert imported.returncode == 0, imported.stderr
    assert CLOUD_KEY not in imported.stdout + imported.stderr + machine.config.read_text()
    data = json_result(imported.stdout)
    report = {e["entry"]: e for e in data["from_litellm"]["report"]}
    native, py = report["model_list[0] (coder-native)"], report["model_list[1] (coder-py)"]
    # Which kind each is and which GGUF it serves came from asking the running servers.
    assert native["outcome"] == "mapped", native
    assert f"the server on port {machine.native_port} says it is llama-server" in native["why"]
    assert py["outcome"] == "mapped", py
    assert f"the server on port {machine.py_port} says it is llama-cpp-python" in py["why"]
    config: dict[str, Any] = yaml.safe_load(machine.config.read_text())
    assert config["models"]["coder-native"]["source"] == str(machine.model)
    assert config["models"]["coder-py"]["source"] == str(machine.model)
    assert config["backends"]["llama-server"]["command"] == str(machine.provisioned.llama_server)
    assert config["gateway"]["command"] == str(machine.provisioned.litellm)
    assert config["gateway"]["fallbacks"] == {"coder-native": ["coder-py", "gpt-4o"]}
    secrets = user_manager.config_home / "llmctl" / "secrets.env"
    assert f"OPENAI_API_KEY='{CLOUD_KEY}'" in secrets.read_text()
    assert secrets.stat().st_mode & 0o077 == 0

    # The real LiteLLM loads the gateway.yaml this config renders (passthrough included).
    validated = machine.run("validate")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "LiteLLM accepts the rendered gateway.yaml" in validated.stdout

    # LiteLLM itself, loading each file as its proxy does, ends up with the same router settings.
    rendered = machine.root / "rendered"
    assert machine.run("render", "--out", str(rendered)).returncode == 0
    before = effective(machine, machine.source)
    after = effective(machine, rendered / "llmctl" / "gateway.yaml")
    assert after == before

    # The user stops their own servers; llmctl runs them from now on, on the same ports.
    machine.stop_servers()
    config["gateway"]["port"] = gateway_port = free_port()  # 4000 may be taken on a test machine
    machine.config.write_text(yaml.safe_dump(config, sort_keys=False))
    up = machine.run("up")
    assert up.returncode == 0, up.stdout + up.stderr
    key = machine.run("gateway", "key").stdout.strip()
    for model in ("coder-native", "coder-py"):
        answer = httpx.post(
            f"http://127.0.0.1:{gateway_port}/v1/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "prompt": "Hello", "max_tokens": 2},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
    gateway_file = user_manager.config_home / "llmctl" / "gateway.yaml"
    assert CLOUD_KEY not in gateway_file.read_text()
    assert "os.environ/OPENAI_API_KEY" in gateway_file.read_text()
