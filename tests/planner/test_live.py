"""plan_for: the plan for serving a model now, called as llmctl's router calls it (no click)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from llmctl import procs, systemd
from llmctl.backends import ollama as ollama_api
from llmctl.backends import vllm as vllm_api
from llmctl.backends.base import probe_client
from llmctl.estimate import GiB
from llmctl.gpu import GpuInfo, GpuProcess, Inventory
from llmctl.planner.live import gather_facts, plan_for
from tests.backends.standins import OllamaStandIn, OnDisk, VllmStandIn
from tests.conftest import free_port
from tests.planner.fakes import card, make_config


@dataclass(frozen=True)
class Source:
    """A GPU source that answers with a fixed inventory."""

    described: Inventory

    def inventory(self) -> Inventory:
        return self.described


def with_processes(gpu: GpuInfo, *processes: GpuProcess) -> GpuInfo:
    return GpuInfo(**{**gpu.__dict__, "processes": processes})


def test_a_described_inventory_says_what_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A described machine: its processes' units and idle flags are the facts, nothing is asked.
    monkeypatch.setattr(systemd, "manager_reachable", lambda: pytest.fail("asked systemd"))
    config = make_config(tmp_path)
    gpu = with_processes(
        card(0, 24, 12),
        GpuProcess(1, 6 * GiB, "llmctl-ollama.service", "llama3:8b", idle=True),
        GpuProcess(2, 5 * GiB, "llmctl-llama.service", idle=False),
    )
    source = Source(Inventory((gpu,), "550.00", "file", note="described in machine.json"))
    result = plan_for(config, "qwen", serving={}, gpu_source=source)
    assert (result.backend, result.fits) == ("vllm", True)
    assert [(e.action, e.backend, e.idle) for e in result.evictions] == [
        ("unload", "ollama", True),
        ("stop", "llama", False),
    ]
    assert "what runs is taken from the inventory (described in machine.json)" in result.notes


def test_without_a_user_manager_the_processes_cgroups_say_what_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "manager_reachable", lambda: False)
    config = make_config(tmp_path)
    gpu = with_processes(card(0, 24, 21), GpuProcess(2, 20 * GiB, "llmctl-llama.service"))
    result = plan_for(config, "qwen", serving={}, gpu_source=Source(Inventory((gpu,), "550.00", "nvml")))
    assert [(e.action, e.backend, e.idle) for e in result.evictions] == [("stop", "llama", None)]
    assert any("no systemd user manager is reachable" in n for n in result.notes)


def test_live_facts_come_from_the_backends_own_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NVML knows PIDs, systemd their units, and each backend's adapter what it holds: Ollama's
    memory is split per loaded model (/api/ps size_vram), a vLLM that sleeps is asleep."""
    with (
        OllamaStandIn([OnDisk("llama3:8b", size=3 * GiB), OnDisk("mistral:7b", size=GiB)]) as ollama,
        VllmStandIn("qwen", dev_mode=True) as vllm_server,
    ):
        with probe_client(5.0) as client:
            for name in ("llama3:8b", "mistral:7b"):
                ollama_api.load(client, ollama.url, name, None)
            vllm_api.sleep(client, vllm_server.url, 1)
        config = make_config(
            tmp_path,
            ollama={"port": ollama.port},
            vllm={"port": vllm_server.port, "sleep_mode": True},
            llama={"port": free_port()},  # nothing answers: its holding stays as NVML says
        )
        running = {"llmctl-ollama.service": [11], "llmctl-vllm.service": [12], "llmctl-llama.service": [13]}
        monkeypatch.setattr(systemd, "manager_reachable", lambda: True)
        monkeypatch.setattr(
            systemd,
            "show",
            lambda units: {
                u: systemd.UnitState(u, "loaded", "active", "running", 1, 0, "success", u, 0, "enabled")
                for u in units
                if u in running
            },
        )
        monkeypatch.setattr(procs, "cgroup_pids", lambda cgroup: running.get(cgroup, []))
        gpu = with_processes(
            card(0, 80, 16),
            GpuProcess(11, 6 * GiB),  # Ollama's runners: llama3 4 GiB, mistral 2 GiB in VRAM
            GpuProcess(12, 2 * GiB),
            GpuProcess(13, 6 * GiB),
        )
        facts = gather_facts(config, {}, Source(Inventory((gpu,), "550.00", "nvml")))
    held = {(h.backend, h.model): (h.bytes_by_gpu[0] // GiB, h.idle, h.asleep) for h in facts.running}
    assert held == {
        ("ollama", "llama3:8b"): (4, None, False),
        ("ollama", "mistral:7b"): (2, None, False),
        ("vllm", "qwen"): (2, None, True),
        ("llama", "small"): (6, None, False),
    }
    assert sorted(m.name for m in facts.loaded["ollama"]) == ["llama3:8b", "mistral:7b"]
