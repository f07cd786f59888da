"""llmctl init through the CLI: what it prints, --force, --json, and --demo with its options."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from llmctl import init, snapshots
from llmctl.cli import main
from llmctl.config.load import load_config
from llmctl.init import Sources
from llmctl.paths import Paths
from tests.conftest import write_executable as executable
from tests.init.fakes import gguf, no_gpus, no_ollama, venv


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: Paths) -> Path:
    """HOME (the fixture's) with llama-server, LiteLLM and a model; nothing else on PATH."""
    home = paths.home
    executable(home / "llama.cpp" / "build" / "bin" / "llama-server")
    venv(home / "venvs" / "llama", modules=("llama_cpp",))
    venv(home / "venvs" / "litellm", scripts=("litellm",))
    gguf(home / "models" / "tiny.gguf")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(init, "Sources", functools.partial(Sources, ollama=no_ollama, gpus=no_gpus))
    monkeypatch.setattr("llmctl.procs.port_in_use", lambda host, port: False)
    return home


def test_cli_init_writes_shows_and_refuses(
    this_machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "init")
    assert code == 0, err
    assert f"  llama-server: {this_machine}/llama.cpp/build/bin/llama-server (~/llama.cpp/build/bin)" in out
    assert "chose:" in out and "  gateway (LiteLLM, " in out
    assert f"wrote {paths.default_config_file}" in out
    assert load_config(paths.default_config_file, strict=True).config.backends["llama-server"].model == "tiny"  # type: ignore[union-attr]
    assert cli(capsys, "validate", "--strict")[0] == 0

    # Again: the same machine gives the same config.
    code, out, _ = cli(capsys, "init")
    assert code == 0 and "(unchanged)" in out
    # Edited since: refused without --force, kept as it was.
    paths.default_config_file.write_text(paths.default_config_file.read_text() + "# mine\n")
    code, _, err = cli(capsys, "init")
    assert code == 2 and "already exists; not replacing it" in err and "--force" in err
    assert paths.default_config_file.read_text().endswith("# mine\n")
    code, out, _ = cli(capsys, "init", "--force", "--json")
    envelope = json.loads(out)
    assert code == 0 and envelope["data"]["action"] == "replaced"
    snapshot = snapshots.load(paths, envelope["data"]["snapshot"])
    assert (snapshot.path / "config" / "llmctl.yaml").read_text().endswith("# mine\n")
    assert envelope["data"]["found"]["gguf_files"] == [
        {"path": str(this_machine / "models" / "tiny.gguf"), "size_bytes": 64}
    ]


def test_cli_demo_options_need_demo(this_machine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "init", "--port-base", "19000", "--litellm", "/x")
    assert code == 2 and "--port-base, --litellm: only with --demo" in err


def test_cli_demo_from_detection_writes_the_smoke_model(
    this_machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "init", "--demo", "--port-base", "19000")
    assert code == 0, err
    config = load_config(paths.default_config_file, strict=True).config
    assert config.backends["native"].command == str(
        this_machine / "llama.cpp" / "build" / "bin" / "llama-server"
    )
    assert config.backends["pyserver"].command == str(this_machine / "venvs" / "llama" / "bin" / "python3")
    assert config.gateway.port == 19002
    smoke = paths.state_dir / "demo" / "smoke.gguf"
    assert config.models["smoke-native"].source == str(smoke)
    assert smoke.read_bytes()[:4] == b"GGUF"
    assert f"model: {smoke}: wrote the smoke model (random weights)" in out


def test_cli_demo_with_explicit_paths_and_its_problems(
    tmp_path: Path, this_machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "demo" / "llmctl.yaml"
    model = gguf(tmp_path / "m.gguf")
    server = executable(tmp_path / "bin" / "llama-server")
    code, _, err = cli(
        capsys, "--config", str(target), "init", "--demo", "--model", str(tmp_path / "nope.gguf"),
        "--llama-server", str(tmp_path / "missing"), "--litellm", str(model),
    )  # fmt: skip
    assert code == 2 and not target.exists()
    assert "--llama-server" in err and "not an executable file" in err and "--model" in err
    code, _, err = cli(
        capsys,
        "--config",
        str(target),
        "init",
        "--demo",
        "--model",
        str(model),
        "--llama-server",
        str(server),
    )
    assert code == 0, err
    assert load_config(target).config.backends["native"].command == str(server)
    assert not (paths.state_dir / "demo").exists()  # --model given: no smoke model written


def test_cli_demo_refuses_before_writing_the_smoke_model(
    this_machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    paths.default_config_file.parent.mkdir(parents=True)
    paths.default_config_file.write_text("version: 1\n")
    code, _, err = cli(capsys, "init", "--demo")
    assert code == 2 and "already exists" in err
    assert not (paths.state_dir / "demo" / "smoke.gguf").exists()


def test_cli_demo_needs_the_executables(
    tmp_path: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    code, _, err = cli(capsys, "init", "--demo")
    assert code == 2
    assert "llama-server: none found on PATH or in the usual virtualenvs; give --llama-server PATH" in err
    assert "litellm: none found" in err
