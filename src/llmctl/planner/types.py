"""The planner's records: what a backend holds now (`Holding`), what must make room (`Eviction`),
and the plan itself (`Plan`, with a `GpuPlan` per GPU); `as_dict` gives what `llmctl plan --json`
prints. Also `human_bytes`, the size format of every note the planner writes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llmctl.estimate import Estimate, GiB, MiB

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


def human_bytes(value: int) -> str:
    if abs(value) >= GiB:
        return f"{value / GiB:.1f} GiB"
    return f"{value / MiB:.0f} MiB"
