"""Described GPUs, estimates and holdings for the planner tests, and the config they plan for:
a llama-server, an Ollama and a vLLM backend with a model each (Ollama two)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl.config.load import load_config
from llmctl.config.schema import Config
from llmctl.estimate import Estimate, GiB
from llmctl.gpu import GpuInfo, Inventory
from llmctl.planner import RESERVE_BYTES, Holding
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
