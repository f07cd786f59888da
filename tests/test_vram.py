"""wait_memory_back: polls until the stopped processes are off the GPUs and the memory is free."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl.errors import LlmctlError
from llmctl.gpu import GpuInfo, GpuProcess, Inventory
from llmctl.procs import process_state
from llmctl.vram import wait_memory_back
from tests.conftest import FakeClock

GiB = 1024**3


def card(free_gib: float, *procs: GpuProcess, index: int = 0) -> GpuInfo:
    total = 24 * GiB
    free = int(free_gib * GiB)
    return GpuInfo(index, f"GPU-{index}", "RTX 4090", total, total - free, free, 0, procs)


class Scripted:
    """A GPU source whose successive readings are given; the last one repeats."""

    def __init__(self, *readings: tuple[GpuInfo, ...]) -> None:
        self.readings = list(readings)
        self.reads = 0

    def inventory(self) -> Inventory:
        reading = self.readings[min(self.reads, len(self.readings) - 1)]
        self.reads += 1
        return Inventory(reading, "550.54", "nvml")


OLD = GpuProcess(pid=4242, used_bytes=10 * GiB, unit="llmctl-native.service")


def test_returns_once_the_old_process_is_gone_and_the_memory_free() -> None:
    clock = FakeClock()
    source = Scripted(
        (card(4, OLD),),  # stopped, but the driver still lists it
        (card(4),),  # listed no more, memory not yet accounted back
        (card(14),),
    )
    result = wait_memory_back(
        source, [4242], {0: 12 * GiB}, what="after stopping native", clock=clock, sleep=clock.sleep
    )
    assert result.polls == 3
    assert source.reads == 3
    assert result.waited == pytest.approx(0.5)


def test_no_wait_when_the_memory_is_already_back() -> None:
    clock = FakeClock()
    result = wait_memory_back(
        Scripted((card(20),)), [4242], {0: 12 * GiB}, what="x", clock=clock, sleep=clock.sleep
    )
    assert (result.polls, result.waited) == (1, 0.0)


def test_a_stopped_process_still_listed_is_named_after_the_timeout(tmp_path: Path) -> None:
    clock = FakeClock()
    with pytest.raises(LlmctlError) as caught:
        wait_memory_back(
            Scripted((card(20, OLD),)), [4242], {0: 2 * GiB}, what="after stopping native",
            clock=clock, sleep=clock.sleep, proc_root=tmp_path,
        )  # fmt: skip
    err = caught.value
    assert err.message.startswith("GPU memory is not back after stopping native after 10 s")
    assert "the new model was not started" in err.message
    assert err.details == [
        "GPU 0: pid 4242, llmctl-native.service, 10.0 GiB, no such process: the driver still accounts memory to it"
    ]
    assert err.hint is not None and "gpu-memory-not-freed" in err.hint
    assert clock.now == pytest.approx(10.0)


def test_memory_held_by_someone_else_names_the_holders(tmp_path: Path) -> None:
    (tmp_path / "777").mkdir()
    (tmp_path / "777" / "stat").write_text("777 (python3) Z 1 777 777 0 -1\n")
    (tmp_path / "777" / "comm").write_text("python3\n")
    stranger = GpuProcess(pid=777, used_bytes=18 * GiB, unit=None)
    clock = FakeClock()
    with pytest.raises(LlmctlError) as caught:
        wait_memory_back(
            Scripted((card(6, stranger),)), [4242], {0: 12 * GiB}, what="after stopping native",
            clock=clock, sleep=clock.sleep, proc_root=tmp_path,
        )  # fmt: skip
    err = caught.value
    assert err.message.startswith("not enough GPU memory is free after stopping native")
    assert err.details == [
        "GPU 0: 6.0 GiB free, the new model needs 12.0 GiB (short by 6.0 GiB)",
        "  held by pid 777 (python3), in no llmctl unit, 18.0 GiB, zombie: its parent has not reaped it",
    ]


def test_only_the_gpus_the_model_uses_are_checked() -> None:
    clock = FakeClock()
    source = Scripted((card(20, index=0), card(1, index=1)))
    assert wait_memory_back(source, [1], {0: 12 * GiB}, what="x", clock=clock, sleep=clock.sleep).polls == 1


def test_a_gpu_that_vanished_counts_as_no_free_memory() -> None:
    clock = FakeClock()
    with pytest.raises(LlmctlError, match="not enough GPU memory"):
        wait_memory_back(
            Scripted((card(20, index=0),)), [], {1: GiB}, what="x", timeout=1, clock=clock, sleep=clock.sleep
        )


def test_process_state_reads_proc() -> None:
    assert process_state(os.getpid()) == "running"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_state(child.pid) == "gone"
