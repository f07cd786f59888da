"""The snapshot store under $XDG_STATE_HOME/llmctl/snapshots/: list, load, resolve, pin, delete.

Deleting renames first (to `.tmp-del-...`), so a snapshot never appears half-deleted;
`.tmp-*` entries are invisible to every reader and removed by the next `take`
(`llmctl.snapshots.capture`). A snapshot whose manifest cannot be trusted is listed as corrupt
with the reason, and is never deleted except by an explicit `delete`.

Nothing here takes the state lock: callers that change state (`up`, `switch`, `snapshot
create`...) already hold it, and an flock is not re-entrant across file descriptors.
"""

from __future__ import annotations

import errno
import hashlib
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from llmctl.errors import ExitCode, LlmctlError
from llmctl.fsutil import atomic_write, fsync_dir
from llmctl.paths import Paths
from llmctl.snapshots.manifest import (
    INSTALLED_PREFIX,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    is_snapshot_id,
    order_key,
)

DEFAULT_KEEP = 20
TMP_PREFIX = ".tmp-"


def snapshots_dir(paths: Paths) -> Path:
    return paths.state_dir / "snapshots"


@dataclass(frozen=True)
class Snapshot:
    """One snapshot directory; `problem` is set (and `manifest` may be None) when it is corrupt."""

    id: str
    path: Path
    manifest: Manifest | None
    problem: str | None = None

    @property
    def corrupt(self) -> bool:
        return self.problem is not None or self.manifest is None

    @property
    def pinned(self) -> bool:
        return self.manifest is not None and self.manifest.pinned

    def require(self) -> Manifest:
        if self.manifest is None or self.problem is not None:
            raise _corrupt_error(self.id, [self.problem or "no manifest"])
        return self.manifest

    def read(self, key: str) -> bytes:
        """A file's bytes, checked against the manifest's size and sha256."""
        entry = self.require().files[key]
        try:
            data = (self.path / key).read_bytes()
        except OSError as exc:
            raise _corrupt_error(self.id, [f"{key}: cannot read: {exc.strerror}"]) from None
        problem = _check(key, entry, data)
        if problem:
            raise _corrupt_error(self.id, [problem])
        return data

    def installed_keys(self) -> dict[str, str]:
        """{path relative to $XDG_CONFIG_HOME: key in the snapshot} for units and the gateway file."""
        return {
            key.removeprefix(INSTALLED_PREFIX): key
            for key in sorted(self.require().files)
            if key.startswith(INSTALLED_PREFIX)
        }

    def has(self, key: str) -> bool:
        return key in self.require().files


def list_snapshots(paths: Paths, *, verify: bool = False) -> list[Snapshot]:
    """Every snapshot, oldest first; corrupt ones are listed with `problem` set, never removed.

    Without `verify` only manifests are read; with it every file's sha256 is checked too.
    """
    root = snapshots_dir(paths)
    try:
        names = [entry.name for entry in root.iterdir() if is_snapshot_id(entry.name) and entry.is_dir()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LlmctlError(
            f"cannot read the snapshot directory {root}: {exc.strerror}",
            hint="Check that it is a directory you can read.",
        ) from None
    return [_open(root / name, verify=verify) for name in sorted(names, key=order_key)]


def load(paths: Paths, snapshot_id: str) -> Snapshot:
    """The snapshot with this exact id, every file verified; LlmctlError says what is wrong."""
    snapshot = _open(_existing(paths, snapshot_id))
    if snapshot.manifest is None:
        raise _corrupt_error(snapshot.id, [snapshot.problem or f"no {MANIFEST_NAME}"])
    problems = _verify(snapshot.path, snapshot.manifest)
    if problems:
        raise _corrupt_error(snapshot.id, problems)
    return snapshot


def resolve_id(paths: Paths, ref: str) -> str:
    """An exact id, a unique prefix of one, `latest`, or `previous` (the one before the latest).

    `latest` and `previous` skip snapshots whose manifest is corrupt (for show and diff); a
    plain rollback does not: it refuses a corrupt newest snapshot (llmctl.recovery).
    """
    snapshots = list_snapshots(paths)
    if ref in ("latest", "previous"):
        usable = [s for s in snapshots if not s.corrupt]
        wanted = 1 if ref == "latest" else 2
        if len(usable) < wanted:
            message = "there are no snapshots yet"
            if usable:
                message = "there is only one usable snapshot, no previous one"
            raise LlmctlError(
                message,
                hint="`llmctl snapshot create -m MESSAGE` takes one; up, switch and rollback take them too.",
                exit_code=ExitCode.USAGE,
            )
        return usable[-wanted].id
    ids = [s.id for s in snapshots]
    if ref in ids:
        return ref
    matches = [i for i in ids if ref and i.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LlmctlError(
            f"no snapshot matches {ref!r}",
            hint="`llmctl snapshot list` shows the ids; `latest` and `previous` work too.",
            exit_code=ExitCode.USAGE,
        )
    raise LlmctlError(
        f"{ref!r} matches {len(matches)} snapshots",
        details=matches,
        hint="Give more of the id.",
        exit_code=ExitCode.USAGE,
    )


def pin(paths: Paths, snapshot_id: str) -> Snapshot:
    """Keep this snapshot whatever retention says."""
    return _set_pinned(paths, snapshot_id, pinned=True)


def unpin(paths: Paths, snapshot_id: str) -> Snapshot:
    return _set_pinned(paths, snapshot_id, pinned=False)


def delete(paths: Paths, snapshot_id: str, *, force: bool = False) -> None:
    """Remove a snapshot (a corrupt one too); a pinned one only with force."""
    path = _existing(paths, snapshot_id)
    snapshot = _open(path)
    if snapshot.pinned and not force:
        raise LlmctlError(
            f"snapshot {snapshot_id} is pinned",
            hint=f"`llmctl snapshot unpin {snapshot_id}` first, or delete it with --force.",
        )
    try:
        _remove(path)
    except OSError as exc:
        raise LlmctlError(f"cannot delete snapshot {snapshot_id} in {path.parent}: {exc.strerror}") from None


# Snapshots taken by llmctl's router before a load on demand (command "load") are kept apart:
# they come many an hour, and must not push the user's own (before `up`, `switch`) out.
LOAD_COMMAND = "load"
LOAD_KEEP = 5


def prune(paths: Paths, keep: int, *, strict: bool = True, loads: bool = False) -> list[str]:
    """Delete all but the newest `keep` unpinned, intact snapshots; returns the ids deleted.
    With `loads`, only among the router's load snapshots; without, only among the others.

    Pinned and corrupt snapshots are never deleted here. Without `strict`, a snapshot that
    cannot be deleted is left for the next time instead of failing the caller.
    """
    try:
        snapshots = list_snapshots(paths)
    except LlmctlError:
        if strict:
            raise
        return []
    candidates = [
        s
        for s in snapshots
        if not s.corrupt
        and not s.pinned
        and s.manifest is not None
        and (s.manifest.command == LOAD_COMMAND) == loads
    ]
    deleted = []
    for snapshot in candidates[: max(len(candidates) - keep, 0)]:
        try:
            _remove(snapshot.path)
        except OSError as exc:
            if strict:
                raise LlmctlError(f"cannot delete snapshot {snapshot.id}: {exc.strerror}") from None
            continue
        deleted.append(snapshot.id)
    return deleted


# --- internals --------------------------------------------------------------------------------


def _remove(path: Path) -> None:
    """Take the snapshot out of sight in one rename, then delete it at leisure."""
    trash = path.with_name(f"{TMP_PREFIX}del-{path.name}-{secrets.token_hex(4)}")
    path.rename(trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _existing(paths: Paths, snapshot_id: str) -> Path:
    path = snapshots_dir(paths) / snapshot_id
    if not is_snapshot_id(snapshot_id) or not path.is_dir():
        raise LlmctlError(
            f"no snapshot {snapshot_id!r}",
            hint="`llmctl snapshot list` shows the ids.",
            exit_code=ExitCode.USAGE,
        )
    return path


def _open(path: Path, *, verify: bool = False) -> Snapshot:
    try:
        text = (path / MANIFEST_NAME).read_text(encoding="utf-8")
        manifest = Manifest.from_json(text, expected_id=path.name)
    except FileNotFoundError:
        return Snapshot(path.name, path, None, f"{MANIFEST_NAME} is missing")
    except UnicodeDecodeError:
        return Snapshot(path.name, path, None, f"{MANIFEST_NAME} is not UTF-8 text")
    except OSError as exc:
        return Snapshot(path.name, path, None, f"cannot read {MANIFEST_NAME}: {exc.strerror}")
    except ManifestError as exc:
        return Snapshot(path.name, path, None, str(exc))
    if verify:
        problems = _verify(path, manifest)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return Snapshot(path.name, path, manifest, problems[0] + more)
    return Snapshot(path.name, path, manifest)


def _check(key: str, entry: FileEntry, data: bytes) -> str | None:
    if len(data) != entry.size:
        return f"{key}: {len(data)} bytes, the manifest says {entry.size}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        return f"{key}: sha256 {digest[:12]}… does not match the manifest's {entry.sha256[:12]}…"
    return None


def _verify(path: Path, manifest: Manifest) -> list[str]:
    problems = []
    for key, entry in sorted(manifest.files.items()):
        try:
            data = (path / key).read_bytes()
        except FileNotFoundError:
            problems.append(f"{key}: missing")
            continue
        except OSError as exc:
            problems.append(f"{key}: cannot read: {exc.strerror}")
            continue
        problem = _check(key, entry, data)
        if problem:
            problems.append(problem)
    return problems


def _set_pinned(paths: Paths, snapshot_id: str, *, pinned: bool) -> Snapshot:
    path = _existing(paths, snapshot_id)
    snapshot = _open(path)
    manifest = snapshot.require()
    if manifest.pinned == pinned:
        return snapshot
    updated = manifest.with_pinned(pinned)
    try:
        atomic_write(path / MANIFEST_NAME, updated.to_json(), mode=0o600)
    except OSError as exc:
        raise write_error(path, exc, action="update the manifest in") from None
    return Snapshot(snapshot.id, path, updated)


def _corrupt_error(snapshot_id: str, problems: list[str]) -> LlmctlError:
    return LlmctlError(
        f"snapshot {snapshot_id} is corrupt: {problems[0]}"
        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
        details=problems if len(problems) > 1 else [],
        hint="It is kept as it is: use another one (llmctl snapshot list), "
        f"or `llmctl snapshot delete {snapshot_id}`.",
    )


_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a file is in the way where a directory should be",
}


def write_error(directory: Path, exc: OSError, *, action: str = "write a snapshot in") -> LlmctlError:
    cause = _CAUSES.get(exc.errno or 0, exc.strerror or str(exc))
    untouched = "Existing snapshots and the installed units were not touched."
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"Free space there, or delete snapshots you do not need (llmctl snapshot list). {untouched}"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"Make {directory} writable by you, or set XDG_STATE_HOME to a writable place. {untouched}"
    elif exc.errno == errno.ENOTDIR:
        hint = f"Move away the file at {exc.filename or directory}. {untouched}"
    else:
        hint = untouched
    return LlmctlError(
        f"cannot {action} {directory}: {cause}",
        hint=hint,
        details=[f"{exc.filename}: {exc.strerror}"] if exc.filename and exc.strerror else [],
    )
