"""NVML access and described inventories: GPUs, their memory, and processes mapped to units."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmctl import gpu, procs
from llmctl.errors import ExitCode, LlmctlError


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


# --- the inventory ---------------------------------------------------------------------------------


@dataclass
class Mem:
    total: int
    free: int
    used: int


@dataclass
class Util:
    gpu: int
    memory: int


def fake_nvml(monkeypatch: pytest.MonkeyPatch, devices: dict[int, dict[str, Any]]) -> None:
    """A pynvml whose calls answer from `devices`; a value that is an exception is raised."""
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    def answer(index: int, key: str) -> Any:
        value = devices[index][key]
        if value is NotSupported:
            raise NVMLError_NotSupported("Not Supported")
        return value

    fake.NVMLError = NVMLError  # type: ignore[attr-defined]
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    fake.nvmlSystemGetDriverVersion = lambda: "550.54.15"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda h: answer(h, "name")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: answer(h, "uuid")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda h: answer(h, "mem")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUtilizationRates = lambda h: answer(h, "util")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetComputeRunningProcesses = lambda h: answer(h, "procs")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetGraphicsRunningProcesses = lambda h: answer(h, "graphics")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)


class NotSupported:
    pass


def fake_proc(root: Path, pid: int, cgroup: str) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")


def test_read_inventory_maps_processes_to_units_and_tolerates_missing_metrics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    GiB = 1024**3
    fake_nvml(
        monkeypatch,
        {
            0: {
                "name": "NVIDIA GeForce RTX 4090", "uuid": "GPU-aaaa",
                "mem": Mem(24 * GiB, 10 * GiB, 14 * GiB), "util": Util(37, 12),
                "procs": [Proc(100, 6 * GiB), Proc(200, 7 * GiB)], "graphics": [Proc(300, GiB), Proc(100, 6 * GiB)],
            },
            1: {
                "name": b"Tesla T4", "uuid": "GPU-bbbb", "mem": Mem(16 * GiB, 16 * GiB, 0),
                "util": NotSupported, "procs": [], "graphics": NotSupported,
            },
        },
    )  # fmt: skip
    proc_root = tmp_path / "proc"
    user = "/user.slice/user-1000.slice/user@1000.service/app.slice"
    fake_proc(proc_root, 100, f"{user}/llmctl-ollama.service")
    fake_proc(proc_root, 200, f"{user}/llmctl-llama.service/sub")
    fake_proc(proc_root, 300, "/user.slice/user-1000.slice/session-2.scope")
    inv = gpu.read_inventory(proc_root)
    assert (inv.source, inv.driver_version, inv.note) == ("nvml", "550.54.15", None)
    first, second = inv.gpus
    assert (first.name, first.uuid, first.total_bytes, first.free_bytes, first.used_bytes) == (
        "NVIDIA GeForce RTX 4090", "GPU-aaaa", 24 * GiB, 10 * GiB, 14 * GiB,
    )  # fmt: skip
    assert first.utilization_percent == 37
    assert [(p.pid, p.used_bytes, p.unit) for p in first.processes] == [
        (100, 6 * GiB, "llmctl-ollama.service"),  # listed once although compute and graphics
        (200, 7 * GiB, "llmctl-llama.service"),
        (300, GiB, None),
    ]
    assert second.name == "Tesla T4" and second.utilization_percent is None
    assert inv.problems == ("GPU 1 utilisation: Not Supported",)


def test_read_inventory_without_driver_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pynvml")
    inv = gpu.read_inventory()  # this machine has no NVIDIA driver
    assert (inv.gpus, inv.source, inv.driver_version) == ((), "none", None)
    assert inv.note is not None and "NVML" in inv.note


def test_nvml_finding_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml(monkeypatch, {})
    inv = gpu.read_inventory()
    assert (inv.source, inv.gpus, inv.note) == ("nvml", (), "NVML found no GPU")


def test_unit_of_pid(tmp_path: Path) -> None:
    fake_proc(tmp_path, 1, "/user.slice/user@0.service/app.slice/llmctl-big-model.service")
    fake_proc(tmp_path, 2, "/system.slice/llmctl-x.service.d/other")
    fake_proc(tmp_path, 3, "/user.slice/user@0.service/app.slice/llmctl-a.service/llmctl-b.service")
    assert procs.unit_of_pid(1, tmp_path) == "llmctl-big-model.service"
    assert procs.unit_of_pid(2, tmp_path) is None
    assert procs.unit_of_pid(3, tmp_path) == "llmctl-b.service"
    assert procs.unit_of_pid(99, tmp_path) is None


def described() -> dict[str, Any]:
    return {
        "driver_version": "550",
        "gpus": [
            {
                "index": 0, "uuid": "GPU-aaaa", "name": "RTX 4090", "total_bytes": 1000, "used_bytes": 600,
                "free_bytes": 400, "utilization_percent": 5,
                "processes": [{"pid": 7, "used_bytes": 500, "unit": "llmctl-a.service", "model": "m", "idle": True}],
            },
            {"index": 1, "total_bytes": 2000, "processes": [{"pid": 8, "used_bytes": 300}]},
        ],
    }  # fmt: skip


def test_load_inventory_round_trips_the_json_output(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(described()))
    inv = gpu.load_inventory(path)
    assert inv.source == "file" and inv.driver_version == "550"
    assert inv.gpus[1].used_bytes == 300 and inv.gpus[1].free_bytes == 1700  # derived from processes
    assert inv.gpus[0].processes[0] == gpu.GpuProcess(7, 500, "llmctl-a.service", "m", True)
    again = tmp_path / "again.json"
    # The whole `llmctl gpus --json` output (envelope included) is accepted as it is.
    again.write_text(json.dumps({"llmctl_result_version": 1, "ok": True, "data": gpu.inventory_to_json(inv)}))
    assert gpu.load_inventory(again).gpus == inv.gpus
    assert inv.gpu("GPU-aaaa") is inv.gpus[0] and inv.gpu(1) is inv.gpus[1] and inv.gpu(5) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["gpus"][1].pop("total_bytes"), r"gpus\[1\]\.total_bytes: missing"),
        (
            lambda d: d["gpus"][0].update(total_bytes="24GiB"),
            r"gpus\[0\]\.total_bytes: must be a non-negative",
        ),
        (lambda d: d["gpus"][0].update(used_bytes=5000), r"gpus\[0\]: used_bytes \(5000\).*cannot exceed"),
        (lambda d: d["gpus"][0]["processes"][0].update(pid=None), r"gpus\[0\]\.processes\[0\]\.pid: missing"),
        (lambda d: d["gpus"][0]["processes"][0].update(idle="yes"), r"processes\[0\]\.idle: must be true"),
        (lambda d: d["gpus"][1].update(index=0), "two GPUs share an index"),
        (lambda d: d.pop("gpus"), "gpus: missing, or not a list"),
        (lambda d: d["gpus"][0].update(utilization_percent=150), r"utilization_percent: must be 0\.\.100"),
    ],
)
def test_load_inventory_names_the_bad_field(tmp_path: Path, change: Any, message: str) -> None:
    data = described()
    change(data)
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LlmctlError, match=message) as info:
        gpu.load_inventory(path)
    assert info.value.exit_code == ExitCode.USAGE


def test_load_inventory_unreadable(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LlmctlError, match="is not JSON"):
        gpu.load_inventory(tmp_path / "bad.json")
    with pytest.raises(LlmctlError, match="cannot read GPU inventory"):
        gpu.load_inventory(tmp_path / "missing.json")


def test_sources_and_with_units(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(described()))
    assert gpu.source_for(path).inventory() == gpu.load_inventory(path)
    assert isinstance(gpu.source_for(None), gpu.NvmlSource)
    inv = gpu.with_units(gpu.load_inventory(path), {8: "llmctl-b.service", 7: "llmctl-other.service"})
    assert [p.unit for g in inv.gpus for p in g.processes] == ["llmctl-a.service", "llmctl-b.service"]
