"""Waiting until a stopped backend's GPU memory is really back, before the next model starts.

A unit that systemd reports stopped has not necessarily released its VRAM: the driver frees it
asynchronously (Ollama measured 0.5-1.5 s), and an orphaned or zombie process can hold it
indefinitely (ollama #5642; vLLM workers that survive a kill). Starting the next model then
fails with an out-of-memory error, or vLLM refuses to start ("Free memory on device ... is less
than desired GPU memory utilization"). So after every stop the switch polls the GPUs (every
250 ms, up to 10 s, as ../gpu-health.md section 3.2 recommends) until

1. none of the stopped processes is listed on any GPU any more, and
2. every GPU the new model will use has the memory it needs free;

and otherwise refuses to start, naming what still holds the memory (PID, unit, whether the
process is alive, a zombie, or gone while the driver still accounts memory to it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.errors import LlmctlError
from llmctl.procs import process_state

if TYPE_CHECKING:
    from llmctl.gpu import GpuProcess, GpuSource, Inventory

POLL_INTERVAL = 0.25
TIMEOUT = 10.0
RUNBOOK = "gpu-memory-not-freed"


@dataclass(frozen=True)
class MemoryBack:
    waited: float
    polls: int


def wait_memory_back(
    source: GpuSource,
    stopped_pids: Collection[int],
    needs: Mapping[int, int],
    *,
    what: str,
    timeout: float = TIMEOUT,
    interval: float = POLL_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    proc_root: Path = Path("/proc"),
) -> MemoryBack:
    """Poll `source` until no `stopped_pids` hold GPU memory and each GPU index in `needs` has at
    least that many bytes free. `what` names the stop in messages ("after stopping native")."""
    start = clock()
    polls = 0
    while True:
        polls += 1
        inventory = source.inventory()
        lingering = _lingering(inventory, stopped_pids)
        short = _short(inventory, needs)
        if not lingering and not short:
            return MemoryBack(clock() - start, polls)
        if clock() - start >= timeout:
            raise _not_back(inventory, lingering, short, needs, what, clock() - start, proc_root)
        sleep(interval)


def _lingering(inventory: Inventory, pids: Collection[int]) -> list[tuple[int, GpuProcess]]:
    wanted = set(pids)
    return [(gpu.index, p) for gpu in inventory.gpus for p in gpu.processes if p.pid in wanted]


def _short(inventory: Inventory, needs: Mapping[int, int]) -> dict[int, int]:
    """GPU index -> bytes missing, for the GPUs that do not have what the new model needs."""
    out = {}
    for index, need in needs.items():
        gpu = inventory.gpu(index)
        free = gpu.free_bytes if gpu is not None else 0
        if free < need:
            out[index] = need - free
    return out


def _describe(pid: int, proc: GpuProcess, proc_root: Path) -> str:
    from llmctl.planner import human_bytes  # noqa: PLC0415

    state = process_state(pid, proc_root)
    try:
        name = (proc_root / str(pid) / "comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        name = ""
    parts = [f"pid {pid}" + (f" ({name})" if name else "")]
    parts.append(proc.unit or "in no llmctl unit")
    if proc.used_bytes is not None:
        parts.append(human_bytes(proc.used_bytes))
    if state == "gone":
        parts.append("no such process: the driver still accounts memory to it")
    elif state == "zombie":
        parts.append("zombie: its parent has not reaped it")
    return ", ".join(parts)


def _not_back(
    inventory: Inventory,
    lingering: list[tuple[int, GpuProcess]],
    short: Mapping[int, int],
    needs: Mapping[int, int],
    what: str,
    waited: float,
    proc_root: Path,
) -> LlmctlError:
    from llmctl.planner import human_bytes  # noqa: PLC0415

    details = [f"GPU {index}: {_describe(p.pid, p, proc_root)}" for index, p in lingering]
    for index, missing in sorted(short.items()):
        gpu = inventory.gpu(index)
        free = gpu.free_bytes if gpu is not None else 0
        details.append(
            f"GPU {index}: {human_bytes(free)} free, the new model needs {human_bytes(needs[index])}"
            f" (short by {human_bytes(missing)})"
        )
        holders = [p for p in (gpu.processes if gpu is not None else ()) if (index, p) not in lingering]
        details.extend(f"  held by {_describe(p.pid, p, proc_root)}" for p in holders)
    if lingering:
        message = f"GPU memory is not back {what} after {waited:.0f} s: stopped processes still hold it"
    else:
        message = f"not enough GPU memory is free {what} after {waited:.0f} s"
    return LlmctlError(
        message + "; the new model was not started",
        details=details,
        hint=f"llmctl runbook {RUNBOOK} (a process that is gone but still listed needs a GPU reset"
        " or a reboot)",
    )
