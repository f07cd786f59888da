"""llmctl doctor's GPU check: what the config names against what NVML sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmctl import doctor
from llmctl.config.load import load_config
from llmctl.doctor import GpuFacts
from tests.conftest import minimal_config, write_config
from tests.doctor.fakes import GIB


def gpu_config(tmp_path: Path, gpus: list[Any] | None) -> Any:
    overrides = minimal_config()
    if gpus is not None:
        overrides["backends"]["llama"]["gpus"] = gpus
    return load_config(write_config(tmp_path / f"g{gpus}.yaml", overrides)).config


def test_gpus(tmp_path: Path) -> None:
    none = GpuFacts(False, "NVML Shared Library Not Found")
    one = GpuFacts(True, "", "550.1", ((0, "GPU-aaaa", "RTX 4090", 24 * GIB),))
    assert doctor.check_gpus(gpu_config(tmp_path, []), none).status == "ok"
    assert doctor.check_gpus(None, none).status == "ok"
    check = doctor.check_gpus(gpu_config(tmp_path, None), none)
    assert check.status == "warn" and "llama will run on the CPU" in check.reason
    check = doctor.check_gpus(gpu_config(tmp_path, [0]), none)
    assert check.status == "fail" and "llama name GPUs" in check.reason
    check = doctor.check_gpus(gpu_config(tmp_path, [0]), one)
    assert check.status == "ok" and check.reason == "1 GPU(s), driver 550.1"
    assert check.details == ("GPU 0: RTX 4090, 24.0 GiB, GPU-aaaa",)
    assert doctor.check_gpus(gpu_config(tmp_path, ["GPU-aaaa"]), one).status == "ok"
    check = doctor.check_gpus(gpu_config(tmp_path, [1, "GPU-bbbb"]), one)
    assert check.status == "fail" and "llama: GPU 1; llama: GPU GPU-bbbb" in check.reason
    empty = GpuFacts(True, "", "550.1", ())
    assert doctor.check_gpus(gpu_config(tmp_path, [0]), empty).status == "fail"
    assert doctor.check_gpus(gpu_config(tmp_path, None), empty).status == "warn"


def test_gpu_facts_degrade_without_nvml() -> None:
    facts = doctor.gpu_facts()  # no GPU on the test machines: NVML cannot start
    if facts.available:
        pytest.skip("this machine has a usable NVIDIA GPU")
    assert facts.why and not facts.why.startswith("no NVIDIA GPU can be used (")
