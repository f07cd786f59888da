"""Where a model would run, what it needs, and what must make room for it.

`plan()` is a pure function of facts the caller gathers: the config, a GPU `Inventory` (NVML or
described), what each backend holds now per GPU (`Holding`s) and the model's `Estimate`. It does
not start, stop or ask anything; `llmctl plan` prints the result and `llmctl switch` executes it.

The rules:

* The backend is the model's own (or `--backend`, if its kind can serve the model's source).
* Fit is judged per GPU against free memory now, minus a reserve (RESERVE_BYTES; NVML's free
  figure lags a freshly stopped process, and fragmentation wastes some). llama.cpp spreads the
  weights and KV of one process over every GPU it sees, proportionally to what is free, and puts
  a CUDA context and a compute buffer on each; Ollama uses one GPU when the model fits on one.
  vLLM needs `ceil(gpu_memory_utilization x total)` free on each of its GPUs (no reserve: that is
  vLLM's own rule), whatever the model.
* What the target backend serves now is replaced by the switch itself (a one-model backend
  restarts with the new model): its memory counts as freed, and `fits_beside_old` says whether
  the new model also fits while the old one still runs (switch can then start new before
  stopping old).
* Evictions, when more room is needed: running llmctl backends on the target GPUs, never a
  pinned one. Idle first, then cheapest to reload (the smallest). An Ollama model is unloaded on
  its own (the daemon keeps running); a vLLM backend with sleep_mode is put to sleep (it keeps
  SLEEP_RESIDUAL_BYTES per GPU: CUDA context and graphs) unless only stopping it makes the model
  fit. Candidates are taken in that order until the model fits, then any that turned out not to
  be needed are dropped again, the least preferred first.
* A model that does not fit after every allowed eviction gets `fits=False` and `short_by`: the
  bytes still missing. Switch refuses such a plan before touching anything.
* CPU only (the backend's `gpus: []`, or an inventory without GPUs): it fits, with a note.

Modules: `types` (Holding, Eviction, GpuPlan, Plan), `choice` (the backend and its GPUs),
`fitting` (per-GPU fit: spread, single GPU first, vLLM's claim), `evictions` (what makes room),
`holdings` (what runs now, from the inventory). `plan()` itself lives here, and every name used
elsewhere is re-exported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from llmctl.estimate import Estimate, MiB, estimate_model
from llmctl.gpu import GpuInfo, Inventory
from llmctl.planner.choice import choose_backend, holds_model, target_gpus
from llmctl.planner.evictions import SLEEP_RESIDUAL_BYTES, make_room
from llmctl.planner.fitting import RESERVE_BYTES, Fit, fitter
from llmctl.planner.holdings import backend_of_unit, holdings_from_inventory, with_idle
from llmctl.planner.types import Action, Device, Eviction, GpuPlan, Holding, Plan, human_bytes

if TYPE_CHECKING:
    from llmctl.config.schema import Config

__all__ = [
    "RESERVE_BYTES",
    "SLEEP_RESIDUAL_BYTES",
    "UNMANAGED_NOTE_BYTES",
    "Action",
    "Device",
    "Eviction",
    "Fit",
    "GpuPlan",
    "Holding",
    "Plan",
    "backend_of_unit",
    "choose_backend",
    "holdings_from_inventory",
    "holds_model",
    "human_bytes",
    "plan",
    "target_gpus",
    "with_idle",
]

UNMANAGED_NOTE_BYTES = 512 * MiB  # the driver itself accounts a few hundred MiB as used


def plan(
    config: Config,
    model_id: str,
    inventory: Inventory,
    running: Sequence[Holding],
    *,
    backend: str | None = None,
    estimate: Estimate | None = None,
    reserve: int = RESERVE_BYTES,
) -> Plan:
    """The plan for serving `model_id` (see the module docstring).

    `estimate`: the model's Estimate; when None it is computed with `estimate.estimate_model`,
    which reads the model's GGUF header (the only I/O; pass it in to keep this pure).
    """
    from llmctl.config.schema import Kind, VllmBackend  # noqa: PLC0415
    from llmctl.render.units import unit_name  # noqa: PLC0415

    name = choose_backend(config, model_id, backend)
    chosen = config.backends[name]
    gpus, missing = target_gpus(chosen, inventory)
    notes: list[str] = []
    if missing:
        notes.append(f"{name}'s gpus {', '.join(missing)} are not in the inventory")
    cpu = chosen.gpus == [] or not inventory.gpus
    if estimate is None:
        estimate = estimate_model(
            config, model_id, name, gpu_totals=[g.total_bytes for g in gpus], cpu_only=True if cpu else None
        )
    mine = [h for h in running if h.backend == name]
    already = any(holds_model(config, h, model_id) and not h.asleep for h in mine)
    old = None
    if chosen.kind != Kind.OLLAMA:
        old = next((h for h in mine if not holds_model(config, h, model_id)), None)
    skeleton = Plan(
        model=model_id,
        backend=name,
        kind=chosen.kind.value,
        unit=unit_name(name),
        device="gpu",
        estimate=estimate,
        gpus=_table(inventory, gpus, {}, {}),
        replaces=old,
        evictions=(),
        fits=True,
        short_by=0,
        fits_beside_old=True,
        already_serving=already,
        reserve_bytes=reserve,
    )

    if cpu:
        why = (
            f"{name} is CPU only (gpus: [])"
            if chosen.gpus == []
            else f"no GPU ({inventory.note or 'the inventory lists none'})"
        )
        notes.append(f"{why}: the model runs on CPU and needs about {human_bytes(estimate.cpu_bytes)} of RAM")
        if chosen.kind == Kind.VLLM:
            notes.append("vLLM needs a CUDA GPU unless it is a CPU build")
        table = tuple(replace(g, target=False) for g in skeleton.gpus)
        return replace(skeleton, device="cpu", gpus=table, notes=tuple(notes))

    notes.extend(_unmanaged(inventory, running))
    if already:
        notes.append(f"{name} already serves {model_id}")
        return replace(skeleton, replaces=None, notes=tuple(notes))
    if isinstance(chosen, VllmBackend) and len(gpus) < (chosen.tensor_parallel_size or 1):
        count = chosen.tensor_parallel_size or 1
        notes.append(f"tensor_parallel_size {count} needs {count} GPUs; {name} can use {len(gpus)}")
        per_gpu = math.ceil(
            max((g.total_bytes for g in inventory.gpus), default=0) * chosen.gpu_memory_utilization
        )
        return replace(
            skeleton,
            fits=False,
            fits_beside_old=False,
            short_by=max(per_gpu * (count - len(gpus)), 1),
            notes=tuple(notes),
        )

    fit = fitter(chosen, estimate, gpus, reserve)
    free_now = {g.index: g.free_bytes for g in gpus}
    beside, beside_needs, _ = fit(free_now)
    if beside:
        return replace(skeleton, gpus=_table(inventory, gpus, {}, beside_needs), notes=tuple(notes))

    taken, ok, needs, short, freed, more_notes = make_room(
        config, name, running=running, gpus=gpus, old=old, fit=fit
    )
    notes.extend(more_notes)
    return replace(
        skeleton,
        gpus=_table(inventory, gpus, freed, needs),
        evictions=tuple(taken),
        fits=ok,
        short_by=short,
        fits_beside_old=False,
        notes=tuple(notes),
    )


def _table(
    inventory: Inventory, gpus: Sequence[GpuInfo], freed: Mapping[int, int], needs: Mapping[int, int]
) -> tuple[GpuPlan, ...]:
    targets = {g.index for g in gpus}
    return tuple(
        GpuPlan(
            index=g.index,
            uuid=g.uuid,
            name=g.name,
            total_bytes=g.total_bytes,
            free_now=g.free_bytes,
            target=g.index in targets,
            freed=freed.get(g.index, 0),
            needs=needs.get(g.index, 0),
            free_after=g.free_bytes + freed.get(g.index, 0) - needs.get(g.index, 0),
        )
        for g in inventory.gpus
    )


def _unmanaged(inventory: Inventory, running: Sequence[Holding]) -> list[str]:
    """A note per GPU where processes llmctl does not manage hold memory."""
    held: dict[int, int] = {}
    for h in running:
        for index, size in h.bytes_by_gpu.items():
            held[index] = held.get(index, 0) + size
    notes = []
    for gpu in inventory.gpus:
        other = gpu.used_bytes - held.get(gpu.index, 0)
        if other > UNMANAGED_NOTE_BYTES:
            notes.append(
                f"GPU {gpu.index}: {human_bytes(other)} in use by processes llmctl does not manage"
                " (not evictable)"
            )
    return notes
