"""plan_for: the plan for serving a model now, called as llmctl's router calls it (no click)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from llmctl import systemd
from llmctl.estimate import GiB
from llmctl.gpu import GpuInfo, GpuProcess, Inventory
from llmctl.planner.live import plan_for
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
