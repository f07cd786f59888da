"""Integration-test plumbing: a real systemd user manager and the provisioned servers.

Every test under tests/integration/ is marked ``integration``. The tests need

* a systemd user manager that answers ``systemctl --user``: run them under
  ``scripts/with-user-manager --as-user llmctl-test -- .venv/bin/pytest tests/integration``, as
  scripts/test does (started by root: a private manager, journal and XDG_CONFIG_HOME that are
  thrown away afterwards; the manager and the tests run as that ordinary user, as on a
  desktop). Without --as-user they run as root, in a manager named like root's own
  user@0.service; only test_as_user.py (skipped then) and the harness's own tests of
  scripts/with-user-manager (skipped as an ordinary user) differ;
* for the server tests, the builds from ``scripts/provision`` (llama-server, llama-cpp-python,
  LiteLLM), found through its ``provision.env``.

When either is missing the tests are skipped, except in CI (``CI`` set) or with
``LLMCTL_REQUIRE_INTEGRATION=1``, where they fail: a green run must not hide that nothing ran.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from llmctl.smoke_model import write_smoke_model

INTEGRATION_DIR = Path(__file__).resolve().parent
REPO = INTEGRATION_DIR.parents[1]
WITH_USER_MANAGER = REPO / "scripts" / "with-user-manager"

# The integration tests run llmctl as users install it (issue 13): the wheel of this checkout,
# built fresh each session and installed with pipx into this session's own PIPX_HOME (never
# ~/.local). Units that `up` writes then run the pipx venv's python (RenderOptions.llmctl_argv
# is the running llmctl's sys.executable), and templates, runbooks and the gateway child are
# read from the installed wheel: a file missing from the wheel fails the suite. The path is
# fixed at import (one per pytest process) so modules can build argv lists from it; the
# autouse fixture `installed_wheel` installs it before the first test that needs it.
INSTALL_ROOT = Path(tempfile.gettempdir()) / f"llmctl-wheel.{os.getpid()}"
PIPX_HOME = INSTALL_ROOT / "pipx"
PIPX_BIN_DIR = INSTALL_ROOT / "bin"
LLMCTL = [str(PIPX_BIN_DIR / "llmctl")]  # the installed entry point: `[*LLMCTL, "up"]`
LLMCTL_VENV = PIPX_HOME / "venvs" / "llmctl"
LLMCTL_PYTHON = LLMCTL_VENV / "bin" / "python"  # the interpreter the rendered units name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only ours: filter by path.
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _build_and_install_wheel() -> Path:
    """`pip wheel` of the checkout, then `pipx install` of that wheel; returns the wheel."""
    shutil.rmtree(INSTALL_ROOT, ignore_errors=True)
    dist = INSTALL_ROOT / "dist"
    # --no-build-isolation: hatchling is in the dev extras, so the build needs no index (2 s).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(dist), str(REPO)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("llmctl-*.whl")
    env = {
        **os.environ,
        "PIPX_HOME": str(PIPX_HOME),
        "PIPX_BIN_DIR": str(PIPX_BIN_DIR),
        "PIPX_MAN_DIR": str(INSTALL_ROOT / "man"),
    }
    # The dependencies come from PyPI through pip's cache (about 15 s once cached).
    subprocess.run(
        [sys.executable, "-m", "pipx", "install", "--quiet", str(wheel)],
        check=True, timeout=600, env=env,
    )  # fmt: skip
    return wheel


@pytest.fixture(scope="session")
def installed_llmctl() -> Iterator[Path]:
    """The wheel of this checkout, pipx-installed at LLMCTL (once per session); yields the wheel."""
    t0 = time.monotonic()
    try:
        wheel = _build_and_install_wheel()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as exc:
        pytest.fail(f"could not build and pipx-install the llmctl wheel: {exc}", pytrace=False)
    print(f"installed {wheel.name} with pipx at {LLMCTL[0]} in {time.monotonic() - t0:.1f}s")
    yield wheel
    shutil.rmtree(INSTALL_ROOT, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def installed_wheel(installed_llmctl: Path) -> None:
    """Every integration module runs the pipx-installed wheel: it is there before the first test."""


def integration_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("LLMCTL_REQUIRE_INTEGRATION") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when integration tests are required to run (CI)."""
    if integration_required():
        pytest.fail(f"{reason} [required here: CI or LLMCTL_REQUIRE_INTEGRATION=1]", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class UserManager:
    """The systemd user manager the tests drive with ``systemctl --user``."""

    state: str  # what is-system-running answered: running | degraded
    runtime_dir: Path  # XDG_RUNTIME_DIR: its private socket lives here
    config_home: Path  # XDG_CONFIG_HOME the manager and the tests share
    unit_dir: Path  # $XDG_CONFIG_HOME/systemd/user: where user units are installed (exists)

    def forget_llmctl_units(self) -> None:
        """After a test's `llmctl down`: remove every llmctl unit file and make the manager
        forget them (and their failed states), so the next test starts from nothing."""
        for unit in self.unit_dir.glob("llmctl*"):
            unit.unlink()
        subprocess.run(["systemctl", "--user", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "--user", "reset-failed"], check=False)


@contextmanager
def stack_up(
    run: Callable[..., subprocess.CompletedProcess[str]], user_manager: UserManager
) -> Iterator[None]:
    """`llmctl up` through `run` (it must succeed); afterwards, whatever happened, `llmctl down`
    and a manager that has forgotten the units."""
    try:
        up = run("up")
        assert up.returncode == 0, up.stderr
        yield
    finally:
        run("down")
        user_manager.forget_llmctl_units()


@pytest.fixture(scope="session")
def user_manager() -> UserManager:
    hint = (
        "run them under scripts/with-user-manager --as-user llmctl-test -- .venv/bin/pytest tests/integration"
    )
    try:
        proc = subprocess.run(
            ["systemctl", "--user", "is-system-running"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"no systemd user manager ({exc}); {hint}")
    state = proc.stdout.strip()
    if state not in ("running", "degraded"):
        detail = state or proc.stderr.strip() or f"exit {proc.returncode}"
        unavailable(f"no systemd user manager answers `systemctl --user` ({detail}); {hint}")
    # A desktop session's manager would do, but the tests would install units into the real
    # ~/.config/systemd/user: only with an explicit opt-in.
    private = os.environ.get("LLMCTL_PRIVATE_USER_MANAGER") == "1"
    if not private and os.environ.get("LLMCTL_INTEGRATION_USE_MY_MANAGER") != "1":
        unavailable(
            "refusing to install test units into your own user manager; "
            f"{hint} (or set LLMCTL_INTEGRATION_USE_MY_MANAGER=1)"
        )
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime_dir:
        unavailable(f"XDG_RUNTIME_DIR is not set; {hint}")
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    unit_dir = config_home / "systemd" / "user"
    unit_dir.mkdir(parents=True, exist_ok=True)
    return UserManager(state, Path(runtime_dir), config_home, unit_dir)


def provision_env_path() -> Path:
    """Where scripts/provision writes provision.env (same rule as the script)."""
    if cache := os.environ.get("LLMCTL_DEV_CACHE"):
        return Path(cache) / "provision.env"
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "llmctl-dev" / "provision.env"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse [export ]KEY=VALUE lines written with bash's printf %q (comments, blanks ignored)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        words = shlex.split(raw)
        values[key.strip().removeprefix("export ").strip()] = words[0] if words else ""
    return values


@dataclass(frozen=True)
class Provisioned:
    """What scripts/provision built, as absolute paths (all checked to exist)."""

    llama_server: Path  # llama.cpp's llama-server binary
    llama_cpp_python: Path  # a python that can run `-m llama_cpp.server`
    litellm: Path  # the LiteLLM proxy's `litellm` entry point
    env: Mapping[str, str]  # every key of provision.env, for anything else it records


@pytest.fixture(scope="session")
def provisioned() -> Provisioned:
    path = provision_env_path()
    if not path.is_file():
        unavailable(f"{path} not found: run scripts/provision (builds llama.cpp and LiteLLM)")
    env = read_env_file(path)
    found: dict[str, Path] = {}
    for field, key in (
        ("llama_server", "LLMCTL_TEST_LLAMA_SERVER"),
        ("llama_cpp_python", "LLMCTL_TEST_LLAMA_CPP_PYTHON"),
        ("litellm", "LLMCTL_TEST_LITELLM"),
    ):
        value = env.get(key, "")
        if not value:
            unavailable(f"{path} has no {key}: re-run scripts/provision")
        if not os.access(value, os.X_OK):
            unavailable(f"{key}={value} from {path} is not an executable: re-run scripts/provision")
        found[field] = Path(value)
    return Provisioned(found["llama_server"], found["llama_cpp_python"], found["litellm"], env)


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default smoke model (2 layers, random f32 weights: it loads fast and talks noise)."""
    return write_smoke_model(tmp_path_factory.mktemp("smoke-model") / "smoke.gguf")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def json_result(stdout: str) -> Any:
    """What a `--json` command found: its `data` when ok, else its `error.report` (an unhealthy
    status's units, a failing doctor's checks): the envelope never carries both."""
    envelope = json.loads(stdout)
    return envelope["data"] if envelope["ok"] else envelope["error"]["report"]


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """``free_port()`` for tests, without importing from conftest: call it once per port."""
    return free_port


@pytest.fixture(scope="module", autouse=True)
def private_state_per_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test module gets its own $XDG_STATE_HOME: llmctl's records (which model a backend
    serves after a switch, snapshots, the supervisor's history) must not leak from one module's
    stack into the next one's, which may use the same backend names. The unit directory stays
    the manager's (it reads units from there)."""
    state = tmp_path_factory.mktemp("state")
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state)
    yield state
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous
