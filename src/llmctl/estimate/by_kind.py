"""The estimate for each kind of backend (the three ways in the package docstring), and
`estimate_model`, which picks the way and the settings as the config would launch the model.

vLLM and Ollama report or claim a figure rather than have it computed: `estimate_vllm` is
vLLM's own rule, `estimate_ollama` Ollama's /api/ps report; an Ollama model that is not loaded
goes through the GGUF formula on the blob its manifest names (`ollama_blob`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.errors import LlmctlError
from llmctl.estimate.formula import estimate_gguf
from llmctl.estimate.launch import launch_shape
from llmctl.estimate.result import Estimate

if TYPE_CHECKING:
    from llmctl.backends.base import LoadedModel
    from llmctl.config.schema import AnyBackend, Config


def estimate_vllm(total_bytes: int, utilization: float) -> Estimate:
    """One GPU's claim by a vLLM instance: ceil(utilization x total), whatever the model."""
    return Estimate(
        method="vllm",
        claim_gpu=math.ceil(total_bytes * utilization),
        notes=(f"vLLM takes gpu_memory_utilization ({utilization:g}) x total of each GPU it uses",),
    )


def estimate_ollama(reported: LoadedModel | None, gguf: Estimate | None) -> Estimate:
    """Ollama's own figure for a loaded model (/api/ps), else the GGUF estimate."""
    if reported is not None:
        return Estimate(
            method="ollama-ps",
            claim_gpu=reported.size_vram,
            weights_cpu=max(reported.size - reported.size_vram, 0),
            notes=("as Ollama reports it (/api/ps size_vram)",),
        )
    if gguf is None:
        raise ValueError("estimate_ollama needs the /api/ps report or a GGUF estimate")
    return gguf


def ollama_models_dir(backend: AnyBackend) -> Path:
    configured = getattr(backend, "models_dir", None) or backend.environment.get("OLLAMA_MODELS")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def ollama_blob(models_dir: Path, tag: str) -> Path | None:
    """The GGUF blob an Ollama tag points to (its manifest's model layer), if it is pulled."""
    import json  # noqa: PLC0415

    name, _, version = tag.partition(":")
    if "@" in name:
        return None
    parts = name.split("/")
    if len(parts) == 1:
        parts = ["registry.ollama.ai", "library", *parts]
    elif len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    manifest = models_dir.joinpath("manifests", *parts, version or "latest")
    try:
        layers = json.loads(manifest.read_text()).get("layers", [])
    except (OSError, ValueError, AttributeError):
        return None
    for layer in layers:
        if isinstance(layer, dict) and layer.get("mediaType") == "application/vnd.ollama.image.model":
            digest = str(layer.get("digest", ""))
            blob = models_dir / "blobs" / digest.replace(":", "-")
            return blob if blob.is_file() else None
    return None


def estimate_model(
    config: Config,
    model_id: str,
    backend_name: str,
    *,
    gpu_totals: Sequence[int] = (),
    ollama_loaded: Sequence[LoadedModel] = (),
    cpu_only: bool | None = None,
) -> Estimate:
    """The estimate for serving `model_id` on `backend_name`, as the config would launch it.

    Reads the model's GGUF header (the only I/O). vLLM's claim needs the GPUs' totals; Ollama's
    report is used when the model is among `ollama_loaded`. `cpu_only` overrides the backend's
    `gpus: []` (True: plan for CPU because there is no GPU).
    """
    from llmctl.config.checks import classify_source  # noqa: PLC0415
    from llmctl.config.schema import Kind, VllmBackend  # noqa: PLC0415

    backend = config.backends[backend_name]
    model = config.models[model_id]
    assert model.source is not None
    if isinstance(backend, VllmBackend):
        if backend.gpus == [] or not gpu_totals or cpu_only:
            return Estimate(method="vllm", notes=("vLLM without a GPU: its claim applies to GPUs only",))
        count = backend.tensor_parallel_size or 1
        claims = [
            estimate_vllm(total, backend.gpu_memory_utilization).claim_gpu for total in gpu_totals[:count]
        ]
        return Estimate(
            method="vllm",
            claim_gpu=sum(claims),
            context=model.context,
            notes=(
                f"vLLM takes gpu_memory_utilization ({backend.gpu_memory_utilization:g}) x total of each GPU",
            ),
        )
    shape = launch_shape(backend, model)
    if cpu_only is not None:
        shape = replace(shape, cpu_only=cpu_only)
    if backend.kind == Kind.OLLAMA:
        from llmctl.backends.ollama import canonical  # noqa: PLC0415

        for loaded in ollama_loaded:
            if canonical(loaded.name) in (canonical(model.source), canonical(model_id)):
                return estimate_ollama(loaded, None)
        kind = classify_source(model.source)
        path = (
            Path(model.source).expanduser()
            if kind == "gguf"
            else ollama_blob(ollama_models_dir(backend), model.source)
        )
        if path is None:
            raise LlmctlError(
                f"cannot estimate {model_id}: Ollama model {model.source!r} is not pulled"
                f" in {ollama_models_dir(backend)}",
                hint=f"Pull it first (ollama pull {model.source}), or load it and plan again.",
            )
    else:
        path = Path(model.source).expanduser()
    return estimate_gguf(
        path,
        context=shape.context,
        gpu_layers=shape.gpu_layers,
        kv_cache_type=shape.kv_cache_type,
        kv_cache_type_v=shape.kv_cache_type_v,
        parallel=shape.parallel,
        kv_unified=shape.kv_unified,
        flash_attention=shape.flash_attention,
        ubatch=shape.ubatch,
        cpu_only=shape.cpu_only,
        swa_full=shape.swa_full,
        outputs=shape.outputs,
    )
