"""llmctl switch on real llama.cpp servers behind the real LiteLLM gateway."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.smoke_model import SmokeShape, write_smoke_model
from tests.integration.broken_models import write_missing_tensor_gguf
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, json_result, stack_up


class SwitchStack:
    def __init__(self, root: Path, provisioned: Provisioned, ports: list[int]) -> None:
        self.root = root
        self.native_port, self.py_port, self.gateway_port = ports
        alpha = write_smoke_model(root / "alpha.gguf", seed=1)
        beta = write_smoke_model(root / "beta.gguf", SmokeShape(layers=3), seed=2)
        broken = write_missing_tensor_gguf(alpha, root / "broken.gguf")
        corrupt = root / "corrupt.gguf"
        corrupt.write_bytes(b"GGUF" + os.urandom(200))
        gone = write_smoke_model(root / "gone.gguf", seed=3)
        self.gone = gone
        native = {"backend": "native", "context": 256}
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
                        },
                        "pyserver": {
                            "kind": "llama-cpp-python",
                            "command": str(provisioned.llama_cpp_python),
                            "port": self.py_port,
                            "model": "other",
                            "gpus": [],
                        },
                    },
                    "models": {
                        "alpha": {**native, "source": str(alpha)},
                        "beta": {**native, "source": str(beta)},
                        "broken": {**native, "source": str(broken)},
                        "corrupt": {**native, "source": str(corrupt)},
                        "gone": {**native, "source": str(gone)},
                        "other": {"backend": "pyserver", "source": str(alpha), "context": 256},
                    },
                    "gateway": {"command": str(provisioned.litellm), "port": self.gateway_port},
                }
            )
        )

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def key(self) -> str:
        return self.run("gateway", "key").stdout.strip()

    def native_serves(self) -> list[str]:
        return [
            m["id"]
            for m in httpx.get(f"http://127.0.0.1:{self.native_port}/v1/models", timeout=5).json()["data"]
        ]

    def native_pid(self) -> int:
        units = json_result(self.run("status", "--json").stdout)["units"]
        return int(next(u for u in units if u["name"] == "native")["main_pid"])

    def chat(self, model: str, client: httpx.Client | None = None) -> httpx.Response:
        return (client or httpx).post(
            f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.key()}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=60,
        )


@pytest.fixture(scope="module")
def stack(
    user_manager: UserManager, provisioned: Provisioned, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SwitchStack]:
    from tests.integration.conftest import free_port  # noqa: PLC0415

    the_stack = SwitchStack(tmp_path_factory.mktemp("switch"), provisioned, [free_port() for _ in range(3)])
    up = the_stack.run("up")
    assert up.returncode == 0, up.stderr
    yield the_stack
    the_stack.run("down")
    user_manager.forget_llmctl_units()


def bridge_gone(user_manager: UserManager) -> bool:
    state = subprocess.run(
        ["systemctl", "--user", "show", "-p", "LoadState,ActiveState", "llmctl-native-bridge.service"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    file_gone = not (user_manager.unit_dir / "llmctl-native-bridge.service").exists()
    return file_gone and "ActiveState=inactive" in state and "LoadState=not-found" in state


def test_switch_moves_the_route_with_the_model(stack: SwitchStack, user_manager: UserManager) -> None:
    """Room for two copies (CPU, tiny models) and a gateway: the new model starts in a bridge
    unit beside the old one, is routed there, then moves into the unit; requests for it never
    fail once they first succeed."""
    assert stack.native_serves() == ["alpha"]
    assert stack.chat("alpha").status_code == 200
    answers: list[int] = []
    stop = threading.Event()

    def ask_for_beta() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                answers.append(stack.chat("beta", client).status_code)
                time.sleep(0.05)

    asker = threading.Thread(target=ask_for_beta)
    asker.start()
    result = stack.run("switch", "beta")
    time.sleep(0.5)
    stop.set()
    asker.join(timeout=70)
    assert result.returncode == 0, result.stderr
    phases = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert phases == [
        "check", "plan", "bridge", "routes-bridge", "stop", "start", "verify", "routes-in", "bridge-stop",
    ]  # fmt: skip
    assert "native: alpha -> beta" in result.stdout
    first_ok = answers.index(200)
    assert set(answers[first_ok:]) == {200}, f"beta failed after it first answered: {answers}"
    assert bridge_gone(user_manager)
    assert stack.native_serves() == ["beta"]
    assert stack.chat("beta").status_code == 200
    # The old id is no longer routed here: a clear error, never beta's answer.
    stale = stack.chat("alpha")
    assert stale.status_code in (400, 404), stale.text
    units = {u["name"]: u for u in json_result(stack.run("status", "--json").stdout)["units"]}
    assert units["native"]["models"] == ["beta"] and units["native"]["health"] == "ok"
    assert "beta" in units["gateway"]["models"] and "alpha" not in units["gateway"]["models"]
    history = (
        (Path(os.environ["XDG_STATE_HOME"]) / "llmctl" / "switch-history.jsonl").read_text().splitlines()
    )
    last = json.loads(history[-1])
    assert (last["backend"], last["from"], last["to"], last["ok"]) == ("native", "alpha", "beta", True)


def test_a_model_that_fails_to_load_never_stops_the_old_one(
    stack: SwitchStack, user_manager: UserManager
) -> None:
    """It fails in the bridge, beside the old server, which keeps serving throughout."""
    before = stack.native_serves()
    pid = stack.native_pid()
    result = stack.run("switch", "broken")
    assert result.returncode == 1
    assert "native-bridge did not become ready" in result.stderr
    assert "rolled back to snapshot" in result.stderr and f"{before[0]} never stopped" in result.stderr
    assert re.search(r"llmctl runbook backend-does-not-start --backend native$", result.stderr, re.M)
    assert "tensor 'output_norm.weight' not found" in result.stderr  # the journal says why
    assert stack.native_serves() == before
    assert stack.native_pid() == pid
    assert stack.chat(before[0]).status_code == 200
    assert bridge_gone(user_manager)


def test_a_switch_killed_while_its_bridge_serves_is_recovered(
    stack: SwitchStack, user_manager: UserManager
) -> None:
    from llmctl.transaction import PAUSE_VARIABLE  # noqa: PLC0415

    before = stack.native_serves()
    target = "alpha" if before == ["beta"] else "beta"
    process = subprocess.Popen(
        [*LLMCTL, "--config", str(stack.config), "switch", target],
        stderr=subprocess.PIPE, text=True, env={**os.environ, PAUSE_VARIABLE: "routes-bridge"},
    )  # fmt: skip
    assert process.stderr is not None
    line = ""
    while "paused at routes-bridge" not in line:
        line = process.stderr.readline()
        assert line, "switch ended without pausing"
    assert not bridge_gone(user_manager)  # the bridge serves the new model now
    record = json.loads((Path(os.environ["XDG_STATE_HOME"]) / "llmctl" / "intent.json").read_text())
    assert record["units"] == ["llmctl-native.service", "llmctl-native-bridge.service"]
    process.kill()
    process.wait()
    recovered = stack.run("recover")
    assert recovered.returncode == 0, recovered.stderr
    assert bridge_gone(user_manager)
    assert stack.native_serves() == before
    assert stack.chat(before[0]).status_code == 200


@pytest.mark.parametrize(("model", "message"), [("corrupt", "not a usable GGUF"), ("gone", "does not exist")])
def test_a_bad_model_file_is_refused_before_anything_stops(
    stack: SwitchStack, model: str, message: str
) -> None:
    if model == "gone":
        stack.gone.unlink(missing_ok=True)
    pid = stack.native_pid()
    before = stack.native_serves()
    result = stack.run("switch", model)
    assert result.returncode == 2 and message in result.stderr
    assert "Nothing was changed" in result.stderr
    assert stack.native_pid() == pid and stack.native_serves() == before


def test_other_models_keep_serving_during_a_switch(stack: SwitchStack) -> None:
    target = "alpha" if stack.native_serves() == ["beta"] else "beta"
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal answered
        with httpx.Client() as client:
            while not stop.is_set():
                response = stack.chat("other", client)
                if response.status_code == 200:
                    answered += 1
                else:
                    failures.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while answered == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    result = stack.run("switch", target)
    stop.set()
    for thread in threads:
        thread.join(timeout=70)
    assert result.returncode == 0, result.stderr
    assert failures == [] and answered > 0


def test_unknown_and_remote_models_are_usage_errors(stack: SwitchStack) -> None:
    result = stack.run("switch", "alpah")
    assert result.returncode == 2 and "did you mean 'alpha'" in result.stderr


Chat = Callable[[str], Any]


GiB = 1 << 30


def described_gpu(free: int, processes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A 1 GiB GPU, as `llmctl gpus --json` would describe it."""
    return {
        "source": "file",
        "gpus": [
            {
                "index": 0,
                "uuid": "GPU-00000000-0000-0000-0000-000000000000",
                "name": "Tiny",
                "total_bytes": GiB,
                "used_bytes": GiB - free,
                "free_bytes": free,
                "utilization_percent": 0,
                "processes": processes or [],
            },
        ],
    }


class GpuStack:
    """One llama-server backend on (described) GPU 0, switching between two smoke models."""

    def __init__(self, tmp_path: Path, provisioned: Provisioned) -> None:
        from tests.integration.conftest import free_port  # noqa: PLC0415

        alpha = write_smoke_model(tmp_path / "alpha.gguf", seed=1)
        beta = write_smoke_model(tmp_path / "beta.gguf", seed=2)
        self.port = free_port()
        self.config = tmp_path / "llmctl.yaml"
        self.inventory = tmp_path / "gpus.json"
        model = {"backend": "gpu", "context": 256}
        self.config.write_text(
            yaml.safe_dump({
                "version": 1,
                "backends": {"gpu": {"kind": "llama-server", "command": str(provisioned.llama_server),
                                     "port": self.port, "model": "alpha", "gpus": [0]}},
                "models": {"alpha": {**model, "source": str(alpha)}, "beta": {**model, "source": str(beta)}},
                "gateway": {"enabled": False},
            })
        )  # fmt: skip

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args], capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip

    def pid(self) -> int:
        return int(json_result(self.run("status", "--json").stdout)["units"][0]["main_pid"])

    def serves(self) -> list[str]:
        data = httpx.get(f"http://127.0.0.1:{self.port}/v1/models", timeout=5).json()["data"]
        return [m["id"] for m in data]


@pytest.fixture
def gpu_stack(user_manager: UserManager, provisioned: Provisioned, tmp_path: Path) -> Iterator[GpuStack]:
    the_stack = GpuStack(tmp_path, provisioned)
    with stack_up(the_stack.run, user_manager):
        yield the_stack


def test_a_model_that_cannot_fit_is_refused_before_anything_changes(gpu_stack: GpuStack) -> None:
    """On a (described) 1 GiB GPU with 100 MiB free, nothing fits: refused, old model untouched."""
    gpu_stack.inventory.write_text(json.dumps(described_gpu(free=100 << 20)))
    pid = gpu_stack.pid()
    dry = gpu_stack.run("switch", "beta", "--dry-run", "--gpu-inventory", str(gpu_stack.inventory))
    assert dry.returncode == 1 and "short by" in dry.stdout, dry.stdout + dry.stderr
    result = gpu_stack.run("switch", "beta", "--gpu-inventory", str(gpu_stack.inventory))
    assert result.returncode == 1
    assert "does not fit" in result.stderr and "short by" in result.stderr
    assert "nothing was changed" in result.stderr
    assert gpu_stack.pid() == pid
    assert gpu_stack.serves() == ["alpha"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_new_model_starts_only_once_the_gpu_memory_is_back(gpu_stack: GpuStack) -> None:
    """The GPU (described) still shows the old server's 900 MiB for a while after the stop:
    the switch waits in its gpu-free phase; when the memory never comes back it names the
    holder and the old model serves again."""
    holder = {"pid": dead_pid(), "used_bytes": 900 << 20, "unit": "llmctl-gpu.service"}
    held = json.dumps(described_gpu(free=100 << 20, processes=[holder]))
    gpu_stack.inventory.write_text(held)

    # 1. The memory comes back 1.5 s after the old server is gone.
    old = gpu_stack.pid()

    def release() -> None:
        while Path(f"/proc/{old}").exists():
            time.sleep(0.01)
        time.sleep(1.5)
        tmp = gpu_stack.inventory.with_suffix(".tmp")
        tmp.write_text(json.dumps(described_gpu(free=GiB - (20 << 20))))
        tmp.replace(gpu_stack.inventory)

    releaser = threading.Thread(target=release)
    releaser.start()
    result = gpu_stack.run("switch", "beta", "--gpu-inventory", str(gpu_stack.inventory), "--json")
    releaser.join()
    assert result.returncode == 0, result.stderr
    phases = json.loads(result.stdout)["data"]["phases"]
    assert list(phases)[:4] == ["check", "plan", "routes-out", "stop"]
    assert phases["gpu-free"] >= 1.0  # it waited for the memory, not just for the process
    assert gpu_stack.serves() == ["beta"]

    # 2. The memory never comes back: refused after the wait, named, rolled back to beta.
    gpu_stack.inventory.write_text(held)
    before = gpu_stack.pid()
    result = gpu_stack.run("switch", "alpha", "--gpu-inventory", str(gpu_stack.inventory))
    assert result.returncode == 1
    assert "not enough GPU memory is free after stopping for alpha on gpu" in result.stderr
    assert f"held by pid {holder['pid']}, llmctl-gpu.service, 900 MiB, no such process" in result.stderr, (
        result.stderr
    )
    assert "gpu-memory-not-freed" in result.stderr
    assert gpu_stack.serves() == ["beta"]
    assert gpu_stack.pid() != before  # stopped for the attempt, started again by the rollback
