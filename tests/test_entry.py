"""The `llmctl` entry point: `status` answers without click when it can, and says exactly what
the click CLI says; everything else, and every case it cannot answer alone, goes to click."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl import entry, systemd
from llmctl.errors import ExitCode, LlmctlError
from tests.test_status import install_example, nothing_runs


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        (["status"], (None, False)),
        (["status", "--json"], (None, True)),
        (["--config", "/x.yaml", "status", "--json"], ("/x.yaml", True)),
        (["--config=/x.yaml", "status"], ("/x.yaml", False)),
        (["status", "--watch"], None),
        (["status", "--help"], None),
        (["status", "--json", "--json"], None),
        (["--config"], None),
        (["up"], None),
        ([], None),
    ],
)
def test_only_the_plain_forms_of_status_are_taken(args: list[str], parsed: object) -> None:
    assert entry.status_arguments(args) == parsed


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        (["up", "solo"], (None, ("solo",), False)),
        (["up", "a", "b"], (None, ("a", "b"), False)),
        (["up", "--json", "solo"], (None, ("solo",), True)),
        (["up", "solo", "--json"], (None, ("solo",), True)),
        (["--config", "/x.yaml", "up", "solo"], ("/x.yaml", ("solo",), False)),
        (["--config=/x.yaml", "up", "solo"], ("/x.yaml", ("solo",), False)),
        (["up"], None),  # the whole stack: the full `up`
        (["up", "--json"], None),
        (["up", "--timeout", "5", "solo"], None),
        (["up", "--no-wait", "solo"], None),
        (["up", "solo", "--help"], None),
        (["up", "--json", "--json", "solo"], None),
        (["down", "solo"], None),
        (["status"], None),
    ],
)
def test_only_the_plain_forms_of_up_name_are_taken(args: list[str], parsed: object) -> None:
    assert entry.up_arguments(args) == parsed


@pytest.fixture
def applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example config applied (its units installed), the user manager answering, nothing
    running; returns the config file."""
    paths, config_path, _ = install_example(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(paths.config_home))
    monkeypatch.setenv("XDG_STATE_HOME", str(paths.state_home))
    monkeypatch.setattr(systemd, "require_manager", lambda: None)  # the click CLI's check
    monkeypatch.setattr(systemd, "begin_manager_check", Answering)  # the quick path's
    monkeypatch.setattr(systemd, "show", nothing_runs)
    monkeypatch.setattr(systemd, "ShowJob", FakeShow)
    return config_path


class FakeShow:
    """systemd.ShowJob, answering as `nothing_runs`."""

    def __init__(self, units: list[str]) -> None:
        self.units = units
        self.closed = False

    def covers(self, units: list[str]) -> bool:
        return set(units) <= set(self.units)

    def result(self) -> dict[str, systemd.UnitState]:
        return nothing_runs(self.units)

    def close(self) -> None:
        self.closed = True


class Answering:
    def require(self) -> None:
        pass


class NotAnswering:
    def require(self) -> None:
        raise LlmctlError("no systemd user manager is reachable", exit_code=ExitCode.NOT_RUNNING)


def run_both(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick path answers without the click CLI, with the CLI's exit status and output."""
    import llmctl.cli  # noqa: PLC0415

    real = llmctl.cli.main

    def refuse(argv: list[str] | None = None) -> int:
        raise AssertionError("the quick path handed on")

    monkeypatch.setattr(llmctl.cli, "main", refuse)
    quick_code = entry.main(args)
    quick = capsys.readouterr()
    monkeypatch.setattr(llmctl.cli, "main", real)
    cli_code = real(args)
    cli = capsys.readouterr()
    assert (quick_code, quick.out, quick.err) == (cli_code, cli.out, cli.err)
    assert quick_code == ExitCode.NOT_RUNNING  # nothing runs: every unit is down


def test_status_json_is_the_clis_without_click(
    applied: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_both(["--config", str(applied), "status", "--json"], capsys, monkeypatch)


def test_status_table_is_the_clis_without_click(
    applied: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_both([f"--config={applied}", "status"], capsys, monkeypatch)


def test_an_edited_config_is_left_to_the_cli(applied: Path) -> None:
    applied.write_text(applied.read_text() + "\n# edited\n")
    assert entry.quick_status(str(applied), True) is None


def test_no_manager_is_left_to_the_cli(
    applied: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_manager() -> None:
        NotAnswering().require()

    monkeypatch.setattr(systemd, "begin_manager_check", NotAnswering)
    monkeypatch.setattr(systemd, "require_manager", no_manager)
    assert entry.quick_status(str(applied), True) is None
    assert entry.main(["--config", str(applied), "status", "--json"]) == ExitCode.NOT_RUNNING
    assert '"message": "no systemd user manager is reachable"' in capsys.readouterr().out


FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl --user is-system-running | show --property=... UNIT...: every unit loaded, stopped
shift
case $1 in
  is-system-running) echo running ;;
  show) shift; shift; for u in "$@"; do printf 'Id=%s\\nLoadState=loaded\\nActiveState=inactive\\nSubState=dead\\n\\n' "$u"; done ;;
esac
"""


def test_status_of_an_applied_config_imports_neither_click_nor_pydantic(tmp_path: Path) -> None:
    paths, config_path, _ = install_example(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    env = os.environ | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "XDG_CONFIG_HOME": str(paths.config_home),
        "XDG_STATE_HOME": str(paths.state_home),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "LLMCTL_CONFIG": str(config_path),
    }
    code = (
        "import sys; from llmctl.entry import main; code = main(['status', '--json']);"
        "heavy = ('click', 'pydantic', 'jinja2', 'yaml', 'http.client', 'httpx', 'psutil');"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr); sys.exit(code)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert run.returncode == ExitCode.NOT_RUNNING, run.stderr
    assert '"command": "status"' in run.stdout and "llmctl-" in run.stdout
    imported = run.stderr.strip().splitlines()[-1]
    # yaml only where an Ollama's models come from the applied copy (the example has one).
    assert imported == "['yaml']", run.stderr
