"""The plan for serving a model now, on this machine: the facts `plan()` needs, gathered live.

`plan_for` is what `llmctl plan`, `llmctl switch` and llmctl's router (which loads models on
demand, in a long-running process) call: no click, no printing. The GPUs come from the
`GpuSource` the caller passes in (NVML, or a described inventory: `gpu.source_for(path)`);
what each backend holds comes from `systemctl --user show` (ControlGroup), the units' cgroups
and the GPUs' processes, refined by what the backends themselves answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from llmctl.errors import LlmctlError

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient
    from llmctl.backends.ollama import LoadedModel
    from llmctl.config.schema import Config
    from llmctl.gpu import GpuSource, Inventory
    from llmctl.planner.types import Holding, Plan

PROBE_TIMEOUT = 2.0  # seconds per backend question: planning must not wait on a hung server


@dataclass(frozen=True)
class Facts:
    """What is true now, as far as planning is concerned."""

    inventory: Inventory
    running: list[Holding]
    ollama_loaded: dict[str, list[LoadedModel]] = field(default_factory=dict)  # by backend name
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
        ollama_loaded=facts.ollama_loaded.get(name, []),
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
    mapped to units through `systemctl --user show` (ControlGroup) and their cgroups, Ollama's
    GPU memory is split per model from /api/ps, and idleness is asked from llama-server's /slots
    and vLLM's /metrics. Without a user manager, only the processes' own cgroup paths say which
    unit they belong to.
    """
    from llmctl import gpu, procs, systemd  # noqa: PLC0415
    from llmctl.kinds import Kind  # noqa: PLC0415
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
    ollama_active = any(config.backends[name].kind is Kind.OLLAMA for name in active)
    if not running and not ollama_active:
        # Nothing holds GPU memory (no GPU, or none of ours on it): no server needs asking.
        return Facts(inventory, running, notes=notes)
    running, loaded = _ask_backends(config, running, set(active), probe_timeout)
    return Facts(inventory, running, ollama_loaded=loaded, notes=notes)


def _ask_backends(
    config: Config, running: list[Holding], active: set[str], timeout: float
) -> tuple[list[Holding], dict[str, list[LoadedModel]]]:
    """Ollama's models per holding; idle and asleep flags from the servers (best effort)."""
    from llmctl.backends import ollama  # noqa: PLC0415
    from llmctl.backends.base import base_url, probe_client  # noqa: PLC0415
    from llmctl.kinds import Kind  # noqa: PLC0415

    loaded: dict[str, list[LoadedModel]] = {}
    out: list[Holding] = []
    with probe_client(timeout) as client:
        for name in sorted(active):
            backend = config.backends[name]
            url = base_url(backend.host, backend.port)
            if backend.kind == Kind.OLLAMA:
                try:
                    loaded[name] = ollama.loaded_models(client, url)
                except LlmctlError:
                    loaded[name] = []
        for holding in running:
            configured = config.backends.get(holding.backend)
            if configured is None or holding.backend not in active:
                out.append(holding)
                continue
            backend = configured
            url = base_url(backend.host, backend.port)
            if backend.kind == Kind.OLLAMA and holding.model is None and loaded.get(holding.backend):
                out.extend(split_ollama(holding, loaded[holding.backend]))
            elif backend.kind == Kind.LLAMA_SERVER:
                out.append(replace(holding, idle=_llama_server_idle(client, url)))
            elif backend.kind == Kind.VLLM:
                idle, asleep = _vllm_state(client, url, getattr(backend, "sleep_mode", False))
                out.append(replace(holding, idle=idle, asleep=asleep))
            else:
                out.append(holding)
    return out, loaded


def split_ollama(holding: Holding, loaded: Sequence[LoadedModel]) -> list[Holding]:
    """One Ollama backend's GPU memory split per loaded model, in proportion to size_vram."""
    total_vram = sum(m.size_vram for m in loaded)
    if total_vram <= 0:
        return [holding]
    out = []
    for m in loaded:
        share = {g: b * m.size_vram // total_vram for g, b in holding.bytes_by_gpu.items()}
        out.append(replace(holding, model=m.name, bytes_by_gpu=share))
    return out


def _llama_server_idle(client: HttpClient, url: str) -> bool | None:
    from llmctl.backends.base import timed_get  # noqa: PLC0415

    response, _, _ = timed_get(client, f"{url}/slots")
    if response is None or response.status_code != 200:
        return None
    try:
        slots = response.json()
        return not any(bool(slot.get("is_processing")) for slot in slots)
    except (ValueError, AttributeError, TypeError):
        return None


def _vllm_state(client: HttpClient, url: str, sleep_mode: bool) -> tuple[bool | None, bool]:
    from llmctl.backends.base import timed_get  # noqa: PLC0415

    asleep = False
    if sleep_mode:
        response, _, _ = timed_get(client, f"{url}/is_sleeping")
        if response is not None and response.status_code == 200:
            try:
                asleep = bool(response.json().get("is_sleeping"))
            except (ValueError, AttributeError):
                asleep = False
    response, _, _ = timed_get(client, f"{url}/metrics")
    if response is None or response.status_code != 200:
        return None, asleep
    running = [
        float(m.group(1))
        for m in re.finditer(r"^vllm:num_requests_running(?:\{[^}]*\})? ([0-9.eE+-]+)$", response.text, re.M)
    ]
    return (not any(running)) if running else None, asleep
