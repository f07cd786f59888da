"""llmctl init's writing: a new config, the same again, a different one refused or forced
(after a snapshot), an invalid one never; and a detected starter config that validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl import init, snapshots
from llmctl.config.load import load_config
from llmctl.errors import ExitCode, LlmctlError
from llmctl.paths import Paths
from tests.conftest import write_executable as executable
from tests.init.fakes import gguf, machine, venv

CONFIG_A = "version: 1\n"
CONFIG_B = "version: 1\ngateway:\n  enabled: false\n"


def test_write_new_unchanged_refused_and_forced(tmp_path: Path, paths: Paths) -> None:
    path = tmp_path / "conf" / "llmctl.yaml"
    assert init.write_config(path, CONFIG_A, force=False, paths=paths).action == "written"
    assert path.read_text() == CONFIG_A
    assert init.write_config(path, CONFIG_A, force=False, paths=paths).action == "unchanged"
    with pytest.raises(LlmctlError) as err:
        init.write_config(path, CONFIG_B, force=False, paths=paths)
    assert err.value.exit_code is ExitCode.USAGE and "--force" in (err.value.hint or "")
    assert path.read_text() == CONFIG_A and snapshots.list_snapshots(paths) == []

    path.chmod(0o600)
    result = init.write_config(path, CONFIG_B, force=True, paths=paths)
    assert result.action == "replaced" and result.snapshot is not None
    assert path.read_text() == CONFIG_B and path.stat().st_mode & 0o777 == 0o600
    taken = snapshots.load(paths, result.snapshot)
    manifest = taken.require()
    assert manifest.reason == "before init --force" and manifest.config_path == str(path)
    assert (taken.path / "config" / "llmctl.yaml").read_text() == CONFIG_A


def test_write_refuses_an_invalid_config(tmp_path: Path, paths: Paths) -> None:
    with pytest.raises(LlmctlError):
        init.write_config(tmp_path / "c.yaml", "version: 2\n", force=True, paths=paths)
    assert not (tmp_path / "c.yaml").exists()


def test_force_never_prunes_older_snapshots(tmp_path: Path, paths: Paths) -> None:
    path = tmp_path / "llmctl.yaml"
    path.write_text(CONFIG_A)
    for _ in range(snapshots.DEFAULT_KEEP + 2):
        snapshots.take(paths, path, reason="test", command="test", keep=1000)
    before = {s.id for s in snapshots.list_snapshots(paths)}
    init.write_config(path, CONFIG_B, force=True, paths=paths)
    after = {s.id for s in snapshots.list_snapshots(paths)}
    assert before < after and len(after) == len(before) + 1


def test_the_written_starter_config_validates(tmp_path: Path, paths: Paths) -> None:
    home = tmp_path / "machine"
    executable(home / "llama.cpp" / "build" / "bin" / "llama-server")
    venv(home / "venvs" / "litellm", scripts=("litellm",))
    gguf(home / "models" / "tiny.gguf")
    d = init.detect(machine(home))
    plan = init.plan(d, lambda port: False, home)
    path = tmp_path / "llmctl.yaml"
    init.write_config(path, init.render_plan(plan, d, home), force=False, paths=paths)
    loaded = load_config(path, strict=True)  # every file it names exists
    assert loaded.config.backends["llama-server"].model == "tiny"  # type: ignore[union-attr]
