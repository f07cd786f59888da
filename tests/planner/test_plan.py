"""plan() on described GPUs: what it needs, where, and what it says when the model runs on CPU."""

from __future__ import annotations

from pathlib import Path

from llmctl.config.load import load_config
from llmctl.estimate import Estimate, GiB, MiB
from llmctl.gpu import Inventory
from llmctl.planner import (
    plan,
)
from llmctl.smoke_model import SmokeShape, write_smoke_model
from tests.conftest import write_config
from tests.planner.fakes import (
    BACKENDS,
    MODELS,
    ON_ONE_CARD,
    ONE_CARD,
    gguf,
    make_config,
)


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
