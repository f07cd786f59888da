"""State that is not in the config: which model each backend serves now.

`llmctl switch` changes what a backend serves without editing the user's config; the choice
is kept here (JSON, written atomically) and applied over the config's `model:` when
rendering. An entry whose backend or model left the config is ignored, and so is one whose
backend's `model:` was edited since the switch (each entry records the `model:` it overrode):
the config says what the user wants; a switch lasts until they say otherwise there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.errors import LlmctlError
from llmctl.fsutil import atomic_write

if TYPE_CHECKING:
    from llmctl.config.schema import Config  # annotations only: status reads state without pydantic

STATE_VERSION = 1


def state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def load_serving(state_dir: Path) -> dict[str, str]:
    path = state_file(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LlmctlError(
            f"cannot read {path}: {exc}",
            hint="It records which model each backend serves after `llmctl switch`; "
            "restore it from a snapshot (llmctl snapshot list) or delete it to go back to the config.",
        ) from None
    serving = data.get("serving") if isinstance(data, dict) else None
    if not isinstance(serving, dict):
        return {}
    return {str(k): str(v) for k, v in serving.items()}


def load_overridden(state_dir: Path) -> dict[str, str | None]:
    """For each recorded backend, the config's `model:` when the switch recorded it."""
    try:
        data = json.loads(state_file(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    over = data.get("over") if isinstance(data, dict) else None
    if not isinstance(over, dict):
        return {}
    return {str(k): (None if v is None else str(v)) for k, v in over.items()}


def save_serving(state_dir: Path, serving: dict[str, str], over: dict[str, str | None] | None = None) -> None:
    """Record `serving`; `over` gives, per backend, the config's `model:` each choice overrides."""
    body = {"version": STATE_VERSION, "serving": dict(sorted(serving.items()))}
    if over:
        body["over"] = {b: over[b] for b in sorted(serving) if b in over}
    atomic_write(state_file(state_dir), json.dumps(body, indent=2) + "\n")


def effective_serving(
    config: Config, recorded: dict[str, str], over: dict[str, str | None] | None = None
) -> dict[str, str]:
    """Recorded choices that still make sense for this config: backend and model both exist,
    and the backend's `model:` is still the one the choice overrode (when that is known)."""
    over = over or {}
    return {
        backend: model
        for backend, model in recorded.items()
        if backend in config.backends
        and config.models.get(model) is not None
        and config.models[model].backend == backend
        and (backend not in over or over[backend] == getattr(config.backends[backend], "model", None))
    }


def serving_now(config: Config, state_dir: Path) -> dict[str, str]:
    """What each backend serves by the recorded switches that still apply to `config`."""
    return effective_serving(config, load_serving(state_dir), load_overridden(state_dir))


def record_switch(config: Config, state_dir: Path, serving: dict[str, str]) -> None:
    """Record `serving` after a switch, with the `model:` each choice overrides (kept from the
    earlier records for backends this switch did not change)."""
    over = load_overridden(state_dir)
    previous = load_serving(state_dir)
    for backend, model in serving.items():
        if backend not in over or previous.get(backend) != model:
            over[backend] = getattr(config.backends.get(backend), "model", None)
    save_serving(state_dir, serving, over)


def applied_config_file(state_dir: Path) -> Path:
    """A copy of the config the installed units were rendered from (written by up/rollback).

    The snapshot taken before `up` holds this text, not the edited config, so the config and
    the units in a snapshot always belong together."""
    return state_dir / "applied-config.yaml"


def record_applied(state_dir: Path, config_text: str) -> None:
    atomic_write(applied_config_file(state_dir), config_text, mode=0o600)
