"""The planner on described GPUs: which backend, what it needs, what must make room."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmctl.config.load import load_config
from llmctl.config.schema import Config
from llmctl.errors import LlmctlError
from llmctl.estimate import Estimate, GiB, MiB
from llmctl.gpu import GpuInfo, GpuProcess, Inventory
from llmctl.planner import (
    RESERVE_BYTES,
    SLEEP_RESIDUAL_BYTES,
    Holding,
    Plan,
    choose_backend,
    holdings_from_inventory,
    plan,
)
from llmctl.smoke_model import SmokeShape, write_smoke_model
from tests.conftest import write_config

R = RESERVE_BYTES


def card(index: int, total_gib: float, used: float, uuid: str | None = None) -> GpuInfo:
    total = int(total_gib * GiB)
    used_bytes = int(used * GiB)
    return GpuInfo(
        index=index,
        uuid=uuid or f"GPU-{index:04d}",
        name="Test GPU",
        total_bytes=total,
        used_bytes=used_bytes,
        free_bytes=total - used_bytes,
        utilization_percent=None,
    )


def inventory(*gpus: GpuInfo) -> Inventory:
    return Inventory(tuple(gpus), "550.00", "file")


def gguf(gpu_gib: float, per_gpu_gib: float = 0.5) -> Estimate:
    """A GGUF estimate: `gpu_gib` spread over GPUs, plus `per_gpu_gib` on each GPU used."""
    return Estimate(method="gguf", weights_gpu=int(gpu_gib * GiB), overhead_gpu=int(per_gpu_gib * GiB))


def held(backend: str, model: str | None, gib: float, *, gpu: int = 0, idle: bool | None = None) -> Holding:
    return Holding(backend, model, {gpu: int(gib * GiB)}, idle=idle)


BACKENDS: dict[str, Any] = {
    "llama": {"kind": "llama-server", "command": "/bin/true", "port": 8080, "model": "small"},
    "ollama": {"kind": "ollama", "command": "/bin/true", "port": 11434},
    "vllm": {"kind": "vllm", "command": "/bin/true", "port": 8000, "model": "qwen"},
}
MODELS: dict[str, Any] = {
    "small": {"backend": "llama", "source": "/models/small.gguf", "context": 4096},
    "big": {"backend": "llama", "source": "/models/big.gguf", "context": 8192},
    "llama3": {"backend": "ollama", "source": "llama3:8b"},
    "mistral": {"backend": "ollama", "source": "mistral"},
    "qwen": {"backend": "vllm", "source": "Qwen/Qwen2.5-7B-Instruct", "context": 8192},
}


def make_config(
    tmp_path: Path, backends: dict[str, Any] | None = None, **overrides: dict[str, Any]
) -> Config:
    backends = {name: dict(b) for name, b in (backends or BACKENDS).items()}
    for name, extra in overrides.items():
        backends[name].update(extra)
    models = {k: v for k, v in MODELS.items() if v["backend"] in backends}
    data = {"version": 1, "backends": backends, "models": models, "gateway": {"enabled": False}}
    return load_config(write_config(tmp_path / "llmctl.yaml", data)).config


# One 24 GiB card: Ollama holds llama3 (6 GiB, idle), llama-server holds "small" (5 GiB, busy),
# and the driver and a desktop hold 1 GiB: 12 GiB free.
ONE_CARD = inventory(card(0, 24, 12))
ON_ONE_CARD = [held("ollama", "llama3:8b", 6, idle=True), held("llama", "small", 5, idle=False)]


def test_one_card_fits_beside_what_runs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    result = plan(config, "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(9))
    assert (result.backend, result.device, result.fits, result.fits_beside_old) == (
        "llama",
        "gpu",
        True,
        True,
    )
    assert result.evictions == ()
    assert result.replaces is not None and result.replaces.model == "small"  # switch stops it afterwards
    assert result.gpus[0].needs == int(9.5 * GiB)
    assert result.gpus[0].free_after == 12 * GiB - int(9.5 * GiB)


def test_one_card_replacing_the_old_model_is_enough(tmp_path: Path) -> None:
    result = plan(make_config(tmp_path), "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(15))
    assert result.fits and not result.fits_beside_old
    assert result.evictions == ()  # the 5 GiB of "small" come back when llama restarts with "big"
    assert result.gpus[0].freed == 5 * GiB


def test_one_card_unloads_the_idle_ollama_model_first(tmp_path: Path) -> None:
    result = plan(make_config(tmp_path), "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(20))
    assert result.fits
    assert [(e.action, e.backend, e.model) for e in result.evictions] == [("unload", "ollama", "llama3:8b")]
    assert result.gpus[0].freed == 11 * GiB and result.gpus[0].free_after == 23 * GiB - int(20.5 * GiB)


def test_one_card_new_ollama_model_unloads_the_other_instead_of_stopping_anything(tmp_path: Path) -> None:
    result = plan(make_config(tmp_path), "mistral", ONE_CARD, ON_ONE_CARD, estimate=gguf(14))
    assert result.backend == "ollama" and result.replaces is None  # Ollama models live side by side
    assert [(e.action, e.model) for e in result.evictions] == [("unload", "llama3:8b")]
    assert result.fits


def test_a_model_that_cannot_fit_says_by_how_much(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    result = plan(config, "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(30))
    assert not result.fits
    # Everything allowed goes (llama's own 5 GiB is replaced, Ollama's model unloaded): 23 GiB.
    assert result.short_by == int(30.5 * GiB) + R - 23 * GiB
    assert [e.model for e in result.evictions] == ["llama3:8b"]
    assert any("misses by" in n for n in result.notes)


def test_two_cards_a_backend_bound_to_one_gpu_only_looks_at_that_gpu(tmp_path: Path) -> None:
    two = inventory(card(0, 24, 20, "GPU-aaaa"), card(1, 24, 4, "GPU-bbbb"))
    running = [held("ollama", "llama3:8b", 18, gpu=0, idle=True), held("llama", "small", 3, gpu=1)]
    config = make_config(tmp_path, vllm={"gpus": ["GPU-bbbb"], "gpu_memory_utilization": 0.9})
    result = plan(config, "qwen", two, running)
    claim = -(-24 * GiB * 9 // 10)
    by_index = {g.index: g for g in result.gpus}
    assert by_index[1].target and not by_index[0].target
    assert by_index[1].needs == claim and by_index[0].needs == 0
    # Only what is on GPU 1 can make room there: the idle model on GPU 0 is left alone.
    assert [(e.action, e.unit) for e in result.evictions] == [("stop", "llmctl-llama.service")]
    assert result.fits and by_index[1].free_after == 23 * GiB - claim


def test_two_cards_llama_cpp_spreads_over_both(tmp_path: Path) -> None:
    two = inventory(card(0, 24, 16), card(1, 24, 4))
    result = plan(make_config(tmp_path), "big", two, [], estimate=gguf(20, per_gpu_gib=1))
    assert result.fits and result.fits_beside_old
    needs = {g.index: g.needs for g in result.gpus}
    assert sum(needs.values()) == 22 * GiB  # 20 spread + 1 per GPU
    # Split in proportion to what is free: GPU 1 takes the larger share.
    assert needs[1] > needs[0] > GiB
    assert all(g.free_after >= R for g in result.gpus)


def test_two_cards_ollama_prefers_one_gpu(tmp_path: Path) -> None:
    two = inventory(card(0, 24, 16), card(1, 24, 4))
    result = plan(make_config(tmp_path), "mistral", two, [], estimate=gguf(10))
    assert {g.index: g.needs for g in result.gpus} == {0: 0, 1: int(10.5 * GiB)}


def test_vllm_is_exclusive_everything_unpinned_makes_room(tmp_path: Path) -> None:
    running = [
        held("ollama", "llama3:8b", 4, idle=True),
        held("ollama", "mistral:latest", 3, idle=False),
        held("llama", "small", 5, idle=False),
    ]
    card0 = inventory(card(0, 24, 12.5))  # 0.5 GiB of driver and desktop
    result = plan(make_config(tmp_path), "qwen", card0, running)
    claim = -(-24 * GiB * 9 // 10)
    assert result.estimate.method == "vllm" and result.needs_bytes == claim
    assert [(e.action, e.backend, e.model) for e in result.evictions] == [
        ("unload", "ollama", "llama3:8b"),  # idle first
        ("unload", "ollama", "mistral:latest"),  # then the cheapest to reload: smallest
        ("stop", "llama", "small"),
    ]
    assert result.fits and result.gpus[0].free_after == int(23.5 * GiB) - claim


def test_vllm_never_evicts_what_the_config_pins(tmp_path: Path) -> None:
    running = [held("ollama", "llama3:8b", 4, idle=True), held("llama", "small", 5, idle=True)]
    config = make_config(tmp_path, llama={"pinned": True})
    result = plan(config, "qwen", inventory(card(0, 24, 9.5)), running)
    claim = -(-24 * GiB * 9 // 10)
    assert not result.fits
    assert all(e.backend != "llama" for e in result.evictions)
    assert result.short_by == claim - int(18.5 * GiB)  # vLLM's own rule: free >= claim, no reserve
    assert any("llama is pinned" in n for n in result.notes)


def test_cpu_only_backend_plans_for_cpu(tmp_path: Path) -> None:
    config = make_config(tmp_path, llama={"gpus": []})
    est = Estimate(method="gguf", weights_cpu=3 * GiB, kv_cpu=GiB)
    result = plan(config, "big", ONE_CARD, ON_ONE_CARD, estimate=est)
    assert (result.device, result.fits, result.evictions) == ("cpu", True, ())
    assert any("CPU only (gpus: [])" in n and "4.0 GiB of RAM" in n for n in result.notes)
    assert not any(g.target for g in result.gpus)


def test_no_gpu_at_all_plans_for_cpu_with_the_reason(tmp_path: Path) -> None:
    none = Inventory((), None, "none", note="no NVIDIA GPU can be used (NVML: NVML Shared Library Not Found)")
    result = plan(make_config(tmp_path), "qwen", none, [])
    assert (result.device, result.fits) == ("cpu", True)
    assert any("NVML Shared Library Not Found" in n for n in result.notes)
    assert any("vLLM needs a CUDA GPU" in n for n in result.notes)


def test_sleeping_vllm_frees_all_but_its_residual(tmp_path: Path) -> None:
    config = make_config(tmp_path, vllm={"sleep_mode": True})
    running = [held("vllm", "qwen", 20, idle=True)]
    card0 = inventory(card(0, 24, 20.5))
    asleep = plan(config, "big", card0, running, estimate=gguf(15))
    assert [(e.action, e.frees_bytes) for e in asleep.evictions] == [
        ("sleep", 20 * GiB - SLEEP_RESIDUAL_BYTES)
    ]
    # When the residual is in the way, stopping it is the only way.
    stopped = plan(config, "big", card0, running, estimate=gguf(21.5))
    assert [(e.action, e.frees_bytes) for e in stopped.evictions] == [("stop", 20 * GiB)]
    assert stopped.fits


def test_evictions_are_pruned_to_what_is_needed(tmp_path: Path) -> None:
    backends = {
        **BACKENDS,
        **{f"b{i}": {"kind": "llama-server", "command": "/bin/true", "port": 9000 + i} for i in range(4)},
    }
    config = make_config(tmp_path, backends)
    running = [
        held("b0", None, 10, idle=True),
        held("b1", None, 2, idle=True),
        held("b2", None, 1, idle=False),
        held("b3", None, 8, idle=False),
    ]
    result = plan(config, "big", inventory(card(0, 24, 21)), running, estimate=gguf(11.5))
    # Greedy takes b1 (idle, 2) then b0 (idle, 10); b1 alone was not needed once b0 goes.
    assert [e.backend for e in result.evictions] == ["b0"]
    assert result.fits


def test_already_serving(tmp_path: Path) -> None:
    result = plan(make_config(tmp_path), "small", ONE_CARD, ON_ONE_CARD, estimate=gguf(5))
    assert result.already_serving and result.fits and result.evictions == ()
    loaded = plan(make_config(tmp_path), "llama3", ONE_CARD, ON_ONE_CARD, estimate=gguf(5))
    assert loaded.already_serving  # "llama3:8b" in /api/ps is the model whose source it is


def test_plan_reads_the_gguf_when_no_estimate_is_given(tmp_path: Path) -> None:
    path = write_smoke_model(tmp_path / "big.gguf", SmokeShape(layers=2, embedding=128, heads=4, kv_heads=2))
    models = dict(MODELS)
    models["big"] = {"backend": "llama", "source": str(path), "context": 1024}
    data = {"version": 1, "backends": BACKENDS, "models": models, "gateway": {"enabled": False}}
    config = load_config(write_config(tmp_path / "c.yaml", data)).config
    result = plan(config, "big", ONE_CARD, ON_ONE_CARD)
    assert result.estimate.method == "gguf" and result.estimate.context == 1024
    assert result.fits_beside_old
    assert 512 * MiB < result.needs_bytes < 600 * MiB  # a tiny model: the per-process overhead dominates


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


def test_choose_backend(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert choose_backend(config, "qwen") == "vllm"
    with pytest.raises(LlmctlError, match="unknown model 'smal'; did you mean 'small'"):
        choose_backend(config, "smal")
    with pytest.raises(LlmctlError, match="backend 'ollama' \\(ollama\\) cannot serve big"):
        choose_backend(config, "big", "ollama")
    with pytest.raises(LlmctlError, match="unknown backend 'nope'"):
        choose_backend(config, "big", "nope")


def test_plan_as_dict_is_json_ready(tmp_path: Path) -> None:
    result: Plan = plan(make_config(tmp_path), "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(20))
    data = json.loads(json.dumps(result.as_dict()))
    assert data["fits"] is True and data["short_by_bytes"] == 0
    assert data["evictions"][0] == {
        "action": "unload",
        "backend": "ollama",
        "unit": "llmctl-ollama.service",
        "model": "llama3:8b",
        "frees_bytes": 6 * GiB,
        "frees_by_gpu": {"0": 6 * GiB},
        "idle": True,
    }
    assert data["replaces"] == {"backend": "llama", "model": "small", "frees_bytes": 5 * GiB}
    assert data["estimate"]["gpu_bytes"] == int(20.5 * GiB)
