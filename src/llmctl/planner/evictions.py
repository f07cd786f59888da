"""What must make room for a model, when it does not fit beside what runs.

Candidates are the running llmctl backends on the target GPUs, never a pinned one, ranked idle
first, then cheapest to reload (the smallest). An Ollama model is unloaded on its own (the daemon
keeps running); a vLLM backend with sleep_mode is put to sleep (it keeps SLEEP_RESIDUAL_BYTES per
GPU: CUDA context and graphs) unless only stopping it makes the model fit. Candidates are taken
in that order until the model fits, then any that turned out not to be needed are dropped again,
the least preferred first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from llmctl.estimate import GiB
from llmctl.gpu import GpuInfo
from llmctl.planner.fitting import Fit
from llmctl.planner.types import Action, Eviction, Holding, human_bytes

if TYPE_CHECKING:
    from llmctl.config.schema import Config

SLEEP_RESIDUAL_BYTES = 2 * GiB  # a sleeping vLLM keeps ~1.3-7 GiB per GPU (vLLM #47654)


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
            notes.append(
                f"{h.backend} is not in the config: its {human_bytes(sum(on_target.values()))} stay put"
            )
            continue
        if h.backend == target and backend.kind != Kind.OLLAMA:
            continue  # the target's own model is replaced, not evicted
        if backend.pinned and h.backend != target:
            notes.append(
                f"{h.backend} is pinned: never evicted (holds {human_bytes(sum(on_target.values()))})"
            )
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


def make_room(
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
        notes.append(f"it misses by {human_bytes(short)} even after every allowed eviction")
    freed = dict(replaced)
    for eviction in taken:
        for index, size in eviction.frees_by_gpu.items():
            freed[index] = freed.get(index, 0) + size
    return taken, ok, needs, short, freed, notes
