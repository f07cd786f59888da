"""A plan and a GPU inventory as text, and the failure a plan that does not fit reports.

Used by `llmctl gpus`, `llmctl plan` and `llmctl switch --dry-run`; no click, so a caller
outside the CLI (llmctl's router) can say the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmctl.errors import LlmctlError
from llmctl.planner.types import human_bytes

if TYPE_CHECKING:
    from llmctl.gpu import Inventory
    from llmctl.planner.types import Plan


def _human(value: int | None) -> str:
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


def does_not_fit(plan: Plan) -> LlmctlError:
    """The failure `plan --json` and `switch --dry-run --json` report (error.report: the plan)."""
    return LlmctlError(
        f"{plan.model} does not fit on {plan.backend}: short by {_human(plan.short_by)} "
        "even after every allowed eviction",
        hint="A smaller model, a smaller context or KV cache type, or stop what is pinned.",
    )
