"""GPU memory through NVML (the `pynvml` module of nvidia-ml-py), behind a small interface.

With no driver or no GPU, NVML cannot initialise: every function here then answers None
("cannot tell"), and callers plan for CPU. NVML sees every GPU whatever CUDA_VISIBLE_DEVICES
says, and reports memory per process, which is how memory is mapped to units (PID -> cgroup).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any


@contextlib.contextmanager
def nvml() -> Iterator[ModuleType | None]:
    """pynvml, initialised; None when the library or the driver is missing."""
    try:
        import pynvml  # noqa: PLC0415 - optional at run time, slow-ish to import
    except ImportError:
        yield None
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        yield None
        return
    try:
        yield pynvml
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _processes(lib: Any, handle: Any) -> list[Any]:
    found: list[Any] = []
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        with contextlib.suppress(lib.NVMLError):
            found.extend(getattr(lib, query)(handle))
    return found


def memory_by_pid() -> dict[int, int] | None:
    """GPU memory in bytes used by each process, over all GPUs; None without NVML."""
    with nvml() as lib:
        if lib is None:
            return None
        usage: dict[int, int] = {}
        for index in range(lib.nvmlDeviceGetCount()):
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            for proc in _processes(lib, handle):
                used = proc.usedGpuMemory or 0  # None when the driver cannot say
                usage[proc.pid] = usage.get(proc.pid, 0) + int(used)
        return usage
