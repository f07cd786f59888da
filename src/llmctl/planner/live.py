"""The plan for serving a model now, on this machine: the facts `plan()` needs, gathered live.

`plan_for` is what `llmctl plan`, `llmctl switch` and llmctl's router (which loads models on
demand, in a long-running process) call: no click, no printing. The GPUs come from the
`GpuSource` the caller passes in (NVML, or a described inventory: `gpu.source_for(path)`);
what each backend holds comes from `systemctl --user show` (ControlGroup), the units' cgroups
and the GPUs' processes, refined by what the backends themselves answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmctl.backends.base import LoadedModel, MemoryFacts
    from llmctl.config.schema import Config
    from llmctl.gpu import GpuSource, Inventory
    from llmctl.planner.types import Holding, Plan

PROBE_TIMEOUT = 2.0  # seconds per backend question: planning must not wait on a hung server


@dataclass(frozen=True)
class Facts:
    """What is true now, as far as planning is concerned."""

    inventory: Inventory
    running: list[Holding]
    # By backend name, from the kinds that report per-model sizes (Ollama's /api/ps).
    loaded: dict[str, list[LoadedModel]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def plan_for(
    config: Config,
    model_id: str,
    *,
    serving: Mapping[str, str],
    gpu_source: GpuSource,
    backend: str | None = None,
    probe_timeout: float = PROBE_TIMEOUT,
) -> Plan:
    """The memory plan for serving `model_id` now (on `backend`, else the model's own).

    `serving`: what each one-model backend serves (llmctl.state.serving_now). Raises
    LlmctlError for an unknown model or backend, or a model that cannot be estimated.
    """
    from llmctl.estimate import estimate_model  # noqa: PLC0415
    from llmctl.planner import choose_backend, plan, target_gpus  # noqa: PLC0415

    name = choose_backend(config, model_id, backend)
    facts = gather_facts(config, serving, gpu_source, probe_timeout=probe_timeout)
    chosen = config.backends[name]
    gpus, _ = target_gpus(chosen, facts.inventory)
    estimate = estimate_model(
        config,
        model_id,
        name,
        gpu_totals=[g.total_bytes for g in gpus],
        ollama_loaded=facts.loaded.get(name, []),
        cpu_only=True if chosen.gpus == [] or not facts.inventory.gpus else None,
    )
    result = plan(config, model_id, facts.inventory, facts.running, backend=name, estimate=estimate)
    return replace(result, notes=(*result.notes, *facts.notes))


def gather_facts(
    config: Config,
    serving: Mapping[str, str],
    gpu_source: GpuSource,
    *,
    probe_timeout: float = PROBE_TIMEOUT,
) -> Facts:
    """The inventory and what each backend holds.

    With a described inventory, what runs is what the file says (its processes' units, models
    and idle flags): the file may describe another machine. Otherwise NVML's processes are
    mapped to units through `systemctl --user show` (ControlGroup) and their cgroups, and each
    running backend's adapter says what it holds (`Adapter.memory_facts`: Ollama's GPU memory
    per model from /api/ps, idleness from llama-server's /slots and vLLM's /metrics, vLLM's
    sleep). Without a user manager, only the processes' own cgroup paths say which
    unit they belong to.
    """
    from llmctl import gpu, procs, systemd  # noqa: PLC0415
    from llmctl.backends import adapter_for  # noqa: PLC0415
    from llmctl.planner.holdings import holdings_from_inventory  # noqa: PLC0415
    from llmctl.render.units import unit_name  # noqa: PLC0415

    inventory = gpu_source.inventory()
    notes: list[str] = []
    if inventory.source == "file":
        notes.append(f"what runs is taken from the inventory ({inventory.note})")
        return Facts(inventory, holdings_from_inventory(config, inventory, serving), notes=notes)
    if not systemd.manager_reachable():
        notes.append(
            "no systemd user manager is reachable: planning from the config and the GPU processes' cgroups"
        )
        return Facts(inventory, holdings_from_inventory(config, inventory, serving), notes=notes)
    units = {unit_name(name): name for name in config.backends}
    states = systemd.show(list(units))
    active = {units[u]: s for u, s in states.items() if u in units and s.running}
    units_by_pid = {
        pid: state.unit for state in active.values() for pid in procs.cgroup_pids(state.control_group)
    }
    inventory = gpu.with_units(inventory, units_by_pid)
    running = holdings_from_inventory(config, inventory, serving)
    many_models = any(adapter_for(config.backends[name].kind).serves_many for name in active)
    if not running and not many_models:
        # Nothing holds GPU memory (no GPU, or none of ours on it), and no server's report of
        # its loaded models is needed for the estimate: no server needs asking.
        return Facts(inventory, running, notes=notes)
    running, loaded = _ask_backends(config, running, set(active), probe_timeout)
    return Facts(inventory, running, loaded=loaded, notes=notes)


def _ask_backends(
    config: Config, running: list[Holding], active: set[str], timeout: float
) -> tuple[list[Holding], dict[str, list[LoadedModel]]]:
    """Each running backend's memory facts, asked in parallel (best effort: a server that does
    not answer leaves its holding as the inventory says), and the holdings refined by them: idle
    and asleep flags, and a many-model process split per loaded model."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from llmctl.backends import adapter_for  # noqa: PLC0415
    from llmctl.backends.base import base_url, probe_client  # noqa: PLC0415

    def ask(name: str) -> MemoryFacts:
        backend = config.backends[name]
        url = base_url(backend.host, backend.port)
        sleep_mode = getattr(backend, "sleep_mode", False)
        return adapter_for(backend.kind).memory_facts(client, url, timeout, sleep_mode=sleep_mode)

    names = sorted(active)
    with probe_client(timeout) as client, ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
        facts = dict(zip(names, pool.map(ask, names), strict=True))
    out: list[Holding] = []
    for holding in running:
        known = facts.get(holding.backend)
        if known is None:
            out.append(holding)
        elif known.loaded and holding.model is None:
            out.extend(split_by_loaded(holding, known.loaded))
        else:
            out.append(replace(holding, idle=known.idle, asleep=known.asleep))
    return out, {name: list(f.loaded) for name, f in facts.items() if f.loaded}


def split_by_loaded(holding: Holding, loaded: Sequence[LoadedModel]) -> list[Holding]:
    """One process's GPU memory split per loaded model, in proportion to their VRAM sizes
    (Ollama's size_vram); unsplit when the sizes are unknown."""
    total_vram = sum(m.size_vram for m in loaded)
    if total_vram <= 0:
        return [holding]
    out = []
    for m in loaded:
        share = {g: b * m.size_vram // total_vram for g, b in holding.bytes_by_gpu.items()}
        out.append(replace(holding, model=m.name, bytes_by_gpu=share))
    return out
