"""What each backend holds, from the inventory's processes."""

from __future__ import annotations

from pathlib import Path

from llmctl.estimate import GiB
from llmctl.gpu import GpuInfo, GpuProcess
from llmctl.planner import (
    Holding,
    holdings_from_inventory,
)
from tests.planner.fakes import (
    inventory,
    make_config,
)


def test_holdings_from_inventory(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    procs = (
        GpuProcess(1, 2 * GiB, "llmctl-llama.service", idle=True),
        GpuProcess(2, 1 * GiB, "llmctl-llama.service", idle=True),
        GpuProcess(3, 3 * GiB, "llmctl-ollama.service", model="llama3:8b"),
        GpuProcess(4, 1 * GiB, "llmctl-gateway.service"),
        GpuProcess(5, 1 * GiB, None),
    )
    gpu0 = GpuInfo(0, "GPU-0", "x", 24 * GiB, 8 * GiB, 16 * GiB, None, procs)
    gpu1 = GpuInfo(
        1, "GPU-1", "x", 24 * GiB, 1 * GiB, 23 * GiB, None, (GpuProcess(1, GiB, "llmctl-llama.service"),)
    )
    holdings = holdings_from_inventory(config, inventory(gpu0, gpu1), {"llama": "big"})
    assert holdings == [
        Holding("llama", "big", {0: 3 * GiB, 1: GiB}, idle=None),  # one process's idleness unknown
        Holding("ollama", "llama3:8b", {0: 3 * GiB}, idle=None),
    ]
