"""`llmctl snapshot ...` through the real CLI entry point, on units rendered by `llmctl render`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmctl.cli import main
from llmctl.paths import Paths
from llmctl.state import save_serving
from tests.conftest import minimal_config, write_config

ID = re.compile(r"\d{8}T\d{6}Z(\.\d+)?-snapshot-create")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def installed(paths: Paths, capsys: pytest.CaptureFixture[str]) -> Path:
    """The default config, its units and gateway file installed as `up` would, and a switch."""
    paths.default_config_file.parent.mkdir(parents=True)
    config = write_config(paths.default_config_file, minimal_config())
    assert run(capsys, "render", "--out", str(paths.config_home))[0] == 0
    save_serving(paths.state_dir, {"llama": "tiny"})
    return config


def create(capsys: pytest.CaptureFixture[str], message: str) -> str:
    code, out, err = run(capsys, "snapshot", "create", "-m", message)
    assert (code, err) == (0, "")
    match = re.fullmatch(rf"created snapshot ({ID.pattern}) \((\d+) files\)\n", out)
    assert match, out
    assert int(match.group(3)) == len(snapshotted_keys())
    return match.group(1)


def snapshotted_keys() -> list[str]:
    """What a snapshot of the `installed` fixture holds: the config, state and every file render wrote."""
    paths = Paths.from_env()
    installed = [p.relative_to(paths.config_home).as_posix() for p in paths.config_home.rglob("*")]
    return sorted(
        ["config/llmctl.yaml", "state/state.json"]
        + [
            f"installed/{rel}"
            for rel in installed
            if rel.startswith("systemd/user/llmctl") or rel == "llmctl/gateway.yaml"
        ]
    )


def test_create_list_show(installed: Path, paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    first = create(capsys, "before tuning")
    second = create(capsys, "after tuning")
    code, out, _ = run(capsys, "snapshot", "list")
    assert code == 0
    width = len(max(first, second, key=len))
    lines = out.splitlines()
    assert lines[0] == f"{'ID':{width}}  CREATED               PINNED  REASON"
    assert re.fullmatch(rf"{first} +\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ  {' ' * 6}  before tuning", lines[1])
    assert lines[2].startswith(second) and lines[2].endswith("after tuning") and len(lines) == 3

    code, out, _ = run(capsys, "snapshot", "list", "--json")
    data = json.loads(out)["data"]
    assert data["dir"] == str(paths.state_dir / "snapshots")
    assert [(s["id"], s["reason"], s["pinned"], s["corrupt"], s["files"]) for s in data["snapshots"]] == [
        (first, "before tuning", False, False, len(snapshotted_keys())),
        (second, "after tuning", False, False, len(snapshotted_keys())),
    ]

    code, out, _ = run(capsys, "snapshot", "show", "previous")
    assert code == 0
    lines = out.splitlines()
    assert lines[:7] == [
        f"id:       {first}",
        lines[1],
        "reason:   before tuning",
        "command:  snapshot create",
        "pinned:   no",
        "llmctl:   0.1.0",
        lines[6],
    ]
    assert lines[6].startswith(f"config:   {installed} (version 1, sha256 ")
    keys = snapshotted_keys()
    assert "installed/systemd/user/llmctl-llama.service" in keys and "installed/llmctl/gateway.yaml" in keys
    assert lines[8] == "files:"
    assert [line.split()[0] for line in lines[9 : 9 + len(keys)]] == keys
    assert lines[9 + len(keys) :] == ["active models:", "  llama: tiny"]

    code, out, _ = run(capsys, "snapshot", "show", first[:18], "--json")
    data = json.loads(out)["data"]
    assert data["id"] == first and data["config_path"] == str(installed)
    assert data["active_models"] == {"llama": "tiny"} and sorted(data["files"]) == snapshotted_keys()


def test_no_snapshots_yet(paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "snapshot", "list") == (0, f"no snapshots in {paths.state_dir / 'snapshots'}\n", "")
    code, _, err = run(capsys, "snapshot", "show", "latest")
    assert code == 2 and "there are no snapshots yet" in err


def test_diff_against_current_line_by_line(
    installed: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot_id = create(capsys, "before")
    assert run(capsys, "snapshot", "diff", snapshot_id, "--exit-code") == (
        0,
        "",
        f"no differences between {snapshot_id} and current\n",
    )
    changed = minimal_config()
    changed["models"]["tiny"]["context"] = 1024
    write_config(installed, changed)
    assert run(capsys, "render", "--out", str(paths.config_home))[0] == 0
    save_serving(paths.state_dir, {})
    code, out, err = run(capsys, "snapshot", "diff", "latest", "--exit-code")
    assert (code, err) == (1, "")
    unit = (paths.unit_dir / "llmctl-llama.service").read_text().splitlines()
    exec_start = next(i for i, line in enumerate(unit) if line.startswith("ExecStart="))
    new_exec = unit[exec_start]
    old_exec = new_exec.replace("--ctx-size 1024", "--ctx-size 512")
    assert out.splitlines() == [
        f"--- {snapshot_id}/config/llmctl.yaml",
        "+++ current/config/llmctl.yaml",
        "@@ -9,7 +9,7 @@",
        "   tiny:",
        "     backend: llama",
        "     source: /models/tiny.gguf",
        "-    context: 512",
        "+    context: 1024",
        " gateway:",
        "   command: /opt/litellm/bin/litellm",
        "   port: 4000",
        f"--- {snapshot_id}/systemd/user/llmctl-llama.service",
        "+++ current/systemd/user/llmctl-llama.service",
        f"@@ -{exec_start - 2},7 +{exec_start - 2},7 @@",
        *(f" {line}" for line in unit[exec_start - 3 : exec_start]),
        f"-{old_exec}",
        f"+{new_exec}",
        *(f" {line}" for line in unit[exec_start + 1 : exec_start + 4]),
        f"--- {snapshot_id}/active-models",
        "+++ current/active-models",
        "@@ -1 +0,0 @@",
        "-llama: tiny",
    ]


def test_diff_between_two_snapshots(
    installed: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    first = create(capsys, "one")
    save_serving(paths.state_dir, {"llama": "other"})
    second = create(capsys, "two")
    code, out, _ = run(capsys, "snapshot", "diff", first, second)
    assert code == 0
    assert out.splitlines() == [
        f"--- {first}/active-models",
        f"+++ {second}/active-models",
        "@@ -1 +1 @@",
        "-llama: tiny",
        "+llama: other",
    ]


def test_pin_unpin_delete(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot_id = create(capsys, "keep me")
    assert run(capsys, "snapshot", "pin", "latest") == (0, f"pinned snapshot {snapshot_id}\n", "")
    assert "  yes     keep me" in run(capsys, "snapshot", "list")[1]
    code, out, err = run(capsys, "snapshot", "delete", snapshot_id)
    assert (code, out) == (1, "")
    assert f"snapshot {snapshot_id} is pinned" in err and "--force" in err
    assert run(capsys, "snapshot", "unpin", snapshot_id) == (0, f"unpinned snapshot {snapshot_id}\n", "")
    assert run(capsys, "snapshot", "delete", snapshot_id) == (0, f"deleted snapshot {snapshot_id}\n", "")
    code, _, err = run(capsys, "snapshot", "delete", snapshot_id)
    assert code == 2 and f"no snapshot matches '{snapshot_id}'" in err


def test_delete_force_removes_a_pinned_one(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot_id = create(capsys, "x")
    run(capsys, "snapshot", "pin", snapshot_id)
    assert run(capsys, "snapshot", "delete", "--force", snapshot_id)[0] == 0
    assert run(capsys, "snapshot", "list", "--json")[1].count('"id"') == 0


def test_a_corrupt_snapshot_is_listed_and_explained(
    installed: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot_id = create(capsys, "x")
    manifest = paths.state_dir / "snapshots" / snapshot_id / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    code, out, _ = run(capsys, "snapshot", "list")
    assert code == 0
    assert out.splitlines()[1].startswith(
        f"{snapshot_id}  CORRUPT: manifest.json is not valid JSON (truncated?)"
    )
    code, out, _ = run(capsys, "snapshot", "list", "--json")
    (entry,) = json.loads(out)["data"]["snapshots"]
    assert entry["corrupt"] is True and entry["problem"].startswith("manifest.json is not valid JSON")
    code, _, err = run(capsys, "snapshot", "show", snapshot_id)
    assert code == 1 and f"llmctl: error: snapshot {snapshot_id} is corrupt: manifest.json" in err
    assert f"llmctl snapshot delete {snapshot_id}" in err


def test_list_verifies_every_file(installed: Path, paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot_id = create(capsys, "x")
    (paths.state_dir / "snapshots" / snapshot_id / "state" / "state.json").write_text("{}")
    line = run(capsys, "snapshot", "list")[1].splitlines()[1]
    assert line.startswith(f"{snapshot_id}  CORRUPT: state/state.json: 2 bytes, the manifest says ")
    code, _, err = run(capsys, "snapshot", "diff", snapshot_id)
    assert code == 1 and f"snapshot {snapshot_id} is corrupt: state/state.json: 2 bytes" in err


def test_create_when_the_snapshot_dir_cannot_be_written(
    installed: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    (paths.state_dir / "snapshots").write_text("in the way")
    code, out, _ = run(capsys, "snapshot", "create", "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert error["message"] == (
        f"cannot write a snapshot in {paths.state_dir / 'snapshots'}: "
        "a file is in the way where a directory should be"
    )
    assert "not touched" in error["hint"]


def test_create_with_a_missing_explicit_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--config", str(tmp_path / "nope.yaml"), "snapshot", "create")
    assert code == 2 and "no config file at" in err


def test_create_without_any_config_keeps_units_and_state(
    paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    save_serving(paths.state_dir, {"llama": "tiny"})
    code, out, err = run(capsys, "snapshot", "create", "-m", "bare", "--json")
    assert code == 0 and "no config at" in err
    data = json.loads(out)["data"]
    assert data["files"] == 1 and data["reason"] == "bare"


def test_rollback_refuses_a_corrupt_newest_snapshot_and_says_what_an_older_one_would_do(
    installed: Path, paths: Paths, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue: `llmctl rollback` must not skip a corrupt newest snapshot to an older state."""
    from llmctl import systemd  # noqa: PLC0415

    monkeypatch.setattr(systemd, "manager_reachable", lambda: True)
    older = create(capsys, "before the first change")
    unit = paths.unit_dir / "llmctl-llama.service"
    unit.write_text(unit.read_text() + "# the first change\n")
    newest = create(capsys, "before the second change")
    unit.write_text(unit.read_text() + "# the second change\n")
    manifest = paths.state_dir / "snapshots" / newest / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:60])
    now = unit.read_text()

    code, out, err = run(capsys, "rollback")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith(
        f"llmctl: error: the newest snapshot, {newest}, is corrupt: manifest.json is not valid JSON"
    )
    assert lines[1].startswith(f"  the newest usable older snapshot is {older} (")
    assert lines[1].endswith(f"before the first change); `llmctl rollback {older}` would:")
    assert lines[2:-1] == ["    change systemd/user/llmctl-llama.service (it restarts llmctl-llama.service)"]
    assert lines[-1].startswith("hint: Nothing was changed.")
    assert unit.read_text() == now
    assert [
        s["id"] for s in json.loads(run(capsys, "snapshot", "list", "--json")[1])["data"]["snapshots"]
    ] == [
        older,
        newest,
    ]
