"""Taking a snapshot: collect what llmctl manages, refuse secrets, write it crash-safely, prune.

The new snapshot is written into `.tmp-XXXX/` beside the others, every file and directory is
fsynced, and only then is it renamed to its id: after a crash there is either no snapshot or
a complete one. Leftover `.tmp-*` entries are removed at the start of the next take.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llmctl import __version__
from llmctl.errors import LlmctlError
from llmctl.fsutil import fsync_dir
from llmctl.paths import Paths
from llmctl.snapshots.manifest import (
    CONFIG_KEY,
    GENERATED_RELS,
    INSTALLED_PREFIX,
    MANIFEST_NAME,
    STATE_KEY,
    FileEntry,
    Manifest,
    is_snapshot_id,
    next_id,
)
from llmctl.snapshots.store import (
    DEFAULT_KEEP,
    LOAD_COMMAND,
    LOAD_KEEP,
    TMP_PREFIX,
    Snapshot,
    prune,
    snapshots_dir,
    write_error,
)

# A value shorter than this is too likely to occur by chance to be called a leaked secret.
MIN_SECRET_LEN = 8


def take(
    paths: Paths,
    config_path: Path | None,
    *,
    reason: str,
    command: str,
    keep: int = DEFAULT_KEEP,
    now: datetime | None = None,
    config_content: Path | None = None,
) -> Snapshot:
    """Snapshot the config, installed llmctl units, gateway file and state.json; then prune.

    config_content: read the config's text from this file instead (the copy of the config
    that produced the installed units), still recorded as config_path.

    Never copies gateway.env, secrets.env, the backends' key files or the Redis password
    files (redis.conf, which includes one, is copied: it holds none), and refuses outright if
    any copied file holds the value of a secret from them. On a write failure nothing of the
    new snapshot is left and existing snapshots are untouched. Retention keeps the newest
    `keep` unpinned snapshots plus every pinned (and every corrupt) one.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    sources = _collect(paths, config_path, config_content)
    _refuse_secrets(paths, sources)
    config = next((s for s in sources if s.key == CONFIG_KEY), None)
    root = snapshots_dir(paths)
    created = (now or datetime.now(UTC)).astimezone(UTC)
    tmp: Path | None = None
    try:
        _ensure_dir(root)
        _clean_leftovers(root)
        snapshot_id = next_id(_ids(root), created, command)
        manifest = Manifest(
            id=snapshot_id,
            created=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
            reason=reason,
            command=command,
            llmctl_version=__version__,
            config_path=str(config.origin.absolute()) if config is not None else None,
            config_schema_version=_config_version(config.data) if config is not None else None,
            config_sha256=hashlib.sha256(config.data).hexdigest() if config is not None else None,
            files={
                s.key: FileEntry(hashlib.sha256(s.data).hexdigest(), len(s.data), s.mode) for s in sources
            },
        )
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root))
        dirs = {tmp}
        for source in sources:
            target = tmp / source.key
            for parent in reversed(target.relative_to(tmp).parents[:-1]):
                if (tmp / parent) not in dirs:
                    (tmp / parent).mkdir(mode=0o700)
                    dirs.add(tmp / parent)
            _write_new(target, source.data)
        _write_new(tmp / MANIFEST_NAME, manifest.to_json().encode())
        for directory in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
            fsync_dir(directory)
        tmp.rename(root / snapshot_id)  # the commit point
        tmp = None
        fsync_dir(root)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(root, exc) from None
        raise
    snapshot = Snapshot(snapshot_id, root / snapshot_id, manifest)
    if command == LOAD_COMMAND:
        prune(paths, LOAD_KEEP, strict=False, loads=True)
    else:
        prune(paths, keep, strict=False)
    return snapshot


@dataclass(frozen=True)
class _Source:
    key: str  # where it goes in the snapshot
    origin: Path
    data: bytes
    mode: int


def _collect(paths: Paths, config_path: Path | None, config_content: Path | None = None) -> list[_Source]:
    from llmctl.install import installed_llmctl_units  # noqa: PLC0415 - pulls in jinja2 and pydantic
    from llmctl.state import state_file  # noqa: PLC0415

    wanted: list[tuple[str, Path]] = []
    if config_path is not None:
        wanted.append((CONFIG_KEY, config_content or config_path))
    for rel in installed_llmctl_units(paths.config_home):
        wanted.append((INSTALLED_PREFIX + rel, paths.config_home / rel))
    wanted += [(INSTALLED_PREFIX + rel, paths.config_home / rel) for rel in GENERATED_RELS]
    wanted.append((STATE_KEY, state_file(paths.state_dir)))
    sources = []
    for key, path in wanted:
        try:
            with path.open("rb") as handle:
                mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
                data = handle.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise LlmctlError(
                f"cannot read {path} to snapshot it: {exc.strerror}", hint="No snapshot was taken."
            ) from None
        # The config is recorded under the path it is restored to, whichever file held its text.
        origin = config_path if key == CONFIG_KEY and config_path is not None else path
        sources.append(_Source(key, origin, data, mode))
    return sources


def _secret_files(paths: Paths) -> list[Path]:
    """gateway.env, secrets.env, the backends' API key files (keys/*.env), the Redis
    password (redis.env; redis-auth.conf holds the same value) and the router's key."""
    try:
        keys = sorted(paths.backend_keys_dir.glob("*.env"))
    except OSError:
        keys = []
    return [
        paths.gateway_env_file,
        paths.secrets_env_file,
        *keys,
        paths.redis_env_file,
        paths.router_key_file,
    ]


def _secret_values(paths: Paths) -> dict[str, str]:
    """{value: "NAME in file"} for every assignment in the secret files."""
    found: dict[str, str] = {}
    for path in _secret_files(paths):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # missing (or unreadable): nothing to compare with
        for line in text.splitlines():
            name, sep, value = line.strip().removeprefix("export ").partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            if sep and not name.startswith("#") and len(value) >= MIN_SECRET_LEN:
                found[value] = f"{name.strip()} in {path}"
    return found


def _refuse_secrets(paths: Paths, sources: list[_Source]) -> None:
    for value, where in _secret_values(paths).items():
        needle = value.encode()
        for source in sources:
            if needle in source.data:
                raise LlmctlError(
                    f"{source.origin} contains the value of {where}; snapshots never hold secrets, "
                    "so none was taken",
                    hint="Keep the secret only in its file of mode 0600 and refer to it by name "
                    "(api_key_env in secrets.env; api_key: true for a backend's key), then run the "
                    "command again.",
                )


def _config_version(data: bytes) -> int | None:
    import yaml  # noqa: PLC0415

    try:
        parsed = yaml.safe_load(data)
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    version = parsed.get("version") if isinstance(parsed, dict) else None
    return version if type(version) is int else None


def _ensure_dir(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root)) from None


def _ids(root: Path) -> list[str]:
    return [entry.name for entry in root.iterdir() if is_snapshot_id(entry.name)]


def _clean_leftovers(root: Path) -> None:
    for entry in root.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    """Create one file of a new snapshot and fsync it (the write boundary tests fault)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
