"""`llmctl snapshot diff`: what differs between two snapshots, or a snapshot and what is installed.

Each side is a view: {label: text} with the config (`config/llmctl.yaml`), every unit and
the gateway file (by their path under $XDG_CONFIG_HOME) and `active-models`, the serving
choices from state.json as `backend: model` lines. One unified diff per label that differs.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Final, Literal

from llmctl.errors import LlmctlError
from llmctl.paths import Paths
from llmctl.snapshots.manifest import CONFIG_KEY, GATEWAY_REL, GENERATED_RELS, STATE_KEY
from llmctl.snapshots.store import Snapshot

CURRENT: Final = "current"
ACTIVE_MODELS = "active-models"


def active_models(state: bytes | None) -> str:
    """state.json's serving choices as sorted `backend: model` lines ("" when there is none)."""
    if state is None:
        return ""
    try:
        data = json.loads(state)
    except ValueError:
        return "(state.json is not valid JSON)\n"
    serving = data.get("serving") if isinstance(data, dict) else None
    if not isinstance(serving, dict):
        return "(state.json has no serving table)\n"
    return "".join(f"{backend}: {model}\n" for backend, model in sorted(serving.items()))


def snapshot_view(snapshot: Snapshot) -> dict[str, str]:
    view: dict[str, str] = {}
    if snapshot.has(CONFIG_KEY):
        view[CONFIG_KEY] = _text(snapshot.read(CONFIG_KEY))
    for rel, key in snapshot.installed_keys().items():
        view[rel] = _text(snapshot.read(key))
    view[ACTIVE_MODELS] = active_models(snapshot.read(STATE_KEY) if snapshot.has(STATE_KEY) else None)
    return view


def current_view(paths: Paths, config_path: Path | None) -> dict[str, str]:
    from llmctl.install import installed_llmctl_units  # noqa: PLC0415 - pulls in jinja2 and pydantic
    from llmctl.state import state_file  # noqa: PLC0415

    view: dict[str, str] = {}
    config = _read(config_path) if config_path is not None else None
    if config is not None:
        view[CONFIG_KEY] = _text(config)
    view.update(installed_llmctl_units(paths.config_home))
    for rel in GENERATED_RELS:
        generated = _read(paths.config_home / rel)
        if generated is not None:
            view[rel] = _text(generated)
    view[ACTIVE_MODELS] = active_models(_read(state_file(paths.state_dir)))
    return view


def diff(
    paths: Paths,
    a: Snapshot,
    b: Snapshot | Literal["current"],
    *,
    config_path: Path | None = None,
) -> str:
    """Unified diffs from a to b ("" when they hold the same). For b = "current", the config
    compared is config_path, else the one a was taken from."""
    old = snapshot_view(a)
    if isinstance(b, Snapshot):
        new, new_name = snapshot_view(b), b.id
    else:
        recorded = a.require().config_path
        where = config_path or (Path(recorded) if recorded else None)
        new, new_name = current_view(paths, where), CURRENT
    return "".join(
        _unified(old.get(label), new.get(label), f"{a.id}/{label}", f"{new_name}/{label}")
        for label in sorted(old.keys() | new.keys(), key=_order)
    )


def _order(label: str) -> tuple[int, str]:
    rank = {CONFIG_KEY: 0, GATEWAY_REL: 2, ACTIVE_MODELS: 3}
    return rank.get(label, 1), label


def _unified(old: str | None, new: str | None, old_name: str, new_name: str) -> str:
    if old == new:
        return ""
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True),
        (new or "").splitlines(keepends=True),
        fromfile=old_name if old is not None else "/dev/null",
        tofile=new_name if new is not None else "/dev/null",
    )
    marker = "\n\\ No newline at end of file\n"
    return "".join(line if line.endswith("\n") else line + marker for line in lines)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise LlmctlError(f"cannot read {path}: {exc.strerror}") from None


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
