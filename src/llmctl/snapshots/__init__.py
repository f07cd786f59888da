"""Versioned snapshots of everything llmctl manages, so that every change can be undone.

On disk, under $XDG_STATE_HOME/llmctl/snapshots/:

    20261123T153012Z-up/                 one directory per snapshot, named by its id
        manifest.json                    schema_version, id, created, reason, command,
                                         llmctl_version, config_path, config_schema_version,
                                         config_sha256, pinned, files {key: {sha256, size, mode}}
        config/llmctl.yaml               the config file (its original path is in the manifest)
        installed/systemd/user/llmctl-*.service, llmctl.target
        installed/llmctl/gateway.yaml    installed files, by their path under $XDG_CONFIG_HOME
        state/state.json                 which model each backend serves now, if recorded
    20261123T153012Z.2-switch/           a second snapshot in the same second
    .tmp-*/                              an interrupted write or delete: ignored, cleaned by take

Ids sort in time order (timestamp, then the same-second counter) and never go backwards,
even if the clock does. Secrets (gateway.env, secrets.env, keys/) are never copied. Importing
this package is cheap; what needs jinja2 or pydantic is imported when used.
"""

from __future__ import annotations

from llmctl.snapshots.capture import take
from llmctl.snapshots.diff import CURRENT, diff
from llmctl.snapshots.manifest import FileEntry, Manifest
from llmctl.snapshots.restore import restore_files, restore_plan
from llmctl.snapshots.store import (
    DEFAULT_KEEP,
    LOAD_COMMAND,
    LOAD_KEEP,
    Snapshot,
    delete,
    list_snapshots,
    load,
    pin,
    prune,
    resolve_id,
    snapshots_dir,
    unpin,
)

__all__ = [
    "CURRENT",
    "DEFAULT_KEEP",
    "LOAD_COMMAND",
    "LOAD_KEEP",
    "FileEntry",
    "Manifest",
    "Snapshot",
    "delete",
    "diff",
    "list_snapshots",
    "load",
    "pin",
    "prune",
    "resolve_id",
    "restore_files",
    "restore_plan",
    "snapshots_dir",
    "take",
    "unpin",
]
