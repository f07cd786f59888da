"""`up NAME` on an applied config starts the installed unit without the config (quick_up), and
anything that changed since the last `up` sends it through the full `up` instead.

Which path ran is observed, not assumed: the quick one never imports click or pydantic. Each
command runs in the installed wheel's interpreter with a line that reports that at exit."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import LLMCTL, LLMCTL_PYTHON, Provisioned, UserManager

REPORT = (
    "import sys; from llmctl.entry import main; code = main(sys.argv[1:]); "
    "print('path:', 'full' if 'click' in sys.modules or 'pydantic' in sys.modules else 'quick', "
    "file=sys.stderr); sys.exit(code)"
)


class Stack:
    def __init__(self, config: Path) -> None:
        self.config = config

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LLMCTL_PYTHON), "-c", REPORT, "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip

    def up(self, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
        done = self.run("up", *args)
        path = done.stderr.rsplit("path: ", 1)[-1].strip()
        return done, path

    def edit(self, change: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
        config = yaml.safe_load(self.config.read_text())
        change(config)
        self.config.write_text(yaml.safe_dump(config))

    @property
    def port(self) -> int:
        return int(yaml.safe_load(self.config.read_text())["backends"]["solo"]["port"])

    def serves(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def stack(
    tmp_path: Path,
    provisioned: Provisioned,
    smoke_model: Path,
    user_manager: UserManager,
    free_port: Callable[[], int],
) -> Iterator[Stack]:
    model = tmp_path / "solo.gguf"
    model.write_bytes(smoke_model.read_bytes())
    config = tmp_path / "llmctl.yaml"
    config.write_text(
        yaml.safe_dump({
            "version": 1,
            "backends": {
                "solo": {
                    "kind": "llama-server", "command": str(provisioned.llama_server), "port": free_port(),
                    "model": "m", "gpus": [],
                },
            },
            "models": {"m": {"backend": "solo", "source": str(model), "context": 256}},
            "gateway": {"enabled": False},
            "supervisor": {"enabled": False},
        })
    )  # fmt: skip
    stack = Stack(config)
    try:
        up, path = stack.up()
        assert up.returncode == 0 and path == "full", up.stderr  # the whole stack: always full
        assert stack.run("down", "solo").returncode == 0
        yield stack
    finally:
        subprocess.run([*LLMCTL, "--config", str(config), "down"], capture_output=True, check=False)
        user_manager.forget_llmctl_units()


def test_up_name_of_an_applied_config_starts_the_unit_without_loading_the_config(stack: Stack) -> None:
    up, path = stack.up("solo")
    assert up.returncode == 0, up.stderr
    assert path == "quick"
    assert up.stdout.startswith("llmctl-solo.service: started in "), up.stdout
    assert stack.serves()
    again, path = stack.up("solo")
    assert (again.returncode, path, again.stdout) == (0, "quick", "llmctl-solo.service: unchanged\n")
    assert stack.run("down", "solo").returncode == 0
    as_json, path = stack.up("--json", "solo")
    assert as_json.returncode == 0 and path == "quick", as_json.stderr
    envelope = json.loads(as_json.stdout)
    assert envelope["ok"] and envelope["command"] == "up"
    assert [(u["unit"], u["action"]) for u in envelope["data"]["units"]] == [
        ("llmctl-solo.service", "started")
    ]
    assert envelope["data"]["files"] == [] and envelope["data"]["snapshot"] is None


def test_an_edited_config_goes_through_the_full_up_and_is_applied(
    stack: Stack, free_port: Callable[[], int]
) -> None:
    new_port = free_port()
    stack.edit(lambda c: c["backends"]["solo"].update(port=new_port))
    up, path = stack.up("solo")
    assert up.returncode == 0 and path == "full", up.stderr
    assert "changed" in up.stdout and "snapshot" in up.stdout, up.stdout
    assert stack.serves()  # on the new port
    assert stack.run("down", "solo").returncode == 0
    again, path = stack.up("solo")  # recorded by that full up: quick again
    assert again.returncode == 0 and path == "quick", again.stderr


def test_a_hand_edited_unit_is_put_back_by_the_full_up(stack: Stack, user_manager: UserManager) -> None:
    unit = user_manager.unit_dir / "llmctl-solo.service"
    rendered = unit.read_text()
    unit.write_text(rendered.replace("[Service]\n", "[Service]\nNice=5\n"))
    assert unit.read_text() != rendered
    up, path = stack.up("solo")
    assert up.returncode == 0 and path == "full", up.stderr
    assert unit.read_text() == rendered


def test_a_check_that_fails_before_the_start_is_reported_by_the_cli(stack: Stack) -> None:
    model = Path(yaml.safe_load(stack.config.read_text())["models"]["m"]["source"])
    model.rename(model.with_suffix(".moved"))
    up, path = stack.up("solo")
    assert up.returncode == 2 and path == "full", up.stderr  # handed on: the CLI's own error
    assert "model file" in up.stderr and "does not exist" in up.stderr and "nothing was changed" in up.stderr
    unknown, path = stack.up("nosuch")
    assert unknown.returncode == 2 and path == "full"
    assert "no backend or gateway named 'nosuch'" in unknown.stderr


def test_a_unit_that_fails_to_start_is_reported_once_by_the_quick_path(stack: Stack) -> None:
    model = Path(yaml.safe_load(stack.config.read_text())["models"]["m"]["source"])
    model.write_bytes(b"GGUF" + b"\0" * 64)  # still there (preflight passes); the server refuses it
    up, path = stack.up("solo")
    assert up.returncode == 1 and path == "quick", up.stderr
    assert up.stderr.count("llmctl: error: solo did not become ready") == 1, up.stderr
    assert "last" in up.stderr and "journal lines" in up.stderr


def test_ups_past_the_start_limit_still_start(stack: Stack) -> None:
    """StartLimitBurst=5 starts in 600 s: a start asked for by hand clears the count when
    systemd refuses one, instead of a reset-failed before every start."""
    for _ in range(7):
        up, path = stack.up("solo")
        assert up.returncode == 0 and path == "quick", up.stderr
        assert stack.serves()
        assert stack.run("down", "solo").returncode == 0
