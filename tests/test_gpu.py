"""NVML access: None without a driver, per-PID memory summed over GPUs with one."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from llmctl import gpu


def test_no_driver_means_cannot_tell() -> None:
    # This machine has no NVIDIA driver: nvmlInit raises NVMLError_LibraryNotFound.
    pytest.importorskip("pynvml")
    assert gpu.memory_by_pid() is None


@dataclass
class Proc:
    pid: int
    usedGpuMemory: int | None


def test_memory_by_pid_sums_over_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    devices = {0: [Proc(10, 2_000), Proc(11, None)], 1: [Proc(10, 500)]}
    fake.NVMLError = NVMLError  # type: ignore[attr-defined]
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetComputeRunningProcesses = lambda h: devices[h]  # type: ignore[attr-defined]

    def graphics(_handle: int) -> list[Proc]:
        raise NVMLError("not supported")

    fake.nvmlDeviceGetGraphicsRunningProcesses = graphics  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu.memory_by_pid() == {10: 2_500, 11: 0}
