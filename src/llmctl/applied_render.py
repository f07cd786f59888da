"""What the last `up` rendered and installed, so that `up NAME` can start a unit without it.

A full `up` loads the config (pydantic's schema ~100 ms to build), renders every file (jinja2)
and compares them with the installed ones, before it starts anything: most of an `up NAME`
whose files are all in place already. So every `up` records, once its files are installed:

* the inputs its render read besides the config: llmctl's version and the files of its
  package (templates, adapters), the interpreter the units run llmctl with, PATH and HOME (the
  commands it resolved, `~` in paths), the config's path, $XDG_CONFIG_HOME, and state.json
  (what `switch` chose);
* the hash of the config text and of every file it rendered;
* the stack's units as `llmctl.stack` describes them, and the secret files they need;
* the config's warnings (an `up` repeats them).

`current()` hands the record back only when every one of those still holds, read afresh: a
stale record can never start a unit from files the config would not render now. Any
difference (an edited config, a switch, a rollback, an upgrade, a hand-edited unit, another
PATH) returns None, and the caller runs the full `up`, which records again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl import __version__
from llmctl.executables import resolve_executable
from llmctl.fsutil import atomic_write
from llmctl.install import installed_llmctl_units
from llmctl.render.names import templates_dir
from llmctl.stack import StackUnit
from llmctl.state import applied_config_file, state_file

if TYPE_CHECKING:
    from llmctl.paths import Paths

RECORD_FILE = "applied-render.json"
RECORD_VERSION = 1


@dataclass(frozen=True)
class AppliedRender:
    units: list[StackUnit]
    warnings: list[str]


def record_file(state_dir: Path) -> Path:
    return state_dir / RECORD_FILE


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except OSError:
        return None


def _code_fingerprint() -> str:
    """Name, size and mtime of every file of llmctl's package and of its unit templates: an
    edited template or adapter (an editable install, an upgrade in place) renders otherwise."""
    entries = []
    for root in {Path(__file__).resolve().parent, templates_dir()}:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith((".py", ".j2", ".md", ".json")):
                    st = (Path(dirpath) / name).stat()
                    entries.append(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}")
    return _sha256("\n".join(sorted(entries)).encode())


def _inputs(paths: Paths, config_path: Path) -> dict[str, str]:
    return {
        "llmctl": __version__,
        "code": _code_fingerprint(),
        "python": sys.executable,
        "path": os.environ.get("PATH", ""),
        "home": os.environ.get("HOME", ""),
        "config": str(config_path.resolve()),
        "config_home": str(paths.config_home),
    }


def _commands(units: list[StackUnit]) -> dict[str, str | None]:
    resolved = (resolve_executable(u.command) if u.command else None for u in units)
    return {u.command: (str(path) if path else None) for u, path in zip(units, resolved, strict=True)}


def write(
    paths: Paths,
    *,
    config_path: Path,
    config_text: str,
    files: dict[str, str],
    units: list[StackUnit],
    secret_files: list[Path],
    warnings: list[str],
) -> None:
    """Record an `up` whose `files` (path under $XDG_CONFIG_HOME -> text) were just installed."""
    body = {
        "version": RECORD_VERSION,
        "inputs": _inputs(paths, config_path),
        "config_sha256": _sha256(config_text.encode("utf-8")),
        "state_sha256": _file_sha256(state_file(paths.state_dir)),
        "files": {rel: _sha256(text.encode("utf-8")) for rel, text in sorted(files.items())},
        "commands": _commands(units),
        "secret_files": sorted(str(p) for p in secret_files),
        "units": [{**asdict(u), "model_file": str(u.model_file) if u.model_file else None} for u in units],
        "warnings": warnings,
    }
    atomic_write(record_file(paths.state_dir), json.dumps(body, indent=1) + "\n", mode=0o600)


def current(paths: Paths, config_path: Path) -> AppliedRender | None:
    """The last `up`'s record, if the config, the installed files and every other input of its
    render are still what they were; None otherwise (or when there is none)."""
    try:
        body = json.loads(record_file(paths.state_dir).read_text())
        if body.get("version") != RECORD_VERSION or body["inputs"] != _inputs(paths, config_path):
            return None
        config = config_path.read_bytes()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    applied = _file_sha256(applied_config_file(paths.state_dir))
    if not (_sha256(config) == applied == body["config_sha256"]):
        return None
    if _file_sha256(state_file(paths.state_dir)) != body["state_sha256"]:
        return None
    files: dict[str, str] = body["files"]
    if any(_file_sha256(paths.config_home / rel) != sha for rel, sha in files.items()):
        return None
    if any(rel not in files for rel in installed_llmctl_units(paths.config_home)):
        return None  # an llmctl unit the render did not write: `up` would remove it
    if not all(Path(p).exists() for p in body["secret_files"]):
        return None  # `up` would create it (a key file removed since)
    try:
        units = [_unit(u) for u in body["units"]]
    except (KeyError, TypeError, ValueError):
        return None
    if _commands(units) != body["commands"]:
        return None  # a command resolves elsewhere now (or no longer): the unit would differ
    return AppliedRender(units=units, warnings=[str(w) for w in body["warnings"]])


def _unit(data: dict[str, Any]) -> StackUnit:
    return StackUnit(
        name=str(data["name"]),
        unit=str(data["unit"]),
        kind=str(data["kind"]),
        host=str(data["host"]),
        port=int(data["port"]),
        model=None if data["model"] is None else str(data["model"]),
        models=tuple(str(m) for m in data["models"]),
        start_timeout=int(data["start_timeout"]),
        command=str(data["command"]),
        model_file=Path(data["model_file"]) if data["model_file"] else None,
        companions=tuple(str(c) for c in data["companions"]),
    )
