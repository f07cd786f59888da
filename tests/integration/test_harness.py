"""The integration harness itself: the private user manager, its journal, and the real servers.

If these fail, every other integration test is suspect; they say what the environment is.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from llmctl.smoke_model import SmokeShape, write_smoke_model
from tests.integration.conftest import (
    WITH_USER_MANAGER,
    Provisioned,
    UserManager,
    read_env_file,
    unavailable,
)


def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", "--user", *args], capture_output=True, text=True, timeout=60, check=check
    )


def journal(unit: str, *args: str) -> str:
    """A unit's log lines, as a desktop user reads them: `journalctl --user-unit`
    (_SYSTEMD_USER_UNIT: the manager runs in user@UID.service; USER_UNIT: its own messages)."""
    proc = subprocess.run(
        ["journalctl", "--no-pager", "-o", "cat", *args, "--user-unit", f"{unit}.service"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout


def journal_entries(*args: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["journalctl", "--no-pager", "-o", "json", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def transient_service(prefix: str, argv: list[str]) -> Iterator[str]:
    """Run argv as a transient user service; stop it (and forget it) afterwards."""
    unit = unique(prefix)
    # Type=exec: systemd-run returns once the binary was executed, and fails if it could not be.
    systemctl_run = ["systemd-run", "--user", "--quiet", "--unit", unit, "-p", "Type=exec"]
    subprocess.run([*systemctl_run, "--", *argv], check=True, timeout=60)
    try:
        yield unit
    finally:
        systemctl("stop", f"{unit}.service", check=False)
        systemctl("reset-failed", f"{unit}.service", check=False)


def wait_http_200(client: httpx.Client, path: str, unit: str, timeout: float) -> httpx.Response:
    """Poll GET path until 200; fail early, with the unit's log, if the unit stops."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        state = systemctl("is-active", f"{unit}.service", check=False).stdout.strip()
        if state not in ("active", "activating"):
            pytest.fail(f"{unit} is {state} before {path} answered 200; log:\n{journal(unit)}")
        try:
            response = client.get(path)
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code == 200:
                return response
            last = f"{response.status_code} {response.text[:200]}"
        time.sleep(0.1)
    pytest.fail(f"{path} not 200 within {timeout}s (last: {last}); log:\n{journal(unit)}")


def assert_port_free(port: int) -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # raises if the port is still taken


def chat(client: httpx.Client) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}
    return client.post("/v1/chat/completions", json=body, timeout=60)


# --- the private user manager ------------------------------------------------------------------


def test_transient_unit_runs_in_the_manager_and_logs_to_the_journal(
    user_manager: UserManager,
) -> None:
    marker = unique("hello-from-the-harness")
    script = f'echo {marker}; echo "config=$XDG_CONFIG_HOME"'
    with transient_service("harness-echo", ["/bin/sh", "-c", f"{script}; sleep 60"]) as unit:
        cgroup = systemctl("show", "-p", "ControlGroup", "--value", f"{unit}.service").stdout
        assert cgroup.strip().endswith(f"/app.slice/{unit}.service")
        wait_for(f"{marker} in the journal", lambda: marker in journal(unit), timeout=10)
        # Filed as on a desktop, whether the harness runs the manager as root or as an ordinary
        # user: under the user unit, with the user manager as the system unit, and our uid.
        uid = os.geteuid()
        said = [e for e in journal_entries(f"MESSAGE={marker}") if e.get("_SYSTEMD_USER_UNIT")]
        assert said, journal_entries(f"MESSAGE={marker}")
        assert {(e["_SYSTEMD_USER_UNIT"], e["_SYSTEMD_UNIT"], e["_UID"]) for e in said} == {
            (f"{unit}.service", f"user@{uid}.service", str(uid))
        }
        assert marker not in subprocess.run(
            ["journalctl", "--no-pager", "-o", "cat", "-u", f"{unit}.service"],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout  # fmt: skip
        if uid != 0:
            # An ordinary user's lines are in their own journal file, which --user reads.
            assert marker in journal(unit, "--user")
        # The manager hands its own XDG_CONFIG_HOME (the private one) to its services.
        assert f"config={user_manager.config_home}" in journal(unit)
    assert systemctl("is-active", f"{unit}.service", check=False).stdout.strip() != "active"


def test_units_come_from_private_config_home(user_manager: UserManager, tmp_path: Path) -> None:
    assert user_manager.config_home != Path.home() / ".config"
    assert os.environ.get("LLMCTL_PRIVATE_USER_MANAGER") == "1"
    unit = unique("harness-file")
    path = user_manager.unit_dir / f"{unit}.service"
    ran = tmp_path / "ran"
    path.write_text(f"[Service]\nType=oneshot\nExecStart=/bin/touch {ran}\n")
    try:
        systemctl("daemon-reload")
        fragment = systemctl("show", "-p", "FragmentPath", "--value", f"{unit}.service").stdout
        assert fragment.strip() == str(path)
        systemctl("start", f"{unit}.service")  # a oneshot: returns when it has run
        assert ran.exists()
    finally:
        path.unlink()
        systemctl("daemon-reload")


def test_short_lived_output_is_found_by_syslog_identifier(user_manager: UserManager) -> None:
    """journald learns a process's unit from /proc/PID/cgroup; when the process has exited by
    then, the line has no _SYSTEMD_UNIT/_SYSTEMD_USER_UNIT (seen often here for a unit that
    prints and exits at once). SYSLOG_IDENTIFIER comes from the manager's stream header and is
    always there: a server that dies at start-up is still found by its SyslogIdentifier=."""
    for _ in range(5):
        unit, identifier = unique("harness-short"), unique("llmctl-harness")
        argv = ["systemd-run", "--user", "--quiet", "--unit", unit, "-p", "Type=exec"]
        argv += ["-p", f"SyslogIdentifier={identifier}", "-p", "Type=oneshot", "--collect"]
        argv += ["--", "/bin/sh", "-c", f"echo {identifier}-said; exit 3"]
        subprocess.run(argv, check=False, timeout=60, capture_output=True)

        def found(ident: str = identifier) -> bool:
            by_identifier = subprocess.run(
                ["journalctl", "--no-pager", "-o", "cat", "-t", ident],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return f"{ident}-said" in by_identifier.stdout

        wait_for(f"{identifier}'s line", found, timeout=10)


# --- scripts/with-user-manager, nested inside this one ----------------------------------------


# scripts/test runs this module a second time under the root harness (the demo's mode), and
# these tests then: the harness needs root.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="scripts/with-user-manager needs root")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return not stat.rpartition(")")[2].strip().startswith("Z")


@needs_root
def test_wrapper_propagates_the_status_and_leaves_nothing_behind() -> None:
    seconds = 600_000 + os.getpid() % 100_000  # a sleep nobody else runs
    script = (
        'echo "$XDG_RUNTIME_DIR"; systemctl --user is-system-running;'
        f" systemd-run --user --quiet sleep {seconds};"  # a unit, stopped by the teardown
        f" sleep {seconds + 1} &"  # a leaked process, killed by the teardown
        " exit 3"
    )
    wrapper = [str(WITH_USER_MANAGER), "--", "sh", "-c", script]
    proc = subprocess.run(wrapper, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stderr
    runtime_dir, state = proc.stdout.split()
    assert state == "running"
    assert not Path(runtime_dir).parent.exists(), "the private root was not removed"
    match = re.search(r"\(pid (\d+), cgroup /(\S+),", proc.stderr)
    assert match, proc.stderr
    assert not alive(int(match[1])), "the manager is still running"
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{match[2]}")), "its cgroup is still there"
    assert "killing leftover process" in proc.stderr
    pgrep = ["pgrep", "-f", f"^sleep {seconds}"]
    leftovers = subprocess.run(pgrep, capture_output=True, check=False, timeout=30)
    assert leftovers.returncode == 1, leftovers.stdout


@needs_root
def test_wrapper_detach_enter_stop(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    detach = [str(WITH_USER_MANAGER), "--detach", "--state-dir", str(state_dir)]
    subprocess.run(detach, check=True, timeout=60)
    try:
        env = read_env_file(state_dir / "env")
        manager, holder = int(env["WUM_MANAGER_PID"]), int(env["WUM_HOLDER_PID"])
        assert alive(manager)
        script = 'systemctl --user is-system-running; echo "$XDG_CONFIG_HOME"; pwd'
        entered = subprocess.run(
            [WITH_USER_MANAGER, "--enter", state_dir, "--", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=tmp_path,
        )
        assert entered.stdout.split() == ["running", env["XDG_CONFIG_HOME"], str(tmp_path)]
    finally:
        subprocess.run([WITH_USER_MANAGER, "--stop", state_dir], check=True, timeout=120)
    assert not alive(manager)
    assert not alive(holder)
    assert not Path(env["WUM_ROOT"]).exists()
    assert not (state_dir / "env").exists()


@needs_root
def test_wrapper_as_user_runs_the_manager_and_the_command_as_that_user() -> None:
    user = os.environ.get("LLMCTL_TEST_USER", "llmctl-test")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        unavailable(f"no user {user}: useradd --create-home --user-group {user} (scripts/test does)")
    script = (
        'id -u; echo "$HOME"; stat -c %u:%a "$XDG_RUNTIME_DIR";'
        " systemd-run --user --quiet --pipe --wait sh -c 'id -u; cat /proc/self/cgroup'"
    )
    wrapper = [str(WITH_USER_MANAGER), "--as-user", user, "--", "sh", "-c", script]
    proc = subprocess.run(wrapper, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    uid, home, runtime, unit_uid, *cgroups = proc.stdout.split()
    assert (uid, home, runtime, unit_uid) == (str(entry.pw_uid), entry.pw_dir, f"{entry.pw_uid}:700", uid)
    # The unit's cgroup is below a desktop's user manager, user@UID.service.
    manager = f"/user.slice/user-{uid}.slice/user@{uid}.service/app.slice/"
    assert any(manager in line for line in cgroups), cgroups


# --- the real servers on the smoke model ------------------------------------------------------


def serve_with_llama_server(server: Path, model: Path, port: int) -> None:
    argv = [str(server), "-m", str(model)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "-c", "256", "-ngl", "0"]
    with (
        transient_service("harness-llama-server", argv) as unit,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client,
    ):
        wait_http_200(client, "/health", unit, timeout=60)
        response = chat(client)
        assert response.status_code == 200, response.text
        choices = response.json()["choices"]
        assert isinstance(choices, list)
        assert choices
    assert_port_free(port)


def test_llama_server_serves_the_smoke_model(
    user_manager: UserManager,
    provisioned: Provisioned,
    smoke_model: Path,
    free_port: Callable[[], int],
) -> None:
    serve_with_llama_server(provisioned.llama_server, smoke_model, free_port())


@pytest.mark.parametrize(
    "shape",
    [
        SmokeShape(weight_type="f16"),
        SmokeShape(weight_type="q8_0"),
        SmokeShape(embedding=128, heads=8, kv_heads=2, feed_forward=256, weight_type="q4_0"),
    ],
    ids=["f16", "q8_0", "q4_0-gqa"],
)
def test_llama_server_loads_the_other_smoke_shapes(
    user_manager: UserManager,
    provisioned: Provisioned,
    tmp_path: Path,
    free_port: Callable[[], int],
    shape: SmokeShape,
) -> None:
    model = write_smoke_model(tmp_path / "smoke.gguf", shape)
    serve_with_llama_server(provisioned.llama_server, model, free_port())


def test_llama_cpp_python_serves_the_smoke_model(
    user_manager: UserManager,
    provisioned: Provisioned,
    smoke_model: Path,
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    argv = [str(provisioned.llama_cpp_python), "-m", "llama_cpp.server"]
    argv += ["--model", str(smoke_model), "--host", "127.0.0.1", "--port", str(port)]
    with (
        transient_service("harness-llama-cpp-python", argv) as unit,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client,
    ):
        models = wait_http_200(client, "/v1/models", unit, timeout=60).json()
        assert [m["id"] for m in models["data"]] == [str(smoke_model)]
        response = chat(client)
        assert response.status_code == 200, response.text
        choices = response.json()["choices"]
        assert isinstance(choices, list)
        assert choices
    assert_port_free(port)
