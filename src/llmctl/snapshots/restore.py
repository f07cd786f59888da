"""Putting a snapshot's files back: the plan (for a dry run or a prompt) and the writes.

No systemctl here: the caller stops what must stop, restores, runs daemon-reload and starts
what must start. `FileChange.path` is relative to $XDG_CONFIG_HOME like everywhere else,
except for files outside it (state.json, a config kept elsewhere), whose path is absolute;
`config_home / change.path` gives the target either way.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.errors import LlmctlError
from llmctl.fsutil import atomic_write, fsync_dir
from llmctl.paths import Paths
from llmctl.snapshots.manifest import CONFIG_KEY, GENERATED_RELS, STATE_KEY
from llmctl.snapshots.store import Snapshot

if TYPE_CHECKING:
    from llmctl.install import FileChange


@dataclass(frozen=True)
class _Item:
    label: str  # FileChange.path
    target: Path
    key: str | None  # in the snapshot; None: the snapshot has no such file, so remove it


def restore_plan(
    paths: Paths, snapshot: Snapshot, *, config_path: Path | None = None, include_config: bool = True
) -> list[FileChange]:
    """Every file a restore would consider, with what it would do to it (UNCHANGED included).

    The config goes back to config_path, else to where it was taken from. Files the snapshot
    does not hold are removed: llmctl units installed since, the gateway file, state.json.
    A snapshot without a config leaves the config alone.
    """
    from llmctl.install import ChangeKind, FileChange  # noqa: PLC0415 - pulls in jinja2 and pydantic

    changes = []
    for item in _items(paths, snapshot, config_path, include_config):
        old = _read(item.target)
        new = snapshot.read(item.key) if item.key is not None else None
        if new is None:
            if old is None:
                continue
            kind = ChangeKind.REMOVED
        elif old is None:
            kind = ChangeKind.ADDED
        else:
            kind = ChangeKind.UNCHANGED if old == new else ChangeKind.CHANGED
        changes.append(FileChange(item.label, kind, _text(old), _text(new)))
    return changes


def restore_files(
    paths: Paths, snapshot: Snapshot, *, config_path: Path | None = None, include_config: bool = True
) -> list[FileChange]:
    """Write the snapshot's files back (each atomically, with its recorded mode) and remove the
    llmctl files it does not hold. Returns the changes made (UNCHANGED left out).

    Every file is read and verified before the first write, so a corrupt snapshot changes
    nothing. A failure part-way names the file and lists what was already restored.
    """
    from llmctl.install import ChangeKind  # noqa: PLC0415

    manifest = snapshot.require()
    items = {item.label: item for item in _items(paths, snapshot, config_path, include_config)}
    plan = restore_plan(paths, snapshot, config_path=config_path, include_config=include_config)
    plan = [c for c in plan if c.kind != ChangeKind.UNCHANGED]
    payload = {c.path: snapshot.read(key) for c in plan if (key := items[c.path].key) is not None}
    done: list[FileChange] = []
    # Writes first, removals last: an interrupted restore never leaves fewer files than before.
    for change in sorted(plan, key=lambda c: c.kind == ChangeKind.REMOVED):
        item = items[change.path]
        try:
            if item.key is None:
                item.target.unlink(missing_ok=True)
                fsync_dir(item.target.parent)
            else:
                atomic_write(item.target, payload[change.path], mode=manifest.files[item.key].mode)
        except OSError as exc:
            raise LlmctlError(
                f"cannot restore {item.target}: {_cause(exc)}",
                details=[f"already restored: {c.path}" for c in done],
                hint="Each file was written atomically (old or new, never half); fix the cause "
                "and restore again.",
            ) from None
        done.append(change)
    return done


def _items(
    paths: Paths, snapshot: Snapshot, config_path: Path | None, include_config: bool = True
) -> list[_Item]:
    from llmctl.install import installed_llmctl_units  # noqa: PLC0415
    from llmctl.state import state_file  # noqa: PLC0415

    manifest = snapshot.require()
    held = snapshot.installed_keys()
    items = [_Item(rel, paths.config_home / rel, key) for rel, key in held.items()]
    installed = [*installed_llmctl_units(paths.config_home), *GENERATED_RELS]
    items += [_Item(rel, paths.config_home / rel, None) for rel in installed if rel not in held]
    state = state_file(paths.state_dir)
    items.append(_Item(str(state), state, STATE_KEY if snapshot.has(STATE_KEY) else None))
    # Without the config: undo a failed `up` but keep the edit the user is fixing.
    if include_config and snapshot.has(CONFIG_KEY):
        target = config_path or Path(manifest.config_path or "")
        # Through a symlink (a config kept in a dotfiles repo), not over it.
        items.append(_Item(_label(paths, target), target.resolve(), CONFIG_KEY))
    return items


def _label(paths: Paths, target: Path) -> str:
    try:
        return target.relative_to(paths.config_home).as_posix()
    except ValueError:
        return str(target)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise LlmctlError(f"cannot read {path}: {exc.strerror}") from None


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def _cause(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)
