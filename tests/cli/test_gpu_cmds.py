"""`llmctl gpus` and `llmctl plan` through the real CLI entry point, on described GPUs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmctl import gpu, procs, systemd
from llmctl.cli import main
from llmctl.smoke_model import SmokeShape, write_smoke_model
from llmctl.systemd import UnitState
from tests.conftest import free_port, write_config

GiB = 1024**3


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd, "manager_reachable", lambda: False)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A config (llama-server serving a smoke model, Ollama, vLLM) and a described 24 GiB card."""
    model = write_smoke_model(
        tmp_path / "tiny.gguf", SmokeShape(layers=2, embedding=128, heads=4, kv_heads=2)
    )
    config = {
        "version": 1,
        "backends": {
            # Ports nothing listens on (a demo stack may run on llmctl's usual ones): the live
            # test below relies on no backend answering.
            "llama": {"kind": "llama-server", "command": "/bin/true", "port": free_port(), "model": "tiny"},
            "ollama": {"kind": "ollama", "command": "/bin/true", "port": free_port()},
            "cpu": {"kind": "llama-server", "command": "/bin/true", "port": free_port(), "gpus": []},
            "big": {"kind": "vllm", "command": "/bin/true", "port": free_port(), "model": "qwen"},
        },
        "models": {
            "tiny": {"backend": "llama", "source": str(model), "context": 2048},
            "tiny-cpu": {"backend": "cpu", "source": str(model), "context": 2048},
            "llama3": {"backend": "ollama", "source": "llama3:8b"},
            "qwen": {"backend": "big", "source": "Qwen/Qwen2.5-7B-Instruct", "context": 8192},
        },
        "gateway": {"enabled": False},
    }
    inventory = {
        "driver_version": "550.54",
        "gpus": [
            {
                "index": 0, "uuid": "GPU-aaaa", "name": "RTX 4090", "total_bytes": 24 * GiB,
                "used_bytes": 14 * GiB, "free_bytes": 10 * GiB, "utilization_percent": 40,
                "processes": [
                    {"pid": 101, "used_bytes": 8 * GiB, "unit": "llmctl-ollama.service", "model": "llama3:8b",
                     "idle": True},
                    {"pid": 202, "used_bytes": 5 * GiB, "unit": "llmctl-llama.service", "idle": False},
                ],
            }
        ],
    }  # fmt: skip
    inv_path = tmp_path / "inv.json"
    inv_path.write_text(json.dumps(inventory))
    return write_config(tmp_path / "llmctl.yaml", config), inv_path


def test_gpus_without_a_driver_says_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pynvml")
    code, out, _ = run(capsys, "gpus")
    assert code == 0
    assert out.count("No GPU") == 1 and "llmctl plans for CPU" in out
    code, out, _ = run(capsys, "gpus", "--json")
    data = json.loads(out)["data"]
    assert (data["source"], data["gpus"]) == ("none", []) and "NVML" in data["note"]


def test_gpus_from_a_described_inventory(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, inv = setup
    code, out, _ = run(capsys, "gpus", "--gpu-inventory", str(inv))
    assert code == 0
    assert "RTX 4090  GPU-aaaa  24.0 GiB  14.0 GiB  10.0 GiB  40%" in out
    assert "101  llmctl-ollama.service  8.0 GiB  llama3:8b" in out
    code, out, _ = run(capsys, "gpus", "--gpu-inventory", str(inv), "--json")
    envelope = json.loads(out)
    assert envelope["command"] == "gpus" and envelope["data"]["source"] == "file"
    # The JSON output is itself a valid inventory file.
    inv.write_text(out)
    code, again, _ = run(capsys, "gpus", "--gpu-inventory", str(inv), "--json")
    assert json.loads(again)["data"]["gpus"] == envelope["data"]["gpus"]


def test_bad_inventory_file_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gpus": [{"index": 0, "total_bytes": -1}]}))
    code, out, err = run(capsys, "gpus", "--gpu-inventory", str(bad))
    assert code == 2 and out == ""
    assert "gpus[0].total_bytes: must be a non-negative whole number, not -1" in err


def test_plan_text_and_json(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, inv = setup
    code, out, _ = run(capsys, "--config", str(config), "plan", "qwen", "--gpu-inventory", str(inv))
    assert code == 0, out
    assert "qwen: served by big (vllm, llmctl-big.service) on GPU" in out
    assert "1. unload ollama: llama3:8b  (frees 8.0 GiB; idle)" in out
    assert "2. stop   llmctl-llama.service  (frees 5.0 GiB; busy)" in out
    assert "Fits after 2 eviction(s)." in out
    code, out, _ = run(capsys, "--config", str(config), "plan", "qwen", "--gpu-inventory", str(inv), "--json")
    data = json.loads(out)["data"]
    assert data["fits"] is True and [e["action"] for e in data["evictions"]] == ["unload", "stop"]
    assert data["gpus"][0]["needs_bytes"] == -(-24 * GiB * 9 // 10)


def test_plan_a_gguf_model_that_fits_beside(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, inv = setup
    code, out, _ = run(capsys, "--config", str(config), "plan", "tiny", "--gpu-inventory", str(inv), "--json")
    data = json.loads(out)["data"]
    assert code == 0 and data["already_serving"] is True  # llama serves tiny (the config's model:)
    assert data["estimate"]["method"] == "gguf" and data["estimate"]["context"] == 2048


def test_plan_that_cannot_fit_exits_1_and_says_by_how_much(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, inv = setup
    data = json.loads(inv.read_text())
    data["gpus"][0]["total_bytes"] = 16 * GiB  # vLLM at 0.9 wants 14.4 GiB of a 16 GiB card
    data["gpus"][0]["used_bytes"] = 15 * GiB
    data["gpus"][0]["free_bytes"] = 1 * GiB  # 2 GiB held by something llmctl does not manage
    inv.write_text(json.dumps(data))
    code, out, _ = run(capsys, "--config", str(config), "plan", "qwen", "--gpu-inventory", str(inv))
    assert code == 1
    assert "Does NOT fit: short by 410 MiB even after every allowed eviction." in out
    assert "2.0 GiB in use by processes llmctl does not manage" in out


def test_plan_cpu_only_and_without_gpus(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], no_manager: None
) -> None:
    config, inv = setup
    code, out, _ = run(capsys, "--config", str(config), "plan", "tiny-cpu", "--gpu-inventory", str(inv))
    assert code == 0 and "on CPU" in out and "Fits (CPU)." in out and "CPU only (gpus: [])" in out
    pytest.importorskip("pynvml")
    code, out, _ = run(capsys, "--config", str(config), "plan", "tiny", "--json")
    data = json.loads(out)["data"]
    assert code == 0 and data["device"] == "cpu" and data["fits"] is True
    assert any("no systemd user manager is reachable" in n for n in data["notes"])
    assert any("NVML" in n for n in data["notes"])


def test_plan_unknown_model_is_a_usage_error(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, inv = setup
    code, _, err = run(capsys, "--config", str(config), "plan", "tinny", "--gpu-inventory", str(inv))
    assert code == 2 and "unknown model 'tinny'; did you mean 'tiny'?" in err


def test_plan_live_maps_nvml_processes_to_units_through_systemd(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, inv = setup
    described = gpu.load_inventory(inv)
    # NVML knows PIDs only; systemd's cgroups say which unit each belongs to.
    bare = gpu.with_units(described, {})
    bare = gpu.Inventory(
        tuple(
            gpu.GpuInfo(
                **{**g.__dict__, "processes": tuple(gpu.GpuProcess(p.pid, p.used_bytes) for p in g.processes)}
            )
            for g in bare.gpus
        ),
        "550.54",
        "nvml",
    )
    monkeypatch.setattr(gpu, "read_inventory", lambda: bare)
    monkeypatch.setattr(systemd, "manager_reachable", lambda: True)

    def state(unit: str, cgroup: str) -> UnitState:
        return UnitState(unit, "loaded", "active", "running", 1, 0, "success", cgroup, 0, "enabled")

    states = {
        "llmctl-ollama.service": state("llmctl-ollama.service", "/app.slice/llmctl-ollama.service"),
        "llmctl-llama.service": state("llmctl-llama.service", "/app.slice/llmctl-llama.service"),
    }
    shown: list[Any] = []

    def show(units: list[str]) -> dict[str, UnitState]:
        shown.append(units)
        return states

    monkeypatch.setattr(systemd, "show", show)
    pids = {"/app.slice/llmctl-ollama.service": [101], "/app.slice/llmctl-llama.service": [202]}
    monkeypatch.setattr(procs, "cgroup_pids", lambda cg: pids.get(cg, []))
    code, out, _ = run(capsys, "--config", str(config), "plan", "qwen", "--json")
    data = json.loads(out)["data"]
    assert code == 0 and sorted(shown[0]) == sorted(
        f"llmctl-{b}.service" for b in ("llama", "ollama", "cpu", "big")
    )
    # Nothing answers on the backends' ports: Ollama's split and idleness stay unknown, so
    # Ollama is stopped as a whole, and the smaller holding goes first.
    assert [(e["action"], e["backend"], e["idle"]) for e in data["evictions"]] == [
        ("stop", "llama", None),
        ("stop", "ollama", None),
    ]
