"""GPU facts, behind a small interface with two implementations: NVML, and a described inventory.

`read_inventory()` asks NVML (the `pynvml` module of nvidia-ml-py); `load_inventory(path)` reads a
JSON file of the same shape as `llmctl gpus --json`, which is how a user plans for another
machine and how tests describe GPUs on a machine that has none. Both return an `Inventory`;
`GpuSource` is the interface a caller that polls (switch waiting for memory to come back) takes.

With no driver or no GPU, NVML cannot initialise: the inventory is then empty, with
`source == "none"` and a note saying why, and callers plan for CPU. NVML sees every GPU whatever
CUDA_VISIBLE_DEVICES says, and reports memory per process: a process is mapped to an llmctl unit
through its cgroup (/proc/PID/cgroup names `.../llmctl-NAME.service`).

JSON shape (`inventory_to_json`; `load_inventory` also accepts it inside the `--json` envelope):
    {"source": "nvml"|"file"|"none", "driver_version": str|null, "note": str|null,
     "gpus": [{"index", "uuid", "name", "total_bytes", "used_bytes", "free_bytes",
               "utilization_percent": int|null,
               "processes": [{"pid", "used_bytes": int|null, "unit": str|null}]}]}
A described process may also carry "model" (what it holds, e.g. one Ollama runner's model) and
"idle" (bool); NVML cannot know either, so they appear only in described inventories.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from llmctl import procs
from llmctl.errors import ExitCode, LlmctlError

InventorySource = Literal["nvml", "file", "none"]


@contextlib.contextmanager
def nvml() -> Iterator[ModuleType | None]:
    """pynvml, initialised; None when the library or the driver is missing."""
    with _nvml_session() as (lib, _why):
        yield lib


@contextlib.contextmanager
def _nvml_session() -> Iterator[tuple[Any, str]]:
    """(pynvml initialised, "") or (None, why NVML is not usable)."""
    try:
        import pynvml  # noqa: PLC0415 - optional at run time, slow-ish to import
    except ImportError:
        yield None, "the nvidia-ml-py package (pynvml) is not installed"
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        # NVMLError_LibraryNotFound (no driver installed), _DriverNotLoaded, _NoPermission...
        yield None, f"NVML: {exc}"
        return
    try:
        yield pynvml, ""
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


# --- the inventory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_bytes: int | None  # None: the driver cannot say (some consumer cards, some containers)
    unit: str | None = None  # the llmctl unit whose cgroup holds the process
    model: str | None = None  # described inventories only: the model this process holds
    idle: bool | None = None  # described inventories only: no request in flight


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML index (PCI bus order; CUDA's default order can differ: match by UUID)
    uuid: str  # "GPU-..."; "" when unknown
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    utilization_percent: int | None
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[GpuInfo, ...]
    driver_version: str | None
    source: InventorySource
    note: str | None = None  # why there are no GPUs, or what was described
    problems: tuple[str, ...] = field(default=())  # metrics NVML would not give (per GPU)

    def gpu(self, ref: int | str) -> GpuInfo | None:
        """The GPU a config `gpus:` entry names: an index, or a GPU-/MIG- UUID."""
        for info in self.gpus:
            if (isinstance(ref, int) and info.index == ref) or (isinstance(ref, str) and info.uuid == ref):
                return info
        return None


class GpuSource(Protocol):
    """Where GPU facts come from; `inventory()` is called again whenever fresh numbers are needed."""

    def inventory(self) -> Inventory: ...


@dataclass(frozen=True)
class NvmlSource:
    def inventory(self) -> Inventory:
        return read_inventory()


@dataclass(frozen=True)
class FileSource:
    path: Path

    def inventory(self) -> Inventory:
        return load_inventory(self.path)


def source_for(path: Path | None) -> GpuSource:
    """The described inventory at `path`, else NVML."""
    return FileSource(path) if path is not None else NvmlSource()


def read_inventory(proc_root: Path = Path("/proc")) -> Inventory:
    """Every GPU NVML sees, with its processes mapped to llmctl units; empty without a driver."""
    with _nvml_session() as (lib, why):
        if lib is None:
            return Inventory((), None, "none", note=f"no NVIDIA GPU can be used ({why})")
        problems: list[str] = []

        def metric(what: str, call: Any, *args: Any) -> Any:
            try:
                return call(*args)
            except lib.NVMLError as exc:
                problems.append(f"{what}: {exc}")
                return None

        driver = metric("driver version", lib.nvmlSystemGetDriverVersion)
        count = metric("device count", lib.nvmlDeviceGetCount) or 0
        gpus = []
        for index in range(count):
            handle = metric(f"GPU {index}", lib.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            gpus.append(_read_gpu(lib, index, handle, metric, proc_root))
        note = None if gpus else "NVML found no GPU"
        return Inventory(tuple(gpus), _text(driver), "nvml", note=note, problems=tuple(problems))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_gpu(lib: Any, index: int, handle: Any, metric: Any, proc_root: Path) -> GpuInfo:
    mem = metric(f"GPU {index} memory", lib.nvmlDeviceGetMemoryInfo, handle)
    util = metric(f"GPU {index} utilisation", lib.nvmlDeviceGetUtilizationRates, handle)
    processes = []
    seen: set[int] = set()
    for proc in _processes(lib, handle):
        if proc.pid in seen:  # a process doing compute and graphics is listed twice
            continue
        seen.add(proc.pid)
        used = getattr(proc, "usedGpuMemory", None)
        processes.append(
            GpuProcess(
                pid=int(proc.pid),
                used_bytes=int(used) if used is not None else None,
                unit=procs.unit_of_pid(int(proc.pid), proc_root),
            )
        )
    total = int(mem.total) if mem is not None else 0
    free = int(mem.free) if mem is not None else 0
    return GpuInfo(
        index=index,
        uuid=_text(metric(f"GPU {index} UUID", lib.nvmlDeviceGetUUID, handle)) or "",
        name=_text(metric(f"GPU {index} name", lib.nvmlDeviceGetName, handle)) or "unknown",
        total_bytes=total,
        used_bytes=int(mem.used) if mem is not None else 0,
        free_bytes=free,
        utilization_percent=int(util.gpu) if util is not None else None,
        processes=tuple(processes),
    )


# --- JSON ------------------------------------------------------------------------------------------


def inventory_to_json(inventory: Inventory) -> dict[str, Any]:
    gpus = []
    for g in inventory.gpus:
        procs = []
        for p in g.processes:
            item: dict[str, Any] = {"pid": p.pid, "used_bytes": p.used_bytes, "unit": p.unit}
            if p.model is not None:
                item["model"] = p.model
            if p.idle is not None:
                item["idle"] = p.idle
            procs.append(item)
        gpus.append(
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "total_bytes": g.total_bytes,
                "used_bytes": g.used_bytes,
                "free_bytes": g.free_bytes,
                "utilization_percent": g.utilization_percent,
                "processes": procs,
            }
        )
    out: dict[str, Any] = {
        "source": inventory.source,
        "driver_version": inventory.driver_version,
        "note": inventory.note,
        "gpus": gpus,
    }
    if inventory.problems:
        out["problems"] = list(inventory.problems)
    return out


class _Bad(Exception):
    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")


def load_inventory(path: Path) -> Inventory:
    """A described inventory (the `llmctl gpus --json` shape, with or without its envelope)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise LlmctlError(
            f"cannot read GPU inventory {path}: {exc.strerror or exc}", exit_code=ExitCode.USAGE
        ) from None
    except ValueError as exc:
        raise LlmctlError(f"GPU inventory {path} is not JSON: {exc}", exit_code=ExitCode.USAGE) from None
    if isinstance(data, dict) and "llmctl_result_version" in data and isinstance(data.get("data"), dict):
        data = data["data"]  # the whole `llmctl gpus --json` output, envelope and all
    try:
        return _parse_inventory(data, path)
    except _Bad as exc:
        raise LlmctlError(
            f"GPU inventory {path}: {exc}",
            hint="The file has the shape of `llmctl gpus --json`: "
            '{"gpus": [{"index": 0, "uuid": "GPU-...", "name": "...", "total_bytes": N, '
            '"used_bytes": N, "free_bytes": N, "processes": [{"pid": N, "used_bytes": N, "unit": "..."}]}]}',
            exit_code=ExitCode.USAGE,
        ) from None


def _int(obj: dict[str, Any], key: str, where: str, *, required: bool) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _Bad(f"{where}.{key}", "missing (a whole number of bytes)")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(f"{where}.{key}", f"must be a non-negative whole number, not {value!r}")
    return value


def _str(obj: dict[str, Any], key: str, where: str, default: str | None) -> str | None:
    value = obj.get(key, default)
    if value is not None and not isinstance(value, str):
        raise _Bad(f"{where}.{key}", f"must be a string, not {value!r}")
    return value


def _parse_inventory(data: Any, path: Path) -> Inventory:
    if not isinstance(data, dict):
        raise _Bad("top level", "must be an object with a `gpus` list")
    gpus_data = data.get("gpus")
    if not isinstance(gpus_data, list):
        raise _Bad("gpus", "missing, or not a list")
    gpus: list[GpuInfo] = []
    for i, item in enumerate(gpus_data):
        where = f"gpus[{i}]"
        if not isinstance(item, dict):
            raise _Bad(where, "must be an object")
        index = _int(item, "index", where, required=False)
        gpus.append(_parse_gpu(item, where, i if index is None else index))
    indices = [g.index for g in gpus]
    if len(set(indices)) != len(indices):
        raise _Bad("gpus", f"two GPUs share an index ({indices})")
    driver = _str(data, "driver_version", "top level", None)
    note = f"described in {path}" + (f" ({data['note']})" if isinstance(data.get("note"), str) else "")
    return Inventory(tuple(gpus), driver, "file", note=note)


def _parse_gpu(item: dict[str, Any], where: str, index: int) -> GpuInfo:
    total = _int(item, "total_bytes", where, required=True)
    assert total is not None
    processes = _parse_processes(item.get("processes", []), f"{where}.processes")
    used = _int(item, "used_bytes", where, required=False)
    free = _int(item, "free_bytes", where, required=False)
    if used is None and free is None:
        used = sum(p.used_bytes or 0 for p in processes)
    if used is None:
        assert free is not None
        used = max(total - free, 0)
    if free is None:
        free = max(total - used, 0)
    if used > total or free > total:
        raise _Bad(where, f"used_bytes ({used}) and free_bytes ({free}) cannot exceed total_bytes ({total})")
    util = item.get("utilization_percent")
    if util is not None and (isinstance(util, bool) or not isinstance(util, int) or not 0 <= util <= 100):
        raise _Bad(f"{where}.utilization_percent", f"must be 0..100 or null, not {util!r}")
    return GpuInfo(
        index=index,
        uuid=_str(item, "uuid", where, "") or "",
        name=_str(item, "name", where, "described GPU") or "described GPU",
        total_bytes=total,
        used_bytes=used,
        free_bytes=free,
        utilization_percent=util,
        processes=tuple(processes),
    )


def _parse_processes(data: Any, where: str) -> list[GpuProcess]:
    if not isinstance(data, list):
        raise _Bad(where, "must be a list")
    out = []
    for j, proc in enumerate(data):
        pwhere = f"{where}[{j}]"
        if not isinstance(proc, dict):
            raise _Bad(pwhere, "must be an object")
        pid = _int(proc, "pid", pwhere, required=True)
        assert pid is not None
        idle = proc.get("idle")
        if idle is not None and not isinstance(idle, bool):
            raise _Bad(f"{pwhere}.idle", f"must be true, false or null, not {idle!r}")
        out.append(
            GpuProcess(
                pid=pid,
                used_bytes=_int(proc, "used_bytes", pwhere, required=False),
                unit=_str(proc, "unit", pwhere, None),
                model=_str(proc, "model", pwhere, None),
                idle=idle,
            )
        )
    return out


def with_units(inventory: Inventory, units_by_pid: dict[int, str]) -> Inventory:
    """The inventory with processes' units filled in from a PID -> unit map (systemd's cgroups)."""
    gpus = tuple(
        replace(
            g,
            processes=tuple(
                replace(p, unit=units_by_pid.get(p.pid, p.unit)) if p.unit is None else p for p in g.processes
            ),
        )
        for g in inventory.gpus
    )
    return replace(inventory, gpus=gpus)
