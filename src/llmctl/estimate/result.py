"""`Estimate`: what every estimate returns, whichever way it was made, split by where llama.cpp
puts the memory (weights, KV, compute, overhead) so the planner can spread the parts that split
over GPUs and repeat the parts every GPU holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MiB = 1024**2
GiB = 1024**3

Method = Literal["gguf", "vllm", "ollama-ps"]


@dataclass(frozen=True)
class Estimate:
    """Memory one model instance needs, split by where llama.cpp puts it (bytes)."""

    method: Method
    weights_gpu: int = 0
    weights_cpu: int = 0
    kv_gpu: int = 0
    kv_cpu: int = 0
    compute_gpu: int = 0
    compute_cpu: int = 0
    # Host memory only, GPU or not: the weights the CPU backend repacks for its matrix kernels (a
    # copy beside the mapped file, for the layers kept on the CPU), and the output buffer (logits;
    # pinned host memory on CUDA, "CUDA_Host output buffer").
    repack_cpu: int = 0
    output_cpu: int = 0
    overhead_gpu: int = 0  # per GPU used
    claim_gpu: int = 0  # vLLM's util x total, or Ollama's reported size_vram: no breakdown
    context: int | None = None
    kv_cache_type: str | None = None
    gpu_layers: int | None = None  # layers offloaded (after clamping to L + 1)
    notes: tuple[str, ...] = field(default=())

    @property
    def gpu_bytes(self) -> int:
        """Everything on the GPU(s), with the per-process overhead counted once."""
        return self.weights_gpu + self.kv_gpu + self.compute_gpu + self.overhead_gpu + self.claim_gpu

    @property
    def spread_bytes(self) -> int:
        """What llama.cpp splits over several GPUs (weights and KV, by layer)."""
        return self.weights_gpu + self.kv_gpu + self.claim_gpu

    @property
    def per_gpu_bytes(self) -> int:
        """What every GPU the process uses holds on top of its share (context, compute buffer)."""
        return self.compute_gpu + self.overhead_gpu

    @property
    def cpu_bytes(self) -> int:
        return self.weights_cpu + self.repack_cpu + self.kv_cpu + self.compute_cpu + self.output_cpu

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "gpu_bytes": self.gpu_bytes,
            "cpu_bytes": self.cpu_bytes,
            "weights_gpu_bytes": self.weights_gpu,
            "weights_cpu_bytes": self.weights_cpu,
            "kv_gpu_bytes": self.kv_gpu,
            "kv_cpu_bytes": self.kv_cpu,
            "compute_gpu_bytes": self.compute_gpu,
            "compute_cpu_bytes": self.compute_cpu,
            "repack_cpu_bytes": self.repack_cpu,
            "output_cpu_bytes": self.output_cpu,
            "overhead_gpu_bytes": self.overhead_gpu,
            "claim_gpu_bytes": self.claim_gpu,
            "context": self.context,
            "kv_cache_type": self.kv_cache_type,
            "gpu_layers": self.gpu_layers,
            "notes": list(self.notes),
        }
