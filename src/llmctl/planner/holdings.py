"""What each backend holds now, from the GPU inventory's processes and the units they belong to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from llmctl.gpu import Inventory
from llmctl.planner.types import Holding

if TYPE_CHECKING:
    from llmctl.config.schema import Config


def with_idle(running: Sequence[Holding], idle: Mapping[str, bool]) -> list[Holding]:
    """Holdings with `idle` filled in per backend where it was not known."""
    return [replace(h, idle=idle.get(h.backend)) if h.idle is None else h for h in running]


def backend_of_unit(unit: str | None) -> str | None:
    """`llmctl-NAME.service` -> NAME (None for anything else, and for the gateway's unit)."""
    if unit is None or not unit.startswith("llmctl-") or not unit.endswith(".service"):
        return None
    name = unit.removeprefix("llmctl-").removesuffix(".service")
    return None if name == "gateway" else name


def holdings_from_inventory(
    config: Config, inventory: Inventory, serving: Mapping[str, str] | None = None
) -> list[Holding]:
    """What each backend holds, from the inventory's processes and the units they belong to.

    Processes of one backend are summed per GPU; a described process that names its `model`
    (an Ollama runner) is a holding of its own. A one-model backend's holding is labelled with
    the model it serves (`serving`, else the config's `model:`).
    """
    from llmctl.config.schema import Kind  # noqa: PLC0415

    serving = serving or {}
    grouped: dict[tuple[str, str | None], dict[int, int]] = {}
    idle: dict[tuple[str, str | None], list[bool | None]] = {}
    for gpu in inventory.gpus:
        for proc in gpu.processes:
            name = backend_of_unit(proc.unit)
            if name is None:
                continue
            backend = config.backends.get(name)
            model = proc.model
            if model is None and backend is not None and backend.kind != Kind.OLLAMA:
                model = serving.get(name) or getattr(backend, "model", None)
            key = (name, model)
            per_gpu = grouped.setdefault(key, {})
            per_gpu[gpu.index] = per_gpu.get(gpu.index, 0) + (proc.used_bytes or 0)
            idle.setdefault(key, []).append(proc.idle)
    out = []
    for key, per_gpu in grouped.items():
        flags = idle[key]
        known = None if any(f is None for f in flags) else all(f is True for f in flags)
        if any(f is False for f in flags):
            known = False
        out.append(Holding(backend=key[0], model=key[1], bytes_by_gpu=per_gpu, idle=known))
    return sorted(out, key=lambda h: (h.backend, h.model or ""))
