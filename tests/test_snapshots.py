"""The snapshot store: round trip, ids, secrets, retention, corruption, write failures, restore, diff."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmctl import __version__, snapshots
from llmctl.config.load import parse_config
from llmctl.errors import LlmctlError
from llmctl.fsutil import atomic_write
from llmctl.install import GENERATED_MARK, ChangeKind
from llmctl.lifecycle import ensure_backend_keys, ensure_redis
from llmctl.paths import Paths
from llmctl.render.units import RenderOptions, render_stack
from llmctl.secrets import ensure_router_key, read_backend_key, read_redis_password, read_router_key
from llmctl.snapshots import capture
from llmctl.snapshots.manifest import GATEWAY_REL, Manifest, next_id, order_key
from llmctl.state import save_serving, state_file
from tests.conftest import dump, minimal_config

T0 = datetime(2026, 11, 23, 15, 30, 12, tzinfo=UTC)
MASTER_KEY = "sk-master-0123456789abcdefTESTKEY"
PROVIDER_KEY = "prov-key-9876543210zyxwvuTESTKEY"

UNIT_LLAMA = f"{GENERATED_MARK} 0.1.0; `llmctl up` overwrites it.\n[Unit]\nDescription=llama\n"
UNIT_TARGET = f"{GENERATED_MARK} 0.1.0\n[Unit]\nDescription=stack\n"
GATEWAY = f"{GENERATED_MARK} 0.1.0\nmodel_list:\n- model_name: tiny\n"


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(mode)
    return path


def install(paths: Paths) -> Path:
    """A config, two llmctl units, a user's own unit, the gateway file, state and both secrets."""
    config = write(paths.default_config_file, dump(minimal_config()), 0o600)
    write(paths.unit_dir / "llmctl-llama.service", UNIT_LLAMA)
    write(paths.unit_dir / "llmctl.target", UNIT_TARGET)
    write(paths.unit_dir / "llmctl-mine.service", "[Unit]\nDescription=the user's own\n")
    write(paths.gateway_file, GATEWAY)
    write(paths.gateway_env_file, f"LITELLM_MASTER_KEY={MASTER_KEY}\n", 0o600)
    write(paths.secrets_env_file, f"# provider keys\nexport OPENAI_API_KEY='{PROVIDER_KEY}'\n", 0o600)
    save_serving(paths.state_dir, {"llama": "tiny"})
    return config


def installed_bytes(paths: Paths) -> dict[str, bytes]:
    return {
        str(p.relative_to(paths.config_home)): p.read_bytes()
        for p in sorted(paths.config_home.rglob("*"))
        if p.is_file()
    }


def take(
    paths: Paths, config: Path | None, when: datetime = T0, *, keep: int = 20, command: str = "up"
) -> snapshots.Snapshot:
    return snapshots.take(paths, config, reason=f"before {command}", command=command, keep=keep, now=when)


def leftovers(paths: Paths) -> list[str]:
    return sorted(p.name for p in snapshots.snapshots_dir(paths).iterdir() if p.name.startswith("."))


# --- round trip and ids ----------------------------------------------------------------------


def test_round_trip_holds_every_managed_file_with_a_complete_manifest(paths: Paths) -> None:
    config = install(paths)
    taken = take(paths, config)
    assert taken.id == "20261123T153012Z-up"
    loaded = snapshots.load(paths, taken.id)
    manifest = loaded.require()
    assert manifest == taken.manifest
    assert Manifest.from_json(manifest.to_json(), expected_id=taken.id) == manifest
    raw = json.loads((loaded.path / "manifest.json").read_text())
    assert raw["schema_version"] == 1 and raw["created"] == "2026-11-23T15:30:12Z"
    assert (manifest.reason, manifest.command, manifest.llmctl_version) == ("before up", "up", __version__)
    assert manifest.config_path == str(config) and manifest.config_schema_version == 1
    assert manifest.config_sha256 == hashlib.sha256(config.read_bytes()).hexdigest()
    assert not manifest.pinned
    sources = {
        "config/llmctl.yaml": config,
        "installed/systemd/user/llmctl-llama.service": paths.unit_dir / "llmctl-llama.service",
        "installed/systemd/user/llmctl.target": paths.unit_dir / "llmctl.target",
        "installed/llmctl/gateway.yaml": paths.gateway_file,
        "state/state.json": state_file(paths.state_dir),
    }
    # The user's own llmctl-mine.service has no llmctl header: not llmctl's, not snapshotted.
    assert set(manifest.files) == set(sources)
    for key, source in sources.items():
        data = source.read_bytes()
        entry = manifest.files[key]
        assert loaded.read(key) == data
        assert (entry.sha256, entry.size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert entry.mode == source.stat().st_mode & 0o777
    assert manifest.files["config/llmctl.yaml"].mode == 0o600
    assert str(paths.gateway_file.relative_to(paths.config_home)) == GATEWAY_REL


def test_a_snapshot_without_config_or_state_holds_what_there_is(paths: Paths) -> None:
    write(paths.unit_dir / "llmctl-llama.service", UNIT_LLAMA)
    taken = take(paths, paths.config_home / "missing.yaml")
    manifest = snapshots.load(paths, taken.id).require()
    assert set(manifest.files) == {"installed/systemd/user/llmctl-llama.service"}
    assert manifest.config_path is None and manifest.config_sha256 is None
    assert manifest.config_schema_version is None


def test_ids_are_time_ordered_readable_and_unique_within_a_second(paths: Paths) -> None:
    install(paths)
    times = [T0, T0, T0, T0 + timedelta(seconds=1), T0 - timedelta(hours=1)]  # the clock goes back
    commands = ["up", "switch", "snapshot create", "rollback", "up"]
    ids = [take(paths, None, when, command=cmd).id for when, cmd in zip(times, commands, strict=True)]
    assert ids == [
        "20261123T153012Z-up",
        "20261123T153012Z.2-switch",
        "20261123T153012Z.3-snapshot-create",
        "20261123T153013Z-rollback",
        "20261123T153013Z.2-up",  # never before an existing one, even if the clock says so
    ]
    assert [s.id for s in snapshots.list_snapshots(paths)] == ids


def test_same_second_counter_sorts_numerically_past_nine() -> None:
    existing: list[str] = []
    for _ in range(12):
        existing.append(next_id(existing, T0, "Up!"))
    assert existing[-1] == "20261123T153012Z.12-up"
    assert sorted(existing, key=order_key) == existing


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_are_never_copied(paths: Paths) -> None:
    config = install(paths)
    take(paths, config)
    take(paths, config, T0 + timedelta(seconds=5))
    stored = [p for p in snapshots.snapshots_dir(paths).rglob("*") if p.is_file()]
    assert len(stored) == 12
    for path in stored:
        data = path.read_bytes()
        assert MASTER_KEY.encode() not in data and PROVIDER_KEY.encode() not in data, path
        assert path.name not in ("gateway.env", "secrets.env")


def test_a_file_that_holds_a_secret_value_is_refused_without_printing_it(paths: Paths) -> None:
    install(paths)
    leaky = minimal_config()
    leaky["backends"]["llama"]["environment"] = {"OPENAI_API_KEY": PROVIDER_KEY}
    config = write(paths.default_config_file, dump(leaky))
    with pytest.raises(LlmctlError) as caught:
        take(paths, config)
    message = str(caught.value)
    assert f"{config} contains the value of OPENAI_API_KEY in {paths.secrets_env_file}" in message
    assert PROVIDER_KEY not in message and PROVIDER_KEY not in (caught.value.hint or "")
    assert snapshots.list_snapshots(paths) == []


def test_a_backend_key_is_never_copied_and_a_file_holding_it_is_refused(paths: Paths) -> None:
    config = install(paths)
    keyed = minimal_config()
    keyed["backends"]["vllm"] = {
        "kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8001, "model": "qwen", "api_key": True,
    }  # fmt: skip
    keyed["models"]["qwen"] = {"backend": "vllm", "source": "Qwen/Qwen2.5-7B-Instruct"}
    parsed, _ = parse_config(dump(keyed))
    write(config, dump(keyed), 0o600)
    for rel, text in render_stack(parsed, RenderOptions(config, paths, resolve=Path)).files.items():
        write(paths.config_home / rel, text)
    assert ensure_backend_keys(parsed, paths) == ["vllm"]
    key = read_backend_key(paths.backend_key_file("vllm"), "VLLM_API_KEY")
    snapshot = take(paths, config)
    stored = [p for p in snapshot.path.rglob("*") if p.is_file()]
    assert any(p.name == "llmctl-vllm.service" for p in stored)
    assert not any(p.name == "vllm.env" for p in stored)
    assert all(key.encode() not in p.read_bytes() for p in stored)
    write(paths.gateway_file, GATEWAY + f"# pasted by hand: {key}\n")
    with pytest.raises(LlmctlError) as caught:
        take(paths, config, T0 + timedelta(seconds=5))
    assert f"contains the value of LLMCTL_API_KEY_VLLM in {paths.backend_key_file('vllm')}" in str(
        caught.value
    )
    assert key not in str(caught.value)


def test_the_routers_key_is_never_copied_and_a_file_holding_it_is_refused(paths: Paths) -> None:
    config = install(paths)
    ensure_router_key(paths.router_key_file)
    key = read_router_key(paths.router_key_file)
    write(paths.gateway_file, GATEWAY + f"# pasted by hand: {key}\n")
    with pytest.raises(LlmctlError) as caught:
        take(paths, config)
    assert f"contains the value of LLMCTL_ROUTER_KEY in {paths.router_key_file}" in str(caught.value)
    assert key not in str(caught.value)


# --- retention -------------------------------------------------------------------------------


def test_retention_keeps_exactly_n_newest_plus_pinned_and_corrupt(paths: Paths) -> None:
    install(paths)
    ids = [take(paths, None, T0 + timedelta(minutes=i), keep=3).id for i in range(3)]
    snapshots.pin(paths, ids[0])
    snapshots.pin(paths, ids[1])
    broken = take(paths, None, T0 + timedelta(minutes=3), keep=3)
    (broken.path / "manifest.json").write_text("{")
    ids += [broken.id]
    ids += [take(paths, None, T0 + timedelta(minutes=i), keep=3).id for i in range(4, 9)]
    remaining = [s.id for s in snapshots.list_snapshots(paths)]
    # Pinned 0 and 1, the corrupt 3 (never deleted automatically), and exactly the 3 newest.
    assert remaining == [ids[0], ids[1], ids[3], ids[6], ids[7], ids[8]]
    snapshots.unpin(paths, ids[1])
    assert snapshots.prune(paths, 3) == [ids[1]]


def test_router_load_snapshots_never_push_the_users_own_out(paths: Paths) -> None:
    install(paths)
    mine = [take(paths, None, T0 + timedelta(minutes=i), keep=3).id for i in range(3)]
    loads = [
        take(paths, None, T0 + timedelta(minutes=10 + i), keep=3, command=snapshots.LOAD_COMMAND).id
        for i in range(snapshots.LOAD_KEEP + 4)
    ]
    remaining = [s.id for s in snapshots.list_snapshots(paths)]
    # All three of the user's survive many loads; the loads keep only their own newest few.
    assert remaining == mine + loads[-snapshots.LOAD_KEEP :]
    newer = take(paths, None, T0 + timedelta(hours=1), keep=3).id
    assert [s.id for s in snapshots.list_snapshots(paths)] == [
        *mine[1:],
        *loads[-snapshots.LOAD_KEEP :],
        newer,
    ]


# --- corruption ------------------------------------------------------------------------------


def test_a_truncated_manifest_is_listed_as_corrupt_kept_and_named_on_load(paths: Paths) -> None:
    install(paths)
    first = take(paths, None)
    second = take(paths, None, T0 + timedelta(seconds=1))
    manifest = first.path / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    listed = snapshots.list_snapshots(paths)
    assert [(s.id, s.corrupt) for s in listed] == [(first.id, True), (second.id, False)]
    assert listed[0].problem is not None
    assert listed[0].problem.startswith("manifest.json is not valid JSON (truncated?): ")
    with pytest.raises(LlmctlError, match=rf"snapshot {first.id} is corrupt: manifest\.json is not valid"):
        snapshots.load(paths, first.id)
    with pytest.raises(LlmctlError, match="is corrupt"):
        snapshots.pin(paths, first.id)
    assert snapshots.resolve_id(paths, "latest") == second.id
    with pytest.raises(LlmctlError, match="only one usable snapshot"):
        snapshots.resolve_id(paths, "previous")  # the corrupt one is no rollback target
    take(paths, None, T0 + timedelta(seconds=2), keep=1)
    assert first.path.is_dir()  # never deleted automatically
    snapshots.delete(paths, first.id)
    assert not first.path.exists()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda m: m.unlink(), "manifest.json is missing"),
        (lambda m: m.write_bytes(b"\xff\xfe"), "manifest.json is not UTF-8 text"),
        (lambda m: m.write_text("[]"), "manifest.json is not a JSON object"),
        (lambda m: _edit(m, schema_version=2), "schema_version 2, newer than this llmctl reads"),
        (lambda m: _edit(m, id="20261123T153012Z-other"), "names id '20261123T153012Z-other'"),
        (lambda m: _edit(m, pinned="yes"), "'pinned' is missing or not a bool"),
        (lambda m: _edit(m, config_sha256="0" * 64), "config_sha256 does not match"),
        (
            lambda m: _edit_files(m, "installed/llmctl/gateway.env"),
            "'installed/llmctl/gateway.env' is not a file llmctl snapshots",
        ),
        (lambda m: _edit_files(m, "installed/../../.bashrc"), "is not a file llmctl snapshots"),
        (lambda m: _edit_files(m, "config/llmctl.yaml", sha256="xyz"), "has no valid sha256"),
    ],
)
def test_a_damaged_manifest_is_corrupt_with_its_reason(
    paths: Paths, damage: Callable[[Path], None], problem: str
) -> None:
    config = install(paths)
    taken = take(paths, config)
    damage(taken.path / "manifest.json")
    (listed,) = snapshots.list_snapshots(paths)
    assert listed.corrupt and listed.problem is not None and problem in listed.problem
    with pytest.raises(LlmctlError, match="is corrupt"):
        snapshots.load(paths, taken.id)


def _edit(manifest: Path, **changes: object) -> None:
    data = json.loads(manifest.read_text())
    data.update(changes)
    manifest.write_text(json.dumps(data))


def _edit_files(manifest: Path, key: str, **entry: object) -> None:
    data = json.loads(manifest.read_text())
    data["files"][key] = {"sha256": "0" * 64, "size": 1, "mode": "0644"} | entry
    manifest.write_text(json.dumps(data))


def test_a_file_whose_sha256_does_not_match_is_named(paths: Paths) -> None:
    config = install(paths)
    taken = take(paths, config)
    unit = taken.path / "installed/systemd/user/llmctl-llama.service"
    unit.write_text(UNIT_LLAMA.replace("llama", "LLAMA"))  # same size, other bytes
    (taken.path / "state/state.json").unlink()
    assert not snapshots.list_snapshots(paths)[0].corrupt  # list reads manifests only
    (verified,) = snapshots.list_snapshots(paths, verify=True)
    assert verified.problem is not None
    assert verified.problem.startswith("installed/systemd/user/llmctl-llama.service: sha256 ")
    assert verified.problem.endswith("(and 1 more)")
    with pytest.raises(LlmctlError) as caught:
        snapshots.load(paths, taken.id)
    assert str(caught.value).startswith(f"snapshot {taken.id} is corrupt: installed/systemd/user/")
    assert caught.value.details[0].startswith("installed/systemd/user/llmctl-llama.service: sha256 ")
    assert "does not match the manifest's" in caught.value.details[0]
    assert caught.value.details[1] == "state/state.json: missing"
    with pytest.raises(LlmctlError, match=r"llmctl-llama\.service: sha256"):
        taken.read("installed/systemd/user/llmctl-llama.service")


# --- write failures: the new snapshot is all or nothing, the old ones and the units untouched --


def assert_nothing_damaged(paths: Paths, before: dict[str, bytes], survivor: str) -> None:
    assert installed_bytes(paths) == before
    assert [s.id for s in snapshots.list_snapshots(paths)] == [survivor]
    snapshots.load(paths, survivor)  # every file still verifies
    assert leftovers(paths) == []


def test_snapshots_path_taken_by_a_file_is_a_clear_error(paths: Paths) -> None:
    config = install(paths)
    before = installed_bytes(paths)
    write(snapshots.snapshots_dir(paths), "not a directory")
    with pytest.raises(LlmctlError) as caught:
        take(paths, config)
    assert str(caught.value) == (
        f"cannot write a snapshot in {snapshots.snapshots_dir(paths)}: "
        "a file is in the way where a directory should be"
    )
    assert caught.value.hint is not None and "not touched" in caught.value.hint
    assert installed_bytes(paths) == before
    with pytest.raises(LlmctlError, match="cannot read the snapshot directory"):
        snapshots.list_snapshots(paths)


@contextmanager
def mounted(args: list[str], target: Path) -> Iterator[None]:
    """mount(8) for a test, or skip: needs root (or CAP_SYS_ADMIN), as in the CI container."""
    result = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Really read-only: chmod for a normal user; a read-only bind mount for root."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    with mounted(["--bind", "-o", "ro", str(directory)], directory):
        # Older mount(8) ignores ro on the first bind; remount makes sure.
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=False)
        yield


def test_a_read_only_snapshot_dir_fails_clearly_and_damages_nothing(paths: Paths) -> None:
    config = install(paths)
    survivor = take(paths, config).id
    before = installed_bytes(paths)
    root = snapshots.snapshots_dir(paths)
    with read_only(root):
        probe = root / ".probe"
        with pytest.raises(OSError, match=r"Read-only|Permission denied"):
            probe.write_text("x")  # the setup really stops writes, even as root
        with pytest.raises(LlmctlError) as caught:
            take(paths, config, T0 + timedelta(seconds=1))
        assert snapshots.list_snapshots(paths)[0].id == survivor
    assert str(caught.value) in (
        f"cannot write a snapshot in {root}: read-only file system",
        f"cannot write a snapshot in {root}: permission denied",
    )
    assert caught.value.hint is not None and f"Make {root} writable" in caught.value.hint
    assert_nothing_damaged(paths, before, survivor)


def test_a_full_disk_fails_clearly_and_leaves_nothing_half_written(paths: Paths, tmp_path: Path) -> None:
    config = install(paths)
    root = snapshots.snapshots_dir(paths)
    root.mkdir(parents=True)
    with mounted(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"], root):
        survivor = take(paths, config).id
        write(config, dump(minimal_config()) + "# " + "x" * 200_000 + "\n")
        before = installed_bytes(paths)
        with pytest.raises(LlmctlError) as caught:
            take(paths, config, T0 + timedelta(seconds=1))
        assert str(caught.value) == f"cannot write a snapshot in {root}: no space left on device"
        assert caught.value.hint is not None and caught.value.hint.startswith("Free space there")
        assert_nothing_damaged(paths, before, survivor)


def fail_on_write(monkeypatch: pytest.MonkeyPatch, error: int, *, after: int) -> None:
    """Fault the snapshot write boundary: the `after`-th file gets half its bytes, then error."""
    real = capture._write_new
    calls = 0

    def faulty(path: Path, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls < after:
            real(path, data)
            return
        real(path, data[: len(data) // 2])
        raise OSError(error, os.strerror(error), str(path))

    monkeypatch.setattr(capture, "_write_new", faulty)


@pytest.mark.parametrize(
    ("error", "cause", "hint"),
    [
        (errno.ENOSPC, "no space left on device", "Free space there"),
        (errno.EDQUOT, "disk quota exceeded", "Free space there"),
        (errno.EACCES, "permission denied", "Make "),
        (errno.EROFS, "read-only file system", "Make "),
        (errno.EIO, "Input/output error", "Existing snapshots and the installed units were not touched."),
    ],
)
def test_a_write_error_midway_leaves_no_trace(
    paths: Paths, monkeypatch: pytest.MonkeyPatch, error: int, cause: str, hint: str
) -> None:
    config = install(paths)
    survivor = take(paths, config).id
    before = installed_bytes(paths)
    for after in (1, 3, 6):  # the first file, one in the middle, the manifest
        fail_on_write(monkeypatch, error, after=after)
        with pytest.raises(LlmctlError) as caught:
            take(paths, config, T0 + timedelta(seconds=1))
        root = snapshots.snapshots_dir(paths)
        assert str(caught.value) == f"cannot write a snapshot in {root}: {cause}"
        assert caught.value.hint is not None and caught.value.hint.startswith(hint)
        assert caught.value.details and caught.value.details[0].startswith(str(root / ".tmp-"))
        assert_nothing_damaged(paths, before, survivor)


def test_an_interrupt_midway_leaves_no_trace(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    config = install(paths)
    survivor = take(paths, config).id
    before = installed_bytes(paths)

    def interrupted(path: Path, data: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(capture, "_write_new", interrupted)
    with pytest.raises(KeyboardInterrupt):
        take(paths, config, T0 + timedelta(seconds=1))
    assert_nothing_damaged(paths, before, survivor)


def test_leftovers_of_a_crashed_write_are_ignored_then_cleaned(paths: Paths) -> None:
    config = install(paths)
    first = take(paths, config)
    root = snapshots.snapshots_dir(paths)
    shutil.copytree(first.path, root / ".tmp-crashed")
    (root / ".tmp-crashed" / "manifest.json").unlink()
    shutil.copytree(first.path, root / f".tmp-del-{first.id}-0000")
    assert [s.id for s in snapshots.list_snapshots(paths)] == [first.id]
    with pytest.raises(LlmctlError, match="no snapshot matches"):
        snapshots.resolve_id(paths, ".tmp")
    take(paths, config, T0 + timedelta(seconds=1))
    assert leftovers(paths) == []


def test_pinning_a_snapshot_on_a_full_disk_keeps_its_manifest(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = take(paths, install(paths))
    manifest = (taken.path / "manifest.json").read_bytes()

    def full(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("llmctl.snapshots.store.atomic_write", full)
    with pytest.raises(LlmctlError, match=r"cannot update the manifest in .*: no space left on device"):
        snapshots.pin(paths, taken.id)
    assert (taken.path / "manifest.json").read_bytes() == manifest


# --- ids, pins, deletion ---------------------------------------------------------------------


def test_resolve_id_by_exact_prefix_latest_previous(paths: Paths) -> None:
    install(paths)
    with pytest.raises(LlmctlError, match="there are no snapshots yet"):
        snapshots.resolve_id(paths, "latest")
    a = take(paths, None).id
    b = take(paths, None, command="switch").id
    c = take(paths, None, T0 + timedelta(days=1)).id
    assert snapshots.resolve_id(paths, "latest") == c
    assert snapshots.resolve_id(paths, "previous") == b
    assert snapshots.resolve_id(paths, a) == a
    assert snapshots.resolve_id(paths, "20261124") == c
    assert snapshots.resolve_id(paths, "20261123T153012Z.") == b
    with pytest.raises(LlmctlError) as caught:
        snapshots.resolve_id(paths, "20261123")
    assert str(caught.value) == "'20261123' matches 2 snapshots" and caught.value.details == [a, b]
    for ref in ("2025", "", "../x"):
        with pytest.raises(LlmctlError, match="no snapshot matches"):
            snapshots.resolve_id(paths, ref)
    with pytest.raises(LlmctlError, match=r"no snapshot '\.\./\.\./etc'"):
        snapshots.load(paths, "../../etc")


def test_delete_refuses_a_pinned_snapshot_without_force(paths: Paths) -> None:
    taken = take(paths, install(paths))
    assert snapshots.pin(paths, taken.id).pinned
    assert snapshots.load(paths, taken.id).pinned
    with pytest.raises(LlmctlError, match=f"snapshot {taken.id} is pinned") as caught:
        snapshots.delete(paths, taken.id)
    assert caught.value.hint == f"`llmctl snapshot unpin {taken.id}` first, or delete it with --force."
    snapshots.delete(paths, taken.id, force=True)
    assert snapshots.list_snapshots(paths) == [] and leftovers(paths) == []
    with pytest.raises(LlmctlError, match="no snapshot"):
        snapshots.delete(paths, taken.id)


# --- restore ---------------------------------------------------------------------------------


def drift(paths: Paths, config: Path) -> None:
    """Everything `up`/`switch` could change after the snapshot."""
    changed = minimal_config()
    changed["backends"]["llama"]["port"] = 8081
    write(config, dump(changed), 0o644)
    write(paths.unit_dir / "llmctl-llama.service", UNIT_LLAMA + "Environment=X=1\n")
    write(paths.unit_dir / "llmctl-new.service", f"{GENERATED_MARK}\n[Unit]\n")
    paths.gateway_file.unlink()
    save_serving(paths.state_dir, {"llama": "big"})


def test_restore_plan_then_files_bring_back_exactly_the_snapshot(paths: Paths) -> None:
    config = install(paths)
    expected = installed_bytes(paths)
    expected_state = state_file(paths.state_dir).read_bytes()
    taken = take(paths, config)
    drift(paths, config)
    state = str(state_file(paths.state_dir))
    plan = snapshots.restore_plan(paths, taken)
    assert [(c.path, c.kind) for c in plan] == [
        ("llmctl/gateway.yaml", ChangeKind.ADDED),
        ("systemd/user/llmctl-llama.service", ChangeKind.CHANGED),
        ("systemd/user/llmctl.target", ChangeKind.UNCHANGED),
        ("systemd/user/llmctl-new.service", ChangeKind.REMOVED),  # installed since: llmctl's, goes
        (state, ChangeKind.CHANGED),
        ("llmctl/llmctl.yaml", ChangeKind.CHANGED),
    ]
    assert installed_bytes(paths) != expected  # planning wrote nothing
    done = snapshots.restore_files(paths, taken)
    # Writes first, the removal last: an interrupted restore never leaves fewer units than before.
    assert [c.path for c in done] == [
        "llmctl/gateway.yaml",
        "systemd/user/llmctl-llama.service",
        state,
        "llmctl/llmctl.yaml",
        "systemd/user/llmctl-new.service",
    ]
    assert installed_bytes(paths) == expected  # the user's own unit and the secrets untouched too
    assert state_file(paths.state_dir).read_bytes() == expected_state
    assert config.stat().st_mode & 0o777 == 0o600  # the recorded mode comes back
    assert {c.kind for c in snapshots.restore_plan(paths, taken)} == {ChangeKind.UNCHANGED}


def test_restore_removes_state_the_snapshot_did_not_have(paths: Paths, tmp_path: Path) -> None:
    config = write(tmp_path / "elsewhere" / "llmctl.yaml", dump(minimal_config()))
    write(paths.unit_dir / "llmctl-llama.service", UNIT_LLAMA)
    taken = take(paths, config)
    save_serving(paths.state_dir, {"llama": "big"})
    write(config, "version: 1\n")
    plan = {c.path: c.kind for c in snapshots.restore_plan(paths, taken) if c.kind != ChangeKind.UNCHANGED}
    assert plan == {str(state_file(paths.state_dir)): ChangeKind.REMOVED, str(config): ChangeKind.CHANGED}
    snapshots.restore_files(paths, taken)
    assert not state_file(paths.state_dir).exists()
    assert config.read_text() == dump(minimal_config())


def test_restore_follows_a_symlinked_config_and_can_target_another_path(paths: Paths, tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "llmctl.yaml", dump(minimal_config()))
    paths.default_config_file.parent.mkdir(parents=True)
    paths.default_config_file.symlink_to(real)
    taken = take(paths, paths.default_config_file)
    write(real, "version: 1\n")
    snapshots.restore_files(paths, taken)
    assert paths.default_config_file.is_symlink() and real.read_text() == dump(minimal_config())
    other = tmp_path / "other.yaml"
    (change,) = [c for c in snapshots.restore_files(paths, taken, config_path=other)]
    assert (change.path, change.kind) == (str(other), ChangeKind.ADDED)
    assert other.read_text() == dump(minimal_config())


def test_restore_from_a_damaged_snapshot_writes_nothing(paths: Paths) -> None:
    config = install(paths)
    taken = take(paths, config)
    drift(paths, config)
    before = installed_bytes(paths)
    (taken.path / "config" / "llmctl.yaml").write_text("version: 1\n")
    with pytest.raises(LlmctlError, match=r"is corrupt: config/llmctl.yaml: \d+ bytes, the manifest says"):
        snapshots.restore_files(paths, taken)
    assert installed_bytes(paths) == before


def test_a_failed_restore_names_the_file_and_what_was_done(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = install(paths)
    taken = take(paths, config)
    drift(paths, config)

    def full_at_state(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
        if path.name == "state.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        atomic_write(path, data, mode=mode)

    monkeypatch.setattr("llmctl.snapshots.restore.atomic_write", full_at_state)
    with pytest.raises(LlmctlError) as caught:
        snapshots.restore_files(paths, taken)
    assert str(caught.value) == f"cannot restore {state_file(paths.state_dir)}: no space left on device"
    assert caught.value.details == [
        "already restored: llmctl/gateway.yaml",
        "already restored: systemd/user/llmctl-llama.service",
    ]


# --- diff ------------------------------------------------------------------------------------


def test_diff_between_two_snapshots_line_by_line(paths: Paths) -> None:
    config = install(paths)
    a = take(paths, config)
    drift(paths, config)
    b = take(paths, config, T0 + timedelta(minutes=1), command="switch")
    assert snapshots.diff(paths, a, b).splitlines() == [
        "--- 20261123T153012Z-up/config/llmctl.yaml",
        "+++ 20261123T153112Z-switch/config/llmctl.yaml",
        "@@ -3,7 +3,7 @@",
        "   llama:",
        "     kind: llama-server",
        "     command: /opt/llama/llama-server",
        "-    port: 8080",
        "+    port: 8081",
        "     model: tiny",
        " models:",
        "   tiny:",
        "--- 20261123T153012Z-up/systemd/user/llmctl-llama.service",
        "+++ 20261123T153112Z-switch/systemd/user/llmctl-llama.service",
        "@@ -1,3 +1,4 @@",
        " # Generated by llmctl 0.1.0; `llmctl up` overwrites it.",
        " [Unit]",
        " Description=llama",
        "+Environment=X=1",
        "--- /dev/null",
        "+++ 20261123T153112Z-switch/systemd/user/llmctl-new.service",
        "@@ -0,0 +1,2 @@",
        "+# Generated by llmctl",
        "+[Unit]",
        "--- 20261123T153012Z-up/llmctl/gateway.yaml",
        "+++ /dev/null",
        "@@ -1,3 +0,0 @@",
        "-# Generated by llmctl 0.1.0",
        "-model_list:",
        "-- model_name: tiny",
        "--- 20261123T153012Z-up/active-models",
        "+++ 20261123T153112Z-switch/active-models",
        "@@ -1 +1 @@",
        "-llama: tiny",
        "+llama: big",
    ]
    assert snapshots.diff(paths, a, a) == ""


def test_diff_against_what_is_installed_now(paths: Paths) -> None:
    config = install(paths)
    taken = take(paths, config)
    assert snapshots.diff(paths, taken, snapshots.CURRENT) == ""
    write(paths.unit_dir / "llmctl.target", UNIT_TARGET.rstrip("\n"))
    state_file(paths.state_dir).unlink()
    assert snapshots.diff(paths, taken, "current").splitlines() == [
        "--- 20261123T153012Z-up/systemd/user/llmctl.target",
        "+++ current/systemd/user/llmctl.target",
        "@@ -1,3 +1,3 @@",
        " # Generated by llmctl 0.1.0",
        " [Unit]",
        "-Description=stack",
        "+Description=stack",
        "\\ No newline at end of file",
        "--- 20261123T153012Z-up/active-models",
        "+++ current/active-models",
        "@@ -1 +0,0 @@",
        "-llama: tiny",
    ]
    other = write(paths.config_home / "other.yaml", "version: 1\n")
    assert snapshots.diff(paths, taken, "current", config_path=other).splitlines()[:3] == [
        "--- 20261123T153012Z-up/config/llmctl.yaml",
        "+++ current/config/llmctl.yaml",
        "@@ -1,15 +1 @@",
    ]


# --- gateway.cache: redis.conf is config, its password is a secret ------------------------------


def install_cache(paths: Paths) -> tuple[Path, str]:
    """A config with gateway.cache, its rendered files installed and its password generated."""
    cached = minimal_config()
    cached["gateway"]["cache"] = {"type": "redis", "command": "/usr/bin/redis-server"}
    parsed, _ = parse_config(dump(cached))
    config = write(paths.default_config_file, dump(cached), 0o600)
    for rel, text in render_stack(parsed, RenderOptions(config, paths, resolve=Path)).files.items():
        write(paths.config_home / rel, text)
    assert ensure_redis(parsed, paths) is True
    return config, read_redis_password(paths.redis_env_file)


def test_redis_conf_is_snapshotted_and_restored_its_password_files_never(paths: Paths) -> None:
    config, password = install_cache(paths)
    original = paths.redis_conf_file.read_text()
    snapshot = take(paths, config)
    assert snapshot.require().files.keys() >= {
        "installed/llmctl/redis.conf",
        "installed/systemd/user/llmctl-redis.service",
    }
    stored = [p for p in snapshot.path.rglob("*") if p.is_file()]
    assert not [p.name for p in stored if p.name in ("redis.env", "redis-auth.conf")]
    assert all(password.encode() not in p.read_bytes() for p in stored)
    write(paths.redis_conf_file, original.replace("maxmemory 256mb", "maxmemory 1gb"))
    changes = {
        c.path: c.kind for c in snapshots.restore_plan(paths, snapshot) if c.kind != ChangeKind.UNCHANGED
    }
    assert changes == {"llmctl/redis.conf": ChangeKind.CHANGED}
    snapshots.restore_files(paths, snapshot)
    assert paths.redis_conf_file.read_text() == original
    assert read_redis_password(paths.redis_env_file) == password  # a restore leaves secrets alone


def test_a_file_holding_the_redis_password_is_refused(paths: Paths) -> None:
    config, password = install_cache(paths)
    write(paths.redis_conf_file, paths.redis_conf_file.read_text() + f"requirepass {password}\n")
    with pytest.raises(LlmctlError) as caught:
        take(paths, config)
    assert f"contains the value of LLMCTL_REDIS_PASSWORD in {paths.redis_env_file}" in str(caught.value)
    assert password not in str(caught.value)
