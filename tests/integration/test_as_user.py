"""As an ordinary user, as on a desktop: `scripts/with-user-manager --as-user NAME` runs the
manager and this session as NAME, in a cgroup named like a desktop's user@UID.service, with
journald splitting NAME's lines into its own journal. scripts/test runs the whole integration
suite that way; this module checks what is particular to it (ids, modes, the user's journal,
lingering), and is skipped when the harness runs as root."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llmctl.paths import Paths
from llmctl.smoke_model import write_smoke_model
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, json_result, stack_up
from tests.integration.fake_vllm import install_fake_vllm

pytestmark = pytest.mark.skipif(
    os.geteuid() == 0, reason="runs as an ordinary user: scripts/with-user-manager --as-user NAME"
)


def run_llmctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLMCTL, "--config", str(config), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


# A line that the native backend's unit logs under another identifier than its own (see
# wrapped_llama_server): only a match on the unit (_SYSTEMD_USER_UNIT) can find it.
HELPER_LINE = f"helper-in-the-unit-said-{uuid.uuid4().hex[:8]}"
HELPER_IDENTIFIER = "llmctl-test-helper"


def wrapped_llama_server(directory: Path, real: Path) -> Path:
    """llama-server, after starting a helper in the unit's cgroup that logs HELPER_LINE through
    systemd-cat under HELPER_IDENTIFIER (and stays alive, so that journald can tell its unit)."""
    directory.mkdir()
    wrapper = directory / "llama-server"
    helper = f"echo {HELPER_LINE}; exec sleep 600"
    wrapper.write_text(
        "#!/bin/sh\n"
        # INVOCATION_ID: only when the manager runs it, not for llmctl's own --version probes.
        f'[ -z "$INVOCATION_ID" ] || systemd-cat -t {HELPER_IDENTIFIER} sh -c {shlex.quote(helper)} &\n'
        f'exec {shlex.quote(str(real))} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def config(tmp_path: Path, provisioned: Provisioned) -> Path:
    path = tmp_path / "llmctl.yaml"
    model = write_smoke_model(tmp_path / "smoke.gguf")
    native = wrapped_llama_server(tmp_path / "bin", provisioned.llama_server)
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "backends": {
                    "native": {
                        "kind": "llama-server",
                        "command": str(native),
                        "port": free_port(),
                        "model": "smoke-native",
                        "gpus": [],
                    },
                    # A vLLM (the stand-in: no GPU here) with an API key: llmctl writes keys/big.env.
                    "big": {
                        "kind": "vllm",
                        "command": str(install_fake_vllm(tmp_path)),
                        "port": free_port(),
                        "model": "qwen",
                        "api_key": True,
                        "gpus": [],
                    },
                },
                "models": {
                    "smoke-native": {"backend": "native", "source": str(model), "context": 256},
                    "qwen": {"backend": "big", "source": "Qwen/Qwen2.5-0.5B-Instruct"},
                },
                "gateway": {"command": str(provisioned.litellm), "port": free_port()},
            }
        )
    )
    return path


@pytest.fixture
def stack(config: Path, user_manager: UserManager) -> Iterator[Path]:
    with stack_up(lambda *args: run_llmctl(config, *args), user_manager):
        yield config


def journal_json(*args: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["journalctl", "--no-pager", "-o", "json", *args],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_up_as_an_ordinary_user_files_modes_and_journal(stack: Path) -> None:
    uid = os.geteuid()
    # The harness really made us (and the manager) an ordinary user with our own home.
    assert uid >= 1000 and Path(os.environ["HOME"]).stat().st_uid == uid
    runtime = Path(os.environ["XDG_RUNTIME_DIR"]).stat()
    assert runtime.st_uid == uid and stat.S_IMODE(runtime.st_mode) == 0o700

    # The gateway's key and the vLLM's: the user's, nobody else's.
    paths = Paths.from_env()
    for secret in (paths.gateway_env_file, paths.backend_key_file("big")):
        info = secret.stat()
        assert info.st_uid == uid and stat.S_IMODE(info.st_mode) == 0o600, (secret, oct(info.st_mode))

    # A desktop's attribution: the backend's lines carry _SYSTEMD_USER_UNIT (and _SYSTEMD_UNIT is
    # the user manager's user@UID.service), in the user's own journal.
    entries = journal_json("--user", "-u", "llmctl-native.service")
    assert entries, "journalctl --user -u llmctl-native found nothing"
    served = [e for e in entries if e.get("_SYSTEMD_USER_UNIT") == "llmctl-native.service"]
    assert served, entries[-5:]
    assert {e["_SYSTEMD_UNIT"] for e in served} == {f"user@{uid}.service"}
    assert {e["_UID"] for e in served} == {str(uid)}
    # Nothing of ours sits under the system unit field, where the root harness files it.
    assert not journal_json("_SYSTEMD_UNIT=llmctl-native.service")

    # llmctl logs shows the backend's own lines (llama-server's start-up, not only systemd's).
    logs = run_llmctl(stack, "logs", "native", "-n", "300")
    assert logs.returncode == 0, logs.stderr
    ours = [line for line in logs.stdout.splitlines() if " llmctl-native[" in line]
    messages = {str(e.get("MESSAGE", "")) for e in served}
    assert ours and any(m and m in logs.stdout for m in messages), logs.stdout[-3000:]


def test_logs_matches_the_unit_as_a_desktop_journal_files_it(stack: Path) -> None:
    """`llmctl logs` finds a unit's lines by what the journal records for a user unit, not by
    the identifier alone: the manager's messages about the unit (USER_UNIT=), and a line from
    the unit's cgroup under another identifier (_SYSTEMD_USER_UNIT=)."""
    uid = str(os.geteuid())
    deadline = time.monotonic() + 30
    while not (helper := journal_json(f"MESSAGE={HELPER_LINE}")):
        assert time.monotonic() < deadline, f"{HELPER_LINE} never reached the journal"
        time.sleep(0.2)
    # (Each test of this module starts the stack: earlier tests' lines are there too.)
    assert {(e["SYSLOG_IDENTIFIER"], e.get("_SYSTEMD_USER_UNIT"), e["_UID"]) for e in helper} == {
        (HELPER_IDENTIFIER, "llmctl-native.service", uid)
    }
    started = journal_json("USER_UNIT=llmctl-native.service", "SYSLOG_IDENTIFIER=systemd")
    assert started and {e["_UID"] for e in started} == {uid}

    logs = run_llmctl(stack, "logs", "native", "-n", "1000")
    assert logs.returncode == 0, logs.stderr
    assert HELPER_LINE in logs.stdout, logs.stdout[-3000:]
    assert "Started llmctl-native.service" in logs.stdout, logs.stdout[-3000:]
    # ... and nothing of another unit: the gateway's lines are not the native backend's.
    assert " llmctl-gateway[" not in logs.stdout


def test_lingering_is_asked_for_this_user(stack: Path) -> None:
    """`enable` and `doctor` name the user the stack runs as in their `loginctl enable-linger`
    advice (no logind here: they cannot tell whether lingering is on, and say so)."""
    user = os.environ["USER"]
    assert user != "root" and Path(os.environ["HOME"]).name == user
    try:
        enabled = run_llmctl(stack, "enable")
        assert enabled.returncode == 0, enabled.stderr
        assert f"loginctl enable-linger {user}" in enabled.stderr
    finally:
        run_llmctl(stack, "disable")
    doctor = run_llmctl(stack, "doctor", "--json")
    linger = [c for c in json_result(doctor.stdout)["checks"] if c["name"] == "linger"]
    assert [c["fix"] for c in linger] == [f"loginctl enable-linger {user}"], linger
