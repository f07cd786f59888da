"""Whether an estimate fits the GPUs' available memory, and how much it needs on each.

Fit is judged per GPU against what is available minus a reserve (RESERVE_BYTES; NVML's free
figure lags a freshly stopped process, and fragmentation wastes some). llama.cpp spreads the
weights and KV of one process over every GPU it sees, proportionally to what is free, and puts a
CUDA context and a compute buffer on each; Ollama uses one GPU when the model fits on one; vLLM
needs `ceil(gpu_memory_utilization x total)` free on each of its GPUs (no reserve: that is vLLM's
own rule), whatever the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from llmctl.estimate import Estimate, MiB
from llmctl.gpu import GpuInfo

if TYPE_CHECKING:
    from llmctl.config.schema import AnyBackend

RESERVE_BYTES = 256 * MiB

Fit = tuple[bool, dict[int, int], int]  # (fits, bytes needed per GPU index, bytes short)


def _fit_vllm(backend: AnyBackend, gpus: Sequence[GpuInfo], avail: Mapping[int, int]) -> Fit:
    """vLLM: ceil(utilization x total) free on each of its first tensor_parallel_size GPUs."""
    from llmctl.config.schema import VllmBackend  # noqa: PLC0415

    assert isinstance(backend, VllmBackend)
    used = gpus[: backend.tensor_parallel_size or 1]
    needs = {g.index: math.ceil(g.total_bytes * backend.gpu_memory_utilization) for g in used}
    short = sum(max(0, needs[g.index] - avail[g.index]) for g in used)
    return short == 0, needs, short


def _fit_spread(estimate: Estimate, gpus: Sequence[GpuInfo], avail: Mapping[int, int], reserve: int) -> Fit:
    """llama.cpp: weights and KV spread by free memory, context and compute buffer on each GPU."""
    spread, fixed = estimate.spread_bytes, estimate.per_gpu_bytes
    room = {g.index: avail[g.index] - reserve - fixed for g in gpus}
    usable = sum(max(r, 0) for r in room.values())
    short = max(0, spread - usable) + sum(max(0, -r) for r in room.values())
    needs: dict[int, int] = {}
    if usable > 0:
        left = spread
        indices = [g.index for g in gpus]
        for i, index in enumerate(indices):
            share = left if i == len(indices) - 1 else spread * max(room[index], 0) // usable
            needs[index] = fixed + share
            left -= share
    else:
        needs = {g.index: fixed + spread // max(len(gpus), 1) for g in gpus}
    return short == 0, needs, short


def _fit_single_first(
    estimate: Estimate, gpus: Sequence[GpuInfo], avail: Mapping[int, int], reserve: int
) -> Fit:
    """Ollama: the one GPU with most room when the model fits there, else spread like llama.cpp."""
    whole = estimate.gpu_bytes
    if gpus:
        best = max(gpus, key=lambda g: (avail[g.index], -g.index))
        if avail[best.index] - reserve >= whole:
            return True, {best.index: whole}, 0
        single_short = whole - (avail[best.index] - reserve)
        ok, needs, short = _fit_spread(estimate, gpus, avail, reserve)
        return ok, needs, short if ok else min(short, single_short)
    return _fit_spread(estimate, gpus, avail, reserve)


def fitter(
    backend: AnyBackend, estimate: Estimate, gpus: Sequence[GpuInfo], reserve: int
) -> Callable[[Mapping[int, int]], Fit]:
    from llmctl.config.schema import Kind  # noqa: PLC0415

    if backend.kind == Kind.VLLM:
        return lambda avail: _fit_vllm(backend, gpus, avail)
    if backend.kind == Kind.OLLAMA:
        return lambda avail: _fit_single_first(estimate, gpus, avail, reserve)
    return lambda avail: _fit_spread(estimate, gpus, avail, reserve)
