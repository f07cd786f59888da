"""Doctor checks on files: the config loads, the model files it names are usable, the state
directory has room, and the gateway's key file is present and private."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.doctor.report import GIB, MIB, Check, human_size
from llmctl.errors import ConfigError, LlmctlError

if TYPE_CHECKING:
    from llmctl.config.load import LoadedConfig
    from llmctl.config.schema import Config
    from llmctl.paths import Paths

DISK_FAIL_BYTES = 100 * MIB  # a snapshot, a state file, a journal line: below this, writes fail
DISK_WARN_BYTES = 1 * GIB


# --- config ---------------------------------------------------------------------------------------


def check_config(path: Path) -> tuple[Check, LoadedConfig | None]:
    """The config loads (errors fail; warnings such as missing files warn)."""
    from llmctl.config.load import load_config  # noqa: PLC0415 - pydantic

    try:
        loaded = load_config(path)
    except ConfigError as err:
        missing = not path.exists()
        return (
            Check(
                "config",
                "fail",
                err.message,
                fix="llmctl init writes a starter config"
                if missing
                else "llmctl validate names each problem",
                details=tuple(err.details),
            ),
            None,
        )
    config = loaded.config
    what = f"{path}: {len(config.backends)} backends, {len(config.models)} models"
    if loaded.warnings:
        return (
            Check(
                "config",
                "warn",
                f"{what}, {len(loaded.warnings)} warning(s)",
                fix="llmctl validate --strict",
                details=tuple(w.describe() for w in loaded.warnings),
            ),
            loaded,
        )
    return Check("config", "ok", what), loaded


# --- model files ----------------------------------------------------------------------------------


def _size(path: Path, limit: int = 10_000) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for count, item in enumerate(path.rglob("*")):
        if count >= limit:
            break
        with contextlib.suppress(OSError):
            if item.is_file():
                total += item.stat().st_size
    return total


def check_models(config: Config | None, serving: dict[str, str]) -> Check:
    """Local model files exist, are readable, and (GGUF) start with the GGUF magic."""
    from llmctl.config.checks import classify_source  # noqa: PLC0415

    if config is None:
        return Check("models", "ok", "no config")
    loaded = set(serving.values()) | {m for b in config.backends.values() if (m := getattr(b, "model", None))}
    details = []
    failed: list[str] = []
    warned: list[str] = []
    for mid, model in sorted(config.models.items()):
        if not model.source or classify_source(model.source) not in ("gguf", "directory"):
            continue
        path = Path(model.source).expanduser()
        problem = None
        if not path.exists():
            problem = "does not exist"
        elif not os.access(path, os.R_OK):
            problem = "is not readable by you"
        elif path.is_file() and path.suffix.lower() == ".gguf":
            try:
                with path.open("rb") as handle:
                    if handle.read(4) != b"GGUF":
                        problem = "is not a GGUF file (no GGUF magic at its start)"
            except OSError as exc:
                problem = f"cannot be read ({exc.strerror})"
        if problem is None:
            details.append(f"{mid}: {path} ({human_size(_size(path))})")
            continue
        is_loaded = mid in loaded
        details.append(f"{mid}: {path} {problem}" + (" (a backend serves it)" if is_loaded else ""))
        (failed if is_loaded else warned).append(mid)
    if failed:
        return Check(
            "models",
            "fail",
            f"model files a backend serves are missing or unusable: {', '.join(failed)}",
            fix="fix `source:` in the config, or download the file again",
            details=tuple(details),
        )
    if warned:
        return Check(
            "models",
            "warn",
            f"model files not served now are missing or unusable: {', '.join(warned)}",
            fix="fix `source:` before switching to them",
            details=tuple(details),
        )
    return Check("models", "ok", f"{len(details)} local model file(s) present", details=tuple(details))


# --- disk, gateway key ----------------------------------------------------------------------------


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(state_dir: Path, usage: Callable[[Path], tuple[int, int, int]]) -> Check:
    where = _existing(state_dir)
    try:
        _total, _used, free = usage(where)
    except OSError as exc:
        return Check("disk", "warn", f"cannot tell the free space at {where}: {exc.strerror}")
    reason = f"{human_size(free)} free for {state_dir}"
    fix = "free some space: snapshots and state live there (llmctl snapshot list; llmctl snapshot delete ID)"
    if free < DISK_FAIL_BYTES:
        return Check("disk", "fail", reason, fix=fix)
    if free < DISK_WARN_BYTES:
        return Check("disk", "warn", reason, fix=fix)
    return Check("disk", "ok", reason)


def check_gateway_key(path: Path, *, enabled: bool, installed: bool) -> Check:
    if not enabled and not path.exists():
        return Check("gateway-key", "ok", "the gateway is disabled")
    if not path.exists():
        if installed:
            return Check(
                "gateway-key",
                "fail",
                f"{path} is missing: the installed gateway unit cannot start without it",
                fix="llmctl up writes a new key (clients then need it: llmctl gateway key)",
            )
        return Check("gateway-key", "warn", f"{path} does not exist yet", fix="llmctl up creates it")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(
            "gateway-key",
            "fail",
            f"{path} is readable by others (mode {mode:04o}); it holds the gateway's master key",
            fix=f"chmod 600 {path}",
        )
    from llmctl.secrets import read_gateway_key  # noqa: PLC0415

    try:
        read_gateway_key(path)
    except LlmctlError as err:
        return Check("gateway-key", "fail", err.message, fix=err.hint)
    return Check("gateway-key", "ok", f"{path} (mode {mode:04o})")


def check_backend_keys(paths: Paths, keyed: list[str], *, installed: set[str]) -> Check:
    """The key file of each backend started with an API key: present (once its unit is
    installed, the unit cannot start without it) and readable by this user only."""
    if not keyed:
        return Check("backend-keys", "ok", "no backend is started with an API key")
    failed: list[str] = []
    warned: list[str] = []
    details: list[str] = []
    for name in keyed:
        path = paths.backend_key_file(name)
        if not path.exists():
            (failed if name in installed else warned).append(f"{name}: {path} is missing")
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            failed.append(f"{name}: {path} is readable by others (mode {mode:04o})")
        else:
            details.append(f"{name}: {path} (mode {mode:04o})")
    if failed:
        return Check(
            "backend-keys", "fail", "; ".join(failed),
            fix="chmod 600 the file, or delete it and run llmctl up (a new key; it restarts what reads it)",
        )  # fmt: skip
    if warned:
        return Check("backend-keys", "warn", "; ".join(warned), fix="llmctl up creates them")
    return Check("backend-keys", "ok", f"{len(details)} key file(s), mode 0600", details=tuple(details))


def check_redis_password(paths: Paths, *, installed: bool) -> Check:
    """gateway.cache: the Redis password in redis.env and in the include Redis reads, both
    readable by this user only and the same (Redis and the gateway must agree)."""
    from llmctl.secrets import read_redis_password  # noqa: PLC0415

    env, auth = paths.redis_env_file, paths.redis_auth_file
    missing = [p for p in (env, auth) if not p.exists()]
    if missing:
        what = " and ".join(str(p) for p in missing)
        if installed:
            return Check(
                "redis-password",
                "fail",
                f"{what} missing: the installed llmctl-redis.service cannot start, or the gateway "
                "cannot use it",
                fix="llmctl up writes them (a new password restarts Redis and the gateway)",
            )
        return Check("redis-password", "warn", f"{what} does not exist yet", fix="llmctl up creates it")
    for path in (env, auth):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            return Check(
                "redis-password",
                "fail",
                f"{path} is readable by others (mode {mode:04o}); it holds the Redis password",
                fix=f"chmod 600 {path}",
            )
    try:
        password = read_redis_password(env)
    except LlmctlError as err:
        return Check("redis-password", "fail", err.message, fix=err.hint)
    if f"requirepass {password}" not in auth.read_text(encoding="utf-8", errors="replace").splitlines():
        return Check(
            "redis-password",
            "fail",
            f"{auth} does not hold the password of {env}: Redis and the gateway disagree",
            fix="llmctl up rewrites it from redis.env (and restarts Redis)",
        )
    return Check("redis-password", "ok", f"{env} and {auth} (mode 0600)")
