"""llmctl init --from-litellm through the CLI: what it writes (and never writes), the report in
text and JSON, --force and its snapshot, and every refusal leaving everything as it was."""

from __future__ import annotations

import functools
import json
import shutil
import stat
from pathlib import Path

import pytest

from llmctl import init, snapshots
from llmctl.cli import main
from llmctl.config.load import load_config
from llmctl.init import Sources
from llmctl.paths import Paths
from llmctl.secrets import env_file_values
from tests.init.fakes import no_gpus, no_ollama
from tests.init.litellm_fixtures import CLAUDE_KEY, GROQ_KEY, MASTER_KEY, WORKSTATION

LITERALS = (CLAUDE_KEY, GROQ_KEY, MASTER_KEY)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: Paths) -> Path:
    """Nothing installed, no Ollama, no GPU, nothing answering on any port; the source copied in."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(init, "Sources", functools.partial(Sources, ollama=no_ollama, gpus=no_gpus))
    monkeypatch.setattr("llmctl.init.from_litellm.probe_port", lambda port: None)
    source = tmp_path / "litellm" / "config.yaml"
    source.parent.mkdir()
    shutil.copy(WORKSTATION, source)
    return source


def written_files(paths: Paths) -> list[Path]:
    root = paths.config_home
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_writes_the_config_and_moves_literal_keys_into_secrets(
    machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "init", "--from-litellm", str(machine))
    assert code == 0, err
    config_file = paths.default_config_file
    loaded = load_config(config_file)
    assert loaded.config.models["claude-sonnet"].remote.api_key_env == "ANTHROPIC_API_KEY"  # type: ignore[union-attr]
    secrets_file = paths.secrets_env_file
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert env_file_values(secrets_file) == {"GROQ_API_KEY": GROQ_KEY, "ANTHROPIC_API_KEY": CLAUDE_KEY}
    # The literals are in secrets.env only: not in the config, the output, or any other file.
    for path in written_files(paths):
        if path != secrets_file:
            assert not any(k in path.read_text() for k in LITERALS), path
    assert not any(k in out + err for k in LITERALS)
    assert f"imported {machine}: " in out
    assert "\nnot carried:\n" in out
    assert "\n  model_list[10] (bedrock-claude): it sets aws_access_key_id" in out
    assert f"moved into {secrets_file} (mode 0600): ANTHROPIC_API_KEY, GROQ_API_KEY" in out
    assert (
        "before llmctl up (the config reads them; it does not set them): AZURE_API_KEY, OPENAI_API_KEY" in out
    )
    assert f"wrote {config_file}" in out
    assert cli(capsys, "validate")[0] == 0

    # Again, unchanged: the same names for the same keys, and secrets.env not appended to.
    before = secrets_file.read_text()
    code, out, _ = cli(capsys, "init", "--from-litellm", str(machine))
    assert code == 0 and "(unchanged)" in out
    assert secrets_file.read_text() == before


def test_json_carries_the_report_and_no_secret(machine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "init", "--from-litellm", str(machine), "--json")
    assert code == 0
    assert not any(k in out for k in LITERALS)
    data = json.loads(out)["data"]
    assert data["action"] == "written"
    report = data["from_litellm"]
    assert report["secrets_moved"] == ["ANTHROPIC_API_KEY", "GROQ_API_KEY"]
    by_entry = {e["entry"]: e for e in report["report"]}
    assert by_entry["model_list[6] (claude-sonnet)"]["outcome"] == "mapped"
    assert by_entry["model_list[6] (claude-sonnet)"]["to"] == "models.claude-sonnet"
    assert by_entry["model_list[10] (bedrock-claude)"]["outcome"] == "unmapped"
    assert sum(report["counts"].values()) == len(report["report"])


def test_refuses_to_replace_a_config_without_force_and_snapshots_with_it(
    machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = paths.default_config_file
    config_file.parent.mkdir(parents=True)
    config_file.write_text("# mine\nversion: 1\n")
    code, _, err = cli(capsys, "init", "--from-litellm", str(machine))
    assert code == 2 and "already exists; not replacing it" in err
    assert config_file.read_text() == "# mine\nversion: 1\n"
    assert not paths.secrets_env_file.exists()  # nothing written, the keys neither

    code, out, _ = cli(capsys, "init", "--from-litellm", str(machine), "--force", "--json")
    data = json.loads(out)["data"]
    assert code == 0 and data["action"] == "replaced"
    snapshot = snapshots.load(paths, data["snapshot"])
    assert (snapshot.path / "config" / "llmctl.yaml").read_text() == "# mine\nversion: 1\n"
    assert "claude-sonnet" in load_config(config_file).config.models


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("model_list: [\n  - {model_name: a\n", "not valid YAML"),
        ("- just\n- a list\n", "not a LiteLLM proxy config (the top level is not a mapping)"),
        ("general_settings: {master_key: x}\n", "not a LiteLLM proxy config (it has no model_list)"),
        ("model_list: {a: 1}\n", "not a LiteLLM proxy config (model_list is not a list)"),
        ("model_list: []\nrouter_settings: [1]\n", "router_settings must be a mapping"),
        ("version: 1\nbackends: {}\nmodels: {}\n", "this is an llmctl config, not a LiteLLM one"),
    ],
)
def test_bad_input_is_a_usage_error_and_writes_nothing(
    tmp_path: Path,
    machine: Path,
    paths: Paths,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    message: str,
) -> None:
    bad = tmp_path / "bad.yaml"
    if content is not None:
        bad.write_text(content)
    code, _, err = cli(capsys, "init", "--from-litellm", str(bad))
    assert code == 2 and message in err, err
    assert written_files(paths) == []
    code, out, _ = cli(capsys, "init", "--from-litellm", str(bad), "--json")
    envelope = json.loads(out)
    assert code == 2 and envelope["ok"] is False and message in envelope["error"]["message"]


def test_other_refusals(machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "init", "--from-litellm", str(machine), "--demo")
    assert code == 2 and "--from-litellm and --demo: give one of them" in err
    code, _, err = cli(capsys, "--config", str(machine), "init", "--from-litellm", str(machine), "--force")
    assert code == 2 and "is the file the llmctl config would be written to" in err
    assert machine.read_text() == WORKSTATION.read_text()
    # A secrets.env others can read is not written to; neither is the config.
    paths.secrets_env_file.parent.mkdir(parents=True)
    paths.secrets_env_file.write_text("OTHER=1\n")
    paths.secrets_env_file.chmod(0o644)
    code, _, err = cli(capsys, "init", "--from-litellm", str(machine))
    assert code == 1 and "is readable by others" in err
    assert paths.secrets_env_file.read_text() == "OTHER=1\n"
    assert not paths.default_config_file.exists()
