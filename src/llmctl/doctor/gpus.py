"""Doctor check on the GPUs: the NVIDIA driver answers and every GPU the config names is visible."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmctl.doctor.report import GIB, Check, Status

if TYPE_CHECKING:
    from llmctl.config.schema import Config


@dataclass(frozen=True)
class GpuFacts:
    available: bool  # NVML initialised
    why: str  # why not, when not
    driver: str | None = None
    gpus: tuple[tuple[int, str, str, int], ...] = ()  # (index, uuid, name, total bytes)


def gpu_facts() -> GpuFacts:
    """What NVML sees. Uses llmctl.gpu.read_inventory where it exists, else NVML directly."""
    from llmctl import gpu  # noqa: PLC0415

    read_inventory = getattr(gpu, "read_inventory", None)
    if read_inventory is not None:
        inventory = read_inventory()
        if inventory.source != "nvml":
            note = inventory.note or "NVML is not usable"
            # read_inventory says "no NVIDIA GPU can be used (WHY)": keep the WHY.
            match = re.fullmatch(r"no NVIDIA GPU can be used \((.*)\)", note)
            return GpuFacts(False, match.group(1) if match else note)
        return GpuFacts(
            True,
            "",
            inventory.driver_version,
            tuple((g.index, g.uuid, g.name, g.total_bytes) for g in inventory.gpus),
        )
    with gpu.nvml() as lib:
        if lib is None:
            return GpuFacts(False, "NVML cannot initialise (no driver, or nvidia-ml-py missing)")
        gpus = []
        try:
            driver = _text(lib.nvmlSystemGetDriverVersion())
            for index in range(lib.nvmlDeviceGetCount()):
                handle = lib.nvmlDeviceGetHandleByIndex(index)
                memory = lib.nvmlDeviceGetMemoryInfo(handle)
                name = _text(lib.nvmlDeviceGetName(handle))
                gpus.append((index, _text(lib.nvmlDeviceGetUUID(handle)), name, int(memory.total)))
        except lib.NVMLError as exc:
            return GpuFacts(False, f"NVML: {exc}")
        return GpuFacts(True, "", driver, tuple(gpus))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_gpus(config: Config | None, facts: GpuFacts) -> Check:
    """The driver answers and every GPU the config names is visible."""
    wanted: dict[str, list[int | str] | None] = {}
    if config is not None:
        wanted = {name: (list(b.gpus) if b.gpus is not None else None) for name, b in config.backends.items()}
    pinned = {name: refs for name, refs in wanted.items() if refs}
    any_gpu = {name for name, refs in wanted.items() if refs is None}
    if not facts.available:
        if pinned:
            return Check(
                "gpus",
                "fail",
                f"no GPU is usable ({facts.why}), but {', '.join(sorted(pinned))} name GPUs in `gpus:`",
                fix="install or load the NVIDIA driver (nvidia-smi must work); llmctl runbook gpu-missing",
            )
        if any_gpu:
            return Check(
                "gpus",
                "warn",
                f"no GPU is usable ({facts.why}); {', '.join(sorted(any_gpu))} will run on the CPU",
                fix="set `gpus: []` for CPU-only backends, or install the NVIDIA driver",
            )
        return Check("gpus", "ok", f"no GPU needed (every backend has gpus: []); {facts.why}")
    details = tuple(f"GPU {i}: {name}, {total / GIB:.1f} GiB, {uuid}" for i, uuid, name, total in facts.gpus)
    driver = f"driver {facts.driver}" if facts.driver else "driver version unknown"
    if not facts.gpus:
        status: Status = "fail" if pinned else "warn" if any_gpu else "ok"
        return Check(
            "gpus",
            status,
            f"NVML answers ({driver}) but sees no GPU",
            fix="nvidia-smi -L; llmctl runbook gpu-missing",
        )
    indices = {i for i, _, _, _ in facts.gpus}
    uuids = {uuid for _, uuid, _, _ in facts.gpus}
    unknown = [
        f"{name}: GPU {ref}"
        for name, refs in sorted(pinned.items())
        for ref in refs or []
        if (isinstance(ref, int) and ref not in indices) or (isinstance(ref, str) and ref not in uuids)
    ]
    if unknown:
        return Check(
            "gpus",
            "fail",
            f"the config names GPUs NVML does not see: {'; '.join(unknown)}",
            fix="use the indices or UUIDs `nvidia-smi -L` prints in `gpus:`",
            details=details,
        )
    return Check("gpus", "ok", f"{len(facts.gpus)} GPU(s), {driver}", details=details)
