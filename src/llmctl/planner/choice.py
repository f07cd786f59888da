"""Which backend serves a model (its own, or one named with `--backend` whose kind can serve the
model's source), whether a holding already is that model, and which GPUs the backend may use."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from llmctl.errors import ExitCode, LlmctlError
from llmctl.gpu import GpuInfo, Inventory
from llmctl.planner.types import Holding

if TYPE_CHECKING:
    from llmctl.config.schema import AnyBackend, Config


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
