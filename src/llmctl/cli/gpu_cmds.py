"""`llmctl gpus` and `llmctl plan`: what the GPUs hold, and what serving a model would take.

Both read GPUs through NVML, or from a described inventory (`--gpu-inventory FILE`, the shape of
`llmctl gpus --json`) to plan for another machine. `gather_facts` collects what `plan` needs
(the inventory, and what each backend holds from `systemctl --user show`, the units' cgroups and
the GPUs' processes, refined by the backends' own answers); `switch` uses the same facts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_failure, emit_json
from llmctl.errors import ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient
    from llmctl.backends.ollama import LoadedModel
    from llmctl.config.schema import Config
    from llmctl.gpu import Inventory
    from llmctl.planner import Holding, Plan

json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON result.")
inventory_option = click.option(
    "--gpu-inventory",
    "inventory_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Describe the GPUs with this JSON file (the shape of `llmctl gpus --json`) instead of NVML.",
)
PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Facts:
    """What is true now, as far as planning is concerned."""

    inventory: Inventory
    running: list[Holding]
    ollama_loaded: dict[str, list[LoadedModel]] = field(default_factory=dict)  # by backend name
    notes: list[str] = field(default_factory=list)


def read_gpus(inventory_file: Path | None) -> Inventory:
    from llmctl import gpu  # noqa: PLC0415

    return gpu.source_for(inventory_file).inventory()


def gather_facts(
    config: Config,
    serving: Mapping[str, str],
    *,
    inventory_file: Path | None = None,
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
    from llmctl.planner import holdings_from_inventory  # noqa: PLC0415
    from llmctl.render.units import unit_name  # noqa: PLC0415

    inventory = read_gpus(inventory_file)
    notes: list[str] = []
    if inventory_file is not None:
        notes.append(f"what runs is taken from {inventory_file}")
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
    from llmctl.config.schema import Kind  # noqa: PLC0415
    from llmctl.errors import LlmctlError  # noqa: PLC0415

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


# --- rendering -----------------------------------------------------------------------------------


def _human(value: int | None) -> str:
    from llmctl.planner import human_bytes  # noqa: PLC0415

    return "-" if value is None else human_bytes(value)


def _columns(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in [headers, *rows]]


def inventory_lines(inventory: Inventory) -> list[str]:
    if not inventory.gpus:
        return [f"No GPU: {inventory.note or 'none found'}. llmctl plans for CPU."]
    rows = []
    for g in inventory.gpus:
        rows.append([
            str(g.index), g.name, g.uuid or "-", _human(g.total_bytes), _human(g.used_bytes),
            _human(g.free_bytes), "-" if g.utilization_percent is None else f"{g.utilization_percent}%",
        ])  # fmt: skip
    lines = _columns(["GPU", "NAME", "UUID", "TOTAL", "USED", "FREE", "UTIL"], rows)
    procs = [
        [str(g.index), str(p.pid), p.unit or "-", _human(p.used_bytes), p.model or ""]
        for g in inventory.gpus
        for p in g.processes
    ]
    if procs:
        lines += ["", *_columns(["GPU", "PID", "UNIT", "MEMORY", "MODEL"], procs)]
    else:
        lines += ["", "No processes are using the GPUs."]
    source = {"nvml": f"NVML, driver {inventory.driver_version or '?'}", "file": inventory.note or "a file"}
    lines.append(f"(from {source.get(inventory.source, inventory.source)})")
    lines += [f"warning: {p}" for p in inventory.problems]
    return lines


def _estimate_line(plan: Plan) -> str:
    est = plan.estimate
    if est.method == "vllm":
        return f"estimate: vLLM's claim, {_human(plan.needs_bytes or est.claim_gpu)} ({est.notes[0]})"
    if est.method != "gguf":
        return f"estimate: {_human(est.gpu_bytes)} on GPU, as Ollama reports it"
    extra = [f"context {est.context}", f"{est.kv_cache_type} KV"]
    if plan.device == "cpu":
        parts = [est.weights_cpu, est.kv_cpu, est.compute_cpu]
        size, where = est.cpu_bytes, "RAM"
    else:
        parts = [est.weights_gpu, est.kv_gpu, est.compute_gpu]
        size, where = est.gpu_bytes, "GPU"
        if est.weights_cpu:
            extra.append(f"{_human(est.weights_cpu)} of weights stay in RAM")
    text = f"weights {_human(parts[0])}, KV {_human(parts[1])}, compute {_human(parts[2])}"
    if plan.device == "gpu":
        text += f", overhead {_human(est.overhead_gpu)}"
    else:
        # Host-only buffers: the CPU's repacked weights and llama.cpp's logits buffer.
        text += f", repacked weights {_human(est.repack_cpu)}, output {_human(est.output_cpu)}"
    return f"estimate: {_human(size)} on {where}: {text} ({', '.join(extra)})"


def _verdict(plan: Plan) -> str:
    if plan.already_serving:
        return f"{plan.backend} already serves {plan.model}: nothing to do."
    if not plan.fits:
        return f"Does NOT fit: short by {_human(plan.short_by)} even after every allowed eviction."
    if plan.device == "cpu":
        return "Fits (CPU)."
    if plan.fits_beside_old:
        return "Fits now, beside what runs: nothing has to stop first."
    n = len(plan.evictions)
    return f"Fits after {f'{n} eviction(s)' if n else 'replacing the old model'}."


def plan_lines(plan: Plan) -> list[str]:
    """The plan as text (used by `llmctl plan` and `llmctl switch --dry-run`)."""
    lines = [
        f"{plan.model}: served by {plan.backend} ({plan.kind}, {plan.unit}) on {plan.device.upper()}",
        _estimate_line(plan),
    ]
    if plan.gpus:
        rows = [
            [
                str(g.index), g.name, _human(g.total_bytes), _human(g.free_now),
                _human(g.freed) if g.target else "-", _human(g.needs) if g.target else "-",
                _human(g.free_after) if g.target else "-",
            ]
            for g in plan.gpus
        ]  # fmt: skip
        lines += ["", *_columns(["GPU", "NAME", "TOTAL", "FREE NOW", "FREED", "NEEDS", "FREE AFTER"], rows)]
    if plan.replaces is not None:
        what = plan.replaces.model or "its current model"
        lines += ["", f"replaces {what} on {plan.backend} ({_human(plan.replaces.total_bytes)} on GPU)"]
    if plan.evictions:
        lines += ["", "to make room, in order:"]
        for i, e in enumerate(plan.evictions, 1):
            subject = f"{e.backend}: {e.model}" if e.action == "unload" else e.unit
            idle = {True: "idle", False: "busy", None: "idle unknown"}[e.idle]
            lines.append(f"  {i}. {e.action:6} {subject}  (frees {_human(e.frees_bytes)}; {idle})")
    lines += ["", _verdict(plan)]
    if plan.notes:
        lines += ["", "notes:", *[f"  {n}" for n in plan.notes]]
    return lines


# --- commands ------------------------------------------------------------------------------------


@click.command("gpus")
@json_option
@inventory_option
def gpus_cmd(as_json: bool, inventory_file: Path | None) -> int:
    """GPUs, their memory and utilisation, and the processes using them mapped to llmctl units."""
    from llmctl.gpu import inventory_to_json  # noqa: PLC0415

    inventory = read_gpus(inventory_file)
    if as_json:
        emit_json("gpus", inventory_to_json(inventory))
    else:
        click.echo("\n".join(inventory_lines(inventory)))
    return 0


def make_plan(
    config: Config, serving: Mapping[str, str], model: str, backend: str | None, inventory_file: Path | None
) -> Plan:
    """The memory plan for serving `model` now (used by `plan` and `switch`)."""
    from llmctl.estimate import estimate_model  # noqa: PLC0415
    from llmctl.planner import choose_backend, plan, target_gpus  # noqa: PLC0415

    name = choose_backend(config, model, backend)
    facts = gather_facts(config, serving, inventory_file=inventory_file)
    chosen = config.backends[name]
    gpus, _ = target_gpus(chosen, facts.inventory)
    estimate = estimate_model(
        config,
        model,
        name,
        gpu_totals=[g.total_bytes for g in gpus],
        ollama_loaded=facts.ollama_loaded.get(name, []),
        cpu_only=True if chosen.gpus == [] or not facts.inventory.gpus else None,
    )
    result = plan(config, model, facts.inventory, facts.running, backend=name, estimate=estimate)
    return replace(result, notes=(*result.notes, *facts.notes))


@click.command("plan")
@click.argument("model")
@click.option("--backend", metavar="NAME", help="Plan for this backend instead of the model's own.")
@json_option
@inventory_option
@click.pass_obj
def plan_cmd(
    app: AppContext, model: str, backend: str | None, as_json: bool, inventory_file: Path | None
) -> int:
    """Where MODEL would run, its memory estimate, and what must stop to make room.

    Exits 1 when it cannot fit even after every allowed eviction.
    """
    loaded = app.load()
    result = make_plan(loaded.config, app.serving(loaded), model, backend, inventory_file)
    if as_json:
        if not result.fits:
            return emit_failure("plan", does_not_fit(result), report=result.as_dict())
        emit_json("plan", result.as_dict())
    else:
        click.echo("\n".join(plan_lines(result)))
    return 0 if result.fits else int(ExitCode.FAILED)


def does_not_fit(plan: Plan) -> LlmctlError:
    """The failure `plan --json` and `switch --dry-run --json` report (error.report: the plan)."""
    return LlmctlError(
        f"{plan.model} does not fit on {plan.backend}: short by {_human(plan.short_by)} "
        "even after every allowed eviction",
        hint="A smaller model, a smaller context or KV cache type, or stop what is pinned.",
    )


def register(group: click.Group) -> None:
    for command in (gpus_cmd, plan_cmd):
        group.add_command(command)
