"""The systemctl/journalctl chokepoint: argv, parsing of `show`, errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from llmctl import systemd
from llmctl.errors import ExitCode, LlmctlError

SHOW_OUTPUT = """Id=llmctl-a.service
LoadState=loaded
ActiveState=active
SubState=running
MainPID=1234
NRestarts=2
Result=success
ControlGroup=/app.slice/llmctl-a.service
ActiveEnterTimestampMonotonic=5000000
UnitFileState=static

Id=llmctl-b.service
LoadState=not-found
ActiveState=inactive
SubState=dead
MainPID=0
NRestarts=0
Result=success
ControlGroup=
ActiveEnterTimestampMonotonic=0
UnitFileState=
"""


def test_show_parses_many_units_from_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, SHOW_OUTPUT, "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    states = systemd.show(["llmctl-a.service", "llmctl-b.service"])
    assert len(calls) == 1 and calls[0][:3] == ["systemctl", "--user", "show"]
    a, b = states["llmctl-a.service"], states["llmctl-b.service"]
    assert (a.main_pid, a.n_restarts, a.running, a.exists) == (1234, 2, True, True)
    assert (b.running, b.exists) == (False, False)


def test_unreachable_manager_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "Failed to connect to bus: No medium found")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(LlmctlError, match="no systemd user manager is reachable") as info:
        systemd.daemon_reload()
    assert info.value.hint and "enable-linger" in info.value.hint
    assert info.value.exit_code is ExitCode.NOT_RUNNING


def test_failure_message_is_pasteable(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 5, "", "Unit x.service not found.")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(
        LlmctlError, match=r"`systemctl --user start 'x y.service'` failed with exit status 5"
    ):
        systemd.start(["x y.service"])


def test_journal_matches_what_a_desktop_files_a_user_unit_under() -> None:
    argv = systemd.journal_argv(["a.service", "b.service"], lines=5, since="1 hour ago", uid=1000)
    assert argv[:8] == ["journalctl", "--no-pager", "-o", "short-iso", "-n", "5", "--since", "1 hour ago"]
    # Disjunctions ("+") of: the unit's output, the manager's messages about it, and its
    # SyslogIdentifier= for lines journald could not attribute; each one only for our uid.
    groups = " ".join(argv[8:]).split(" + ")
    assert groups == [
        "_SYSTEMD_USER_UNIT=a.service _UID=1000",
        "USER_UNIT=a.service _UID=1000",
        "SYSLOG_IDENTIFIER=a _UID=1000",
        "_SYSTEMD_USER_UNIT=b.service _UID=1000",
        "USER_UNIT=b.service _UID=1000",
        "SYSLOG_IDENTIFIER=b _UID=1000",
    ]
    # A system unit's field is not ours: a user manager's units are never filed under it.
    assert not any(word.startswith("_SYSTEMD_UNIT=") for word in argv)
    assert "--user" not in argv  # it would hide a volatile journal's lines from the user


def test_journal_matches_the_running_users_uid_by_default() -> None:
    argv = systemd.journal_argv(["a.service"])
    assert f"_UID={os.getuid()}" in argv


@pytest.mark.parametrize(("answer", "reachable"), [("running", True), ("degraded", True), ("offline", False)])
def test_the_manager_check_asks_is_system_running(
    answer: str, reachable: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/argv\necho {answer}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / answer))
    monkeypatch.setattr(systemd, "_REACHED", set())
    check = systemd.begin_manager_check()  # started here, judged below
    assert check.reachable() is reachable
    assert systemd.manager_reachable() is reachable  # asked again only when it was not reached
    assert (tmp_path / "argv").read_text().splitlines() == ["--user is-system-running"] * (
        1 if reachable else 2
    )
    if not reachable:
        with pytest.raises(LlmctlError, match="no systemd user manager is reachable") as info:
            systemd.begin_manager_check().require()
        assert info.value.exit_code is ExitCode.NOT_RUNNING


def test_without_a_runtime_dir_no_manager_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("asked systemctl"))
    with pytest.raises(LlmctlError, match=r"reachable \(XDG_RUNTIME_DIR is not set\)"):
        systemd.begin_manager_check().require()


def fake_systemctl(tmp_path: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


def test_a_show_job_answers_as_show_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(tmp_path, f'echo "$@" > {tmp_path}/argv; cat <<"EOF"\n{SHOW_OUTPUT}EOF', monkeypatch)
    job = systemd.ShowJob(["llmctl-a.service", "llmctl-b.service"])  # runs from here on
    assert job.covers(["llmctl-b.service"]) and not job.covers(["llmctl-c.service"])
    states = job.result()
    assert states == systemd.show(["llmctl-a.service", "llmctl-b.service"])
    assert states["llmctl-a.service"].main_pid == 1234
    assert (tmp_path / "argv").read_text().split()[:3] == [
        "--user",
        "show",
        "--property=" + ",".join(systemd.SHOW_PROPERTIES),
    ]
    assert systemd.ShowJob([]).result() == {}


def test_a_show_job_fails_as_show_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(tmp_path, 'echo "Failed to connect to bus: No medium found" >&2; exit 1', monkeypatch)
    with pytest.raises(LlmctlError, match="no systemd user manager is reachable") as info:
        systemd.ShowJob(["llmctl-a.service"]).result()
    assert info.value.exit_code is ExitCode.NOT_RUNNING
    fake_systemctl(tmp_path, "exec sleep 30", monkeypatch)
    slow = systemd.ShowJob(["llmctl-a.service"], timeout=0.2)
    with pytest.raises(LlmctlError, match=r"did not finish within 0\.2 s"):
        slow.result()
    hung = systemd.ShowJob(["llmctl-a.service"])
    hung.close()  # not needed after all: ended, not left running
    assert hung._process is not None and hung._process.returncode is not None


def test_a_start_job_wait_tells_a_running_job_from_an_ended_one() -> None:
    import sys  # noqa: PLC0415

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    job = systemd.StartJob("x.service", sleeper)
    assert not job.wait(0.05)
    assert sleeper.poll() is None  # still running
    assert job.wait(10)  # woken by the exit (a pidfd), and reaped
    assert sleeper.returncode == 0
    assert job.wait(0)  # already ended
