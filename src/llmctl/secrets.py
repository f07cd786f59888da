"""Keys llmctl generates: the gateway's master key, and the API keys of backends started with
one. Each is generated once, kept in a 0600 file and read by systemd.

The units read them through EnvironmentFile=, so they never appear in a unit file, an argv,
the gateway's config, a log line or `status`. `llmctl gateway key` prints the master key.
"""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

from llmctl.errors import LlmctlError
from llmctl.fsutil import atomic_write
from llmctl.paths import Paths
from llmctl.render.escape import plain_value

KEY_VARIABLE = "LITELLM_MASTER_KEY"


def _token() -> str:
    # The standard library's secrets (hashlib, hmac, random: ~5 ms) only where a key is made:
    # every probe client reads the installed keys through this module.
    import secrets  # noqa: PLC0415

    return secrets.token_urlsafe(32)


def ensure_gateway_key(path: Path) -> bool:
    """Create the key file if missing (returns True then); refuse a file others can read."""
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise LlmctlError(
                f"{path} is readable by others (mode {mode:o}); it holds the gateway's master key",
                hint=f"chmod 600 {path}",
            )
        read_gateway_key(path)
        return False
    key = "sk-" + _token()
    atomic_write(path, f"# llmctl gateway master key (mode 0600)\n{KEY_VARIABLE}={key}\n", mode=0o600)
    return True


def read_gateway_key(path: Path) -> str:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LlmctlError(
            f"no gateway key yet ({path})", hint="`llmctl up` creates it when it first starts the gateway."
        ) from None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == KEY_VARIABLE and value.strip().startswith("sk-"):
            return value.strip()
    raise LlmctlError(
        f"{path} has no {KEY_VARIABLE}=sk-... line", hint="Delete it; `llmctl up` writes a new one."
    )


# --- API keys of backends started with one (`api_key: true` on a vLLM backend) ---------------
#
# One file per backend, keys/NAME.env (mode 0600, directory 0700), holding one key under two
# names: the one the server reads (vLLM: VLLM_API_KEY) and LLMCTL_API_KEY_<NAME> for the
# gateway. The backend's unit reads the file through EnvironmentFile=; so does the gateway's,
# for every such backend, which is why its name must differ per backend (systemd cannot rename
# a variable). The key is in no unit file, argv, gateway.yaml, log or snapshot.

BACKEND_KEY_PREFIX = "LLMCTL_API_KEY_"


def gateway_variable(backend: str) -> str:
    """The variable the gateway reads a backend's key from: LLMCTL_API_KEY_<NAME>, - as _."""
    return BACKEND_KEY_PREFIX + backend.upper().replace("-", "_")


def _assignments(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return values


def _refuse_shared(path: Path, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise LlmctlError(
            f"{path} is readable by others (mode {mode:o}); it holds {what}", hint=f"chmod 600 {path}"
        )


def ensure_backend_key(path: Path, backend: str, variable: str) -> bool:
    """Create the backend's key file if missing (returns True then); refuse a file others can
    read, or one that lacks either name."""
    if path.exists():
        _refuse_shared(path, f"the API key of backend {backend}")
        read_backend_key(path, variable)
        read_backend_key(path, gateway_variable(backend))
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = "sk-" + _token()
    atomic_write(
        path,
        f"# llmctl: the API key of backend {backend} (mode 0600). The backend reads {variable},\n"
        f"# the gateway {gateway_variable(backend)}. For a new key: delete this file, `llmctl up`.\n"
        f"{variable}={key}\n{gateway_variable(backend)}={key}\n",
        mode=0o600,
    )
    return True


ROUTER_KEY_VARIABLE = "LLMCTL_ROUTER_KEY"


def ensure_router_key(path: Path) -> bool:
    """Create the key llmctl's router asks of every request (the gateway's and `llmctl
    switch`'s) if missing (returns True then); refuse a file others can read. On loopback any
    local user could otherwise load models, and so swap yours out."""
    created = not path.exists()
    if created:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(
            path,
            "# llmctl: the key the gateway and `llmctl switch` send llmctl's router (mode 0600).\n"
            "# For a new key: delete this file, `llmctl up` (it restarts the router and the gateway).\n"
            f"{ROUTER_KEY_VARIABLE}={_token()}\n",
            mode=0o600,
        )
    _refuse_shared(path, "the key of llmctl's router")
    read_router_key(path)
    return created


def read_router_key(path: Path) -> str:
    try:
        value = _assignments(path).get(ROUTER_KEY_VARIABLE, "")
    except FileNotFoundError:
        raise LlmctlError(
            f"no router key file {path}",
            hint="`llmctl up` writes it (with gateway.on_demand), and restarts what reads it.",
        ) from None
    if not value:
        raise LlmctlError(
            f"{path} has no {ROUTER_KEY_VARIABLE}=... line",
            hint="Delete it; `llmctl up` writes a new one.",
        )
    return value


def read_backend_key(path: Path, variable: str) -> str:
    try:
        value = _assignments(path).get(variable, "")
    except FileNotFoundError:
        raise LlmctlError(
            f"no API key file {path}", hint="`llmctl up` creates it for a backend with `api_key: true`."
        ) from None
    if not value:
        raise LlmctlError(
            f"{path} has no {variable}=... line", hint="Delete it; `llmctl up` writes a new one."
        )
    return value


def installed_backend_keys(paths: Paths) -> dict[str, str]:
    """{base URL: key} for the installed backend units started with an API key.

    Those are the units that read their key file (EnvironmentFile=keys/NAME.env); the URL is
    their readiness gate's --url and the key the file's. What runs is what the installed units
    say, as in `llmctl.stack.stack_from_installed` (not used here: it needs pydantic, and the
    readiness gate calls this). Best effort: a unit or a key file that cannot be read is left
    out, and the server answers that request 401.
    """
    out: dict[str, str] = {}
    try:
        units = sorted(paths.unit_dir.glob("llmctl-*.service"))
    except OSError:
        return out
    for unit in units:
        name = unit.name.removeprefix("llmctl-").removesuffix(".service")
        key_file = paths.backend_key_file(name)
        try:
            lines = unit.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        if not lines or not lines[0].startswith("# Generated by llmctl"):
            continue
        values = [(key, value) for key, _, value in (line.partition("=") for line in lines)]
        if ("EnvironmentFile", plain_value(str(key_file))) not in values:
            continue
        gate = next((value for key, value in values if key == "ExecStartPost"), "")
        try:
            words = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(gate)]
        except ValueError:
            continue
        url = next((words[i + 1] for i in range(len(words) - 1) if words[i] == "--url"), None)
        if url is None:
            continue
        try:
            out[url] = read_backend_key(key_file, gateway_variable(name))
        except (LlmctlError, OSError):
            continue
    return out


# --- the Redis password (gateway.cache) -------------------------------------------------------
#
# One password in two 0600 files, because its two readers speak different syntaxes: redis.env
# (LLMCTL_REDIS_PASSWORD=..., the gateway's EnvironmentFile=; gateway.yaml says
# `password: os.environ/LLMCTL_REDIS_PASSWORD`) is where it is kept, and redis-auth.conf
# (`requirepass ...`) is written from it for redis.conf's `include`. redis.conf itself holds no
# secret, so it can be rendered, diffed and snapshotted like gateway.yaml. Not REDIS_PASSWORD:
# LiteLLM reads REDIS_* variables as settings of every Redis client it makes.

REDIS_PASSWORD_VARIABLE = "LLMCTL_REDIS_PASSWORD"  # noqa: S105 - the variable's name, not a password


def ensure_redis_password(env_file: Path, auth_file: Path) -> bool:
    """Create the password if missing (returns True then), and the include Redis reads from
    it; refuse a file others can read. A new password reaches Redis and LiteLLM only through a
    restart of both, which `up` does when this returns True."""
    created = False
    if env_file.exists():
        _refuse_shared(env_file, "the Redis password")
    else:
        password = _token()
        atomic_write(
            env_file,
            "# llmctl: the password of llmctl-redis.service (mode 0600), for the gateway's cache.\n"
            "# For a new one: delete this file, `llmctl up` (it restarts Redis and the gateway).\n"
            f"{REDIS_PASSWORD_VARIABLE}={password}\n",
            mode=0o600,
        )
        created = True
    wanted = (
        "# llmctl: written from redis.env for redis.conf's include (mode 0600); do not edit.\n"
        f"requirepass {read_redis_password(env_file)}\n"
    )
    try:
        current = auth_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current != wanted or stat.S_IMODE(auth_file.stat().st_mode) & 0o077:
        atomic_write(auth_file, wanted, mode=0o600)
    return created


def read_redis_password(env_file: Path) -> str:
    try:
        value = _assignments(env_file).get(REDIS_PASSWORD_VARIABLE, "")
    except FileNotFoundError:
        raise LlmctlError(
            f"no Redis password yet ({env_file})", hint="`llmctl up` creates it when gateway.cache is set."
        ) from None
    # Redis's config syntax would split a password at a space or a quote.
    if not value or any(c.isspace() or c in "\"'\\" for c in value):
        raise LlmctlError(
            f"{env_file} has no usable {REDIS_PASSWORD_VARIABLE}=... line",
            hint="Delete it; `llmctl up` writes a new one.",
        )
    return value


# --- provider keys in secrets.env (`llmctl init --from-litellm` moves literal keys there) ----
#
# The gateway's unit reads secrets.env through EnvironmentFile=, so a name set there is what
# `api_key_env: NAME` (os.environ/NAME in gateway.yaml) reads. Values are written in single
# quotes, which systemd's EnvironmentFile= parser takes literally; a value that holds a quote
# or a control character is not written (the caller reports it).


def env_file_values(path: Path) -> dict[str, str]:
    """NAME -> value of the assignments in an EnvironmentFile (`export ` and quotes allowed);
    {} when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if not sep or name.lstrip().startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def env_file_writable(value: str) -> bool:
    """Whether `value` can be written as NAME='value' (no quote, no control character)."""
    return "'" not in value and not any(ord(c) < 32 or ord(c) == 127 for c in value)


def add_secrets(path: Path, values: dict[str, str], comment: str) -> None:
    """Append NAME='value' lines to secrets.env (created 0600; one others can read is refused).
    Names already set there are not touched: the caller picks new names for new values."""
    if not values:
        return
    current = ""
    if path.exists():
        _refuse_shared(path, "provider keys")
        current = path.read_text(encoding="utf-8")
        if current and not current.endswith("\n"):
            current += "\n"
    existing = env_file_values(path)
    lines = [f"# {comment}"]
    for name, value in values.items():
        if name in existing:
            raise LlmctlError(f"{path} already sets {name}; not replacing it")
        if not env_file_writable(value):
            raise LlmctlError(f"the value for {name} holds a quote or a control character")
        lines.append(f"{name}='{value}'")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, current + "\n".join(lines) + "\n", mode=0o600)
