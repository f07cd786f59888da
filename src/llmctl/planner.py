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
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from llmctl.errors import ExitCode, LlmctlError
from llmctl.estimate import Estimate, GiB, MiB, estimate_model
from llmctl.gpu import GpuInfo, Inventory

if TYPE_CHECKING:
    from llmctl.config.schema import AnyBackend, Config

RESERVE_BYTES = 256 * MiB
SLEEP_RESIDUAL_BYTES = 2 * GiB  # a sleeping vLLM keeps ~1.3-7 GiB per GPU (vLLM #47654)
UNMANAGED_NOTE_BYTES = 512 * MiB  # the driver itself accounts a few hundred MiB as used

Action = Literal["stop", "unload", "sleep"]
Device = Literal["gpu", "cpu"]


@dataclass(frozen=True)
class Holding:
    """What one backend (or one Ollama model) holds now, per GPU index."""

    backend: str  # config backend name
    model: str | None  # the model id it serves, or Ollama's model name; None: not known
    bytes_by_gpu: Mapping[int, int]
    idle: bool | None = None  # no request in flight; None: not known (ranked as busy)
    asleep: bool = False  # a vLLM in sleep mode

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_gpu.values())


@dataclass(frozen=True)
class Eviction:
    action: Action
    backend: str
    unit: str
    model: str | None
    frees_by_gpu: Mapping[int, int]
    idle: bool | None

    @property
    def frees_bytes(self) -> int:
        return sum(self.frees_by_gpu.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "backend": self.backend,
            "unit": self.unit,
            "model": self.model,
            "frees_bytes": self.frees_bytes,
            "frees_by_gpu": {str(k): v for k, v in sorted(self.frees_by_gpu.items())},
            "idle": self.idle,
        }


@dataclass(frozen=True)
class GpuPlan:
    index: int
    uuid: str
    name: str
    total_bytes: int
    free_now: int
    target: bool  # the backend may use it
    freed: int = 0  # by replacing the old model and by the evictions
    needs: int = 0  # what the new model takes here
    free_after: int = 0  # free_now + freed - needs

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "total_bytes": self.total_bytes,
            "free_now_bytes": self.free_now,
            "target": self.target,
            "freed_bytes": self.freed,
            "needs_bytes": self.needs,
            "free_after_bytes": self.free_after,
        }


@dataclass(frozen=True)
class Plan:
    model: str
    backend: str
    kind: str
    unit: str
    device: Device
    estimate: Estimate
    gpus: tuple[GpuPlan, ...]
    replaces: Holding | None  # the target backend's current model, stopped by the switch itself
    evictions: tuple[Eviction, ...]
    fits: bool
    short_by: int  # bytes still missing after every allowed eviction; 0 when it fits
    fits_beside_old: bool  # fits with nothing stopped: start new before stopping old
    already_serving: bool
    reserve_bytes: int
    notes: tuple[str, ...] = field(default=())

    @property
    def needs_bytes(self) -> int:
        return sum(g.needs for g in self.gpus)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "kind": self.kind,
            "unit": self.unit,
            "device": self.device,
            "fits": self.fits,
            "short_by_bytes": self.short_by,
            "fits_beside_old": self.fits_beside_old,
            "already_serving": self.already_serving,
            "needs_bytes": self.needs_bytes,
            "reserve_bytes": self.reserve_bytes,
            "estimate": self.estimate.as_dict(),
            "gpus": [g.as_dict() for g in self.gpus],
            "replaces": None
            if self.replaces is None
            else {
                "backend": self.replaces.backend,
                "model": self.replaces.model,
                "frees_bytes": self.replaces.total_bytes,
            },
            "evictions": [e.as_dict() for e in self.evictions],
            "notes": list(self.notes),
        }


# --- choosing the backend ------------------------------------------------------------------------


def choose_backend(config: Config, model_id: str, backend: str | None = None) -> str:
    """The backend that will serve `model_id`: its own, or `backend` if that one can serve it."""
    from llmctl.config.checks import ACCEPTS, classify_source  # noqa: PLC0415

    model = config.models.get(model_id)
    if model is None:
        close = difflib.get_close_matches(model_id, list(config.models), n=1)
        raise LlmctlError(
            f"unknown model {model_id!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
            hint="llmctl model list shows the models in the config.",
            exit_code=ExitCode.USAGE,
        )
    if model.remote is not None:
        raise LlmctlError(
            f"{model_id} is a remote model ({model.remote.provider}): it takes no local memory",
            exit_code=ExitCode.USAGE,
        )
    if backend is None:
        assert model.backend is not None
        return model.backend
    chosen = config.backends.get(backend)
    if chosen is None:
        raise LlmctlError(
            f"unknown backend {backend!r}",
            hint=f"Backends: {', '.join(sorted(config.backends)) or 'none'}",
            exit_code=ExitCode.USAGE,
        )
    assert model.source is not None
    kind = classify_source(model.source)
    if kind not in ACCEPTS[chosen.kind]:
        raise LlmctlError(
            f"backend {backend!r} ({chosen.kind.value}) cannot serve {model_id}: its source is"
            f" {'an unclear path' if kind is None else 'a ' + kind.replace('-', ' ')}",
            exit_code=ExitCode.USAGE,
        )
    return backend


def _canonical(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return (name if ":" in last else f"{name}:latest").casefold()


def holds_model(config: Config, holding: Holding, model_id: str) -> bool:
    """Whether `holding` is `model_id` (by id, or by Ollama name against the model's source)."""
    if holding.model is None:
        return False
    if holding.model == model_id:
        return True
    model = config.models.get(model_id)
    names = {_canonical(model_id)} | ({_canonical(model.source)} if model and model.source else set())
    return _canonical(holding.model) in names


def target_gpus(backend: AnyBackend, inventory: Inventory) -> tuple[list[GpuInfo], list[str]]:
    """The inventory's GPUs a backend may use (in its `gpus:` order), and references not found."""
    if backend.gpus is None:
        return list(inventory.gpus), []
    found, missing = [], []
    for ref in backend.gpus:
        info = inventory.gpu(ref)
        if info is None:
            missing.append(str(ref))
        elif info not in found:
            found.append(info)
    return found, missing


# --- fitting -------------------------------------------------------------------------------------

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


def _fitter(
    backend: AnyBackend, estimate: Estimate, gpus: Sequence[GpuInfo], reserve: int
) -> Callable[[Mapping[int, int]], Fit]:
    from llmctl.config.schema import Kind  # noqa: PLC0415

    if backend.kind == Kind.VLLM:
        return lambda avail: _fit_vllm(backend, gpus, avail)
    if backend.kind == Kind.OLLAMA:
        return lambda avail: _fit_single_first(estimate, gpus, avail, reserve)
    return lambda avail: _fit_spread(estimate, gpus, avail, reserve)


# --- evictions -----------------------------------------------------------------------------------


def _candidates(
    config: Config, target: str, holdings: Sequence[Holding], gpu_set: set[int], *, sleep: bool
) -> tuple[list[Eviction], list[str]]:
    from llmctl.config.schema import Kind, VllmBackend  # noqa: PLC0415
    from llmctl.render.units import unit_name  # noqa: PLC0415

    out: list[Eviction] = []
    notes: list[str] = []
    for h in holdings:
        on_target = {g: b for g, b in h.bytes_by_gpu.items() if g in gpu_set and b > 0}
        if not on_target:
            continue
        backend = config.backends.get(h.backend)
        if backend is None:
            notes.append(f"{h.backend} is not in the config: its {_human(sum(on_target.values()))} stay put")
            continue
        if h.backend == target and backend.kind != Kind.OLLAMA:
            continue  # the target's own model is replaced, not evicted
        if backend.pinned and h.backend != target:
            notes.append(f"{h.backend} is pinned: never evicted (holds {_human(sum(on_target.values()))})")
            continue
        if backend.kind == Kind.OLLAMA and h.model is not None:
            action: Action = "unload"
            frees = on_target
        elif isinstance(backend, VllmBackend) and backend.sleep_mode and sleep and not h.asleep:
            action = "sleep"
            frees = {g: max(b - SLEEP_RESIDUAL_BYTES, 0) for g, b in on_target.items()}
        else:
            if h.backend == target:
                continue  # the target Ollama itself is never stopped to make room in it
            action = "stop"
            frees = on_target
        out.append(Eviction(action, h.backend, unit_name(h.backend), h.model, frees, h.idle))
    # Idle first, then the cheapest to reload: the smallest.
    out.sort(key=lambda e: (e.idle is not True, e.frees_bytes, e.backend, e.model or ""))
    return out, notes


def _add(avail: Mapping[int, int], frees: Mapping[int, int], sign: int = 1) -> dict[int, int]:
    out = dict(avail)
    for g, b in frees.items():
        if g in out:
            out[g] += sign * b
    return out


def _choose(
    candidates: Sequence[Eviction], avail: Mapping[int, int], fit: Callable[[Mapping[int, int]], Fit]
) -> tuple[list[Eviction], dict[int, int]]:
    """The preferred prefix of candidates that makes room, without the ones not needed after all."""
    taken: list[Eviction] = []
    current = dict(avail)
    for candidate in candidates:
        if fit(current)[0]:
            break
        taken.append(candidate)
        current = _add(current, candidate.frees_by_gpu)
    if not fit(current)[0]:
        return taken, current
    for candidate in reversed(taken[:-1]):
        without = _add(current, candidate.frees_by_gpu, -1)
        if fit(without)[0]:
            taken.remove(candidate)
            current = without
    return taken, current


# --- the plan ------------------------------------------------------------------------------------


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
        notes.append(f"{why}: the model runs on CPU and needs about {_human(estimate.cpu_bytes)} of RAM")
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

    fit = _fitter(chosen, estimate, gpus, reserve)
    free_now = {g.index: g.free_bytes for g in gpus}
    beside, beside_needs, _ = fit(free_now)
    if beside:
        return replace(skeleton, gpus=_table(inventory, gpus, {}, beside_needs), notes=tuple(notes))

    taken, ok, needs, short, freed, more_notes = _make_room(
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


def _make_room(
    config: Config,
    name: str,
    *,
    running: Sequence[Holding],
    gpus: Sequence[GpuInfo],
    old: Holding | None,
    fit: Callable[[Mapping[int, int]], Fit],
) -> tuple[list[Eviction], bool, dict[int, int], int, dict[int, int], list[str]]:
    """(evictions, fits, needs per GPU, bytes short, bytes freed per GPU, notes)."""
    gpu_set = {g.index for g in gpus}
    replaced = {g: b for g, b in (old.bytes_by_gpu.items() if old else ()) if g in gpu_set}
    start = _add({g.index: g.free_bytes for g in gpus}, replaced)
    candidates, notes = _candidates(config, name, running, gpu_set, sleep=True)
    taken, after = _choose(candidates, start, fit)
    ok, needs, short = fit(after)
    if not ok and any(c.action == "sleep" for c in candidates):
        # Sleeping keeps a residual: see whether stopping those instead makes it fit.
        stops, _ = _candidates(config, name, running, gpu_set, sleep=False)
        taken_stops, after_stops = _choose(stops, start, fit)
        ok_stops, needs_stops, short_stops = fit(after_stops)
        if ok_stops or short_stops < short:
            taken, ok, needs, short = taken_stops, ok_stops, needs_stops, short_stops
    if not ok:
        notes.append(f"it misses by {_human(short)} even after every allowed eviction")
    freed = dict(replaced)
    for eviction in taken:
        for index, size in eviction.frees_by_gpu.items():
            freed[index] = freed.get(index, 0) + size
    return taken, ok, needs, short, freed, notes


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
                f"GPU {gpu.index}: {_human(other)} in use by processes llmctl does not manage (not evictable)"
            )
    return notes


def _human(value: int) -> str:
    if abs(value) >= GiB:
        return f"{value / GiB:.1f} GiB"
    return f"{value / MiB:.0f} MiB"


def human_bytes(value: int) -> str:
    return _human(value)


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
