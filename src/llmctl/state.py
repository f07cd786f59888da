"""State that is not in the config: which model each backend serves now.

`llmctl switch` changes what a backend serves without editing the user's config; the choice
is kept here (JSON, written atomically) and applied over the config's `model:` when
rendering. An entry whose backend or model left the config is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmctl.config.schema import Config
from llmctl.errors import LlmctlError
from llmctl.fsutil import atomic_write

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


def save_serving(state_dir: Path, serving: dict[str, str]) -> None:
    body = json.dumps({"version": STATE_VERSION, "serving": dict(sorted(serving.items()))}, indent=2)
    atomic_write(state_file(state_dir), body + "\n")


def effective_serving(config: Config, recorded: dict[str, str]) -> dict[str, str]:
    """Recorded choices that still make sense for this config (backend and model both exist)."""
    return {
        backend: model
        for backend, model in recorded.items()
        if backend in config.backends
        and config.models.get(model) is not None
        and config.models[model].backend == backend
    }


def applied_config_file(state_dir: Path) -> Path:
    """A copy of the config the installed units were rendered from (written by up/rollback).

    The snapshot taken before `up` holds this text, not the edited config, so the config and
    the units in a snapshot always belong together."""
    return state_dir / "applied-config.yaml"


def record_applied(state_dir: Path, config_text: str) -> None:
    atomic_write(applied_config_file(state_dir), config_text, mode=0o600)
