"""llmctl doctor: every check driven to each of its outcomes with described facts."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmctl import doctor, procs, systemd
from llmctl.config.load import load_config
from llmctl.doctor import Check, GpuFacts, PortHolder, Probes
from llmctl.errors import LlmctlError
from llmctl.install import ChangeKind, FileChange, apply_changes, compare
from llmctl.paths import Paths
from llmctl.render.units import RenderOptions, render_stack
from llmctl.secrets import ensure_gateway_key
from llmctl.stack import stack_units
from tests.conftest import minimal_config, write_config

GIB = 1024**3


def executable(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


def gguf(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * (size - 4))
    return path


def good_config(tmp_path: Path, **overrides: Any) -> Path:
    """A config whose executables and model file exist (no warnings)."""
    config = minimal_config(**overrides)
    config["backends"]["llama"]["command"] = str(executable(tmp_path / "bin" / "llama-server"))
    config["models"]["tiny"]["source"] = str(gguf(tmp_path / "models" / "tiny.gguf"))
    # An entry point as pip writes it: the gateway unit runs its #! python.
    config["gateway"]["command"] = str(executable(tmp_path / "bin" / "litellm", f"#!{sys.executable}\n"))
    return write_config(tmp_path / "llmctl.yaml", config)


def fake_probes(**overrides: Any) -> Probes:
    """Probes of a healthy machine with nothing running; tests change what they look at."""
    values: dict[str, Any] = {
        "manager_reachable": lambda: True,
        "linger": lambda: True,
        "verify": lambda files: "",
        "unit_running": lambda units: dict.fromkeys(units, False),
        "need_reload": lambda units: [],
        "version": lambda kind, path: "version: 1 (test)",
        "port_in_use": lambda host, port: False,
        "port_holders": lambda port: [],
        "gpus": lambda: GpuFacts(False, "NVML Shared Library Not Found"),
        "disk_usage": lambda path: (100 * GIB, 50 * GIB, 50 * GIB),
        "user": lambda: "alice",
    }
    values.update(overrides)
    return Probes(**values)


# --- config ---------------------------------------------------------------------------------------


def test_config_ok_warn_fail_and_missing(tmp_path: Path) -> None:
    check, loaded = doctor.check_config(good_config(tmp_path))
    assert (check.status, loaded is not None) == ("ok", True)
    assert "1 backends, 1 models" in check.reason

    check, loaded = doctor.check_config(write_config(tmp_path / "w.yaml", minimal_config()))
    assert check.status == "warn" and loaded is not None
    assert any("executable '/opt/llama/llama-server' not found" in d for d in check.details)

    check, loaded = doctor.check_config(write_config(tmp_path / "bad.yaml", minimal_config(version=2)))
    assert check.status == "fail" and loaded is None
    assert check.details and check.fix == "llmctl validate names each problem"

    check, loaded = doctor.check_config(tmp_path / "none.yaml")
    assert check.status == "fail" and loaded is None
    assert check.fix == "llmctl init writes a starter config"


# --- systemd ----------------------------------------------------------------------------------------


def test_user_manager() -> None:
    assert doctor.check_user_manager(True, "/run/user/1000").status == "ok"
    check = doctor.check_user_manager(False, None)
    assert check.status == "fail"
    assert "(XDG_RUNTIME_DIR is not set)" in check.reason
    assert check.fix and "loginctl enable-linger" in check.fix
    assert "XDG_RUNTIME_DIR" not in doctor.check_user_manager(False, "/run/user/1000").reason


@pytest.mark.parametrize(
    ("linger", "status", "words"),
    [
        (True, "ok", "lingering is on"),
        (False, "warn", "stops when your last session"),
        (None, "warn", "cannot tell"),
    ],
)
def test_linger(linger: bool | None, status: str, words: str) -> None:
    check = doctor.check_linger(linger, "alice")
    assert check.status == status and words in check.reason
    if status != "ok":
        assert check.fix == "loginctl enable-linger alice"


def test_unit_files_outcomes(tmp_path: Path) -> None:
    unit = tmp_path / "llmctl-llama.service"
    assert doctor.check_unit_files([], lambda files: "boom").status == "ok"
    assert doctor.check_unit_files([unit], lambda files: "").status == "ok"
    check = doctor.check_unit_files([unit], lambda files: f"{unit}:12: Unknown key 'RestartSecs'\n")
    assert check.status == "fail"
    assert check.details == (f"{unit}:12: Unknown key 'RestartSecs'",)

    def missing(files: object) -> str:
        raise LlmctlError("systemd-analyze not found", hint="It comes with systemd (package systemd).")

    check = doctor.check_unit_files([unit], missing)
    assert check.status == "warn" and "systemd-analyze not found" in check.reason


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_files_with_the_real_systemd_analyze(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # verify brings its own
    good = tmp_path / "llmctl-good.service"
    good.write_text(f"[Unit]\nDescription=good\n[Service]\nType=exec\nExecStart={sys.executable} -V\n")
    bad = tmp_path / "llmctl-bad.service"
    bad.write_text(
        f"[Unit]\nDescription=bad\n[Service]\nType=exec\nExecStart={sys.executable} -V\nRestartSecs=5\n"
    )
    assert doctor.check_unit_files([good], systemd.verify).status == "ok"
    check = doctor.check_unit_files([good, bad], systemd.verify)
    assert check.status == "fail"
    assert any("Unknown key 'RestartSecs'" in line for line in check.details)


def test_installed_unit_files_only_llmctls_own(tmp_path: Path) -> None:
    (tmp_path / "llmctl-a.service").write_text("# Generated by llmctl 0.1.0\n[Unit]\n")
    (tmp_path / "llmctl-mine.service").write_text("[Unit]\nDescription=a user's own\n")
    (tmp_path / "other.service").write_text("# Generated by llmctl 0.1.0\n")
    assert doctor.installed_unit_files(tmp_path) == [tmp_path / "llmctl-a.service"]
    assert doctor.installed_unit_files(tmp_path / "missing") == []


def change(kind: ChangeKind, path: str = "systemd/user/llmctl-llama.service") -> FileChange:
    return FileChange(path, kind, "old" if kind is not ChangeKind.ADDED else None, "new")


def test_units_in_step() -> None:
    same = [change(ChangeKind.UNCHANGED), change(ChangeKind.UNCHANGED, "llmctl/gateway.yaml")]
    assert doctor.check_units_in_step(same, []).status == "ok"
    fresh = doctor.check_units_in_step([change(ChangeKind.ADDED)], [])
    assert (fresh.status, fresh.reason, fresh.fix) == ("warn", "the stack is not installed yet", "llmctl up")
    edited = doctor.check_units_in_step([change(ChangeKind.CHANGED), change(ChangeKind.UNCHANGED, "x")], [])
    assert edited.status == "warn" and "1 installed file(s) differ" in edited.reason
    assert edited.details == ("changed: systemd/user/llmctl-llama.service",)
    stale = doctor.check_units_in_step(same, ["llmctl-llama.service"])
    assert stale.status == "warn" and "1 unit(s) need daemon-reload" in stale.reason


# --- executables --------------------------------------------------------------------------------------


def units_of(path: Path) -> list[Any]:
    """The backend and the gateway (other units the stack may grow are not what these tests are about)."""
    return [u for u in stack_units(load_config(path).config) if u.kind in ("llama-server", "gateway")]


def test_executables(tmp_path: Path) -> None:
    units = units_of(good_config(tmp_path))
    versions = {"llama-server": "version: 7 (abc)", "gateway": None}

    def resolve(command: str) -> Path | None:
        return Path(command) if Path(command).exists() else None

    check = doctor.check_executables(units, resolve, lambda kind, path: versions[kind])
    assert check.status == "ok"
    assert any(d.endswith("version: 7 (abc)") for d in check.details)
    assert any(d.endswith("version unknown") for d in check.details)

    check = doctor.check_executables(units, lambda command: None, lambda kind, path: None)
    assert check.status == "fail" and check.reason == "not found: llama, gateway"
    assert doctor.check_executables([], resolve, lambda kind, path: None).status == "ok"


def test_executable_version_from_version_output_and_from_package_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = executable(
        tmp_path / "llama-server", "#!/bin/sh\necho 'load_backend: x' >&2\necho 'version: 9 (c0ffee)' >&2\n"
    )
    assert doctor.executable_version("llama-server", server) == "version: 9 (c0ffee)"
    assert doctor.executable_version("ollama", executable(tmp_path / "ollama", "#!/bin/sh\nexit 3\n")) is None
    # A python entry point: the version comes from its venv's package metadata, not from running it.
    entry = executable(tmp_path / "venv" / "bin" / "litellm", f"#!{sys.executable}\nraise SystemExit(9)\n")
    monkeypatch.setitem(doctor._PYTHON_DISTRIBUTION, "gateway", "click")
    found = doctor.executable_version("gateway", entry)
    assert found is not None and found.startswith("click 8.")
    assert doctor.executable_version("llama-cpp-python", Path(sys.executable)) is None  # no llama_cpp here


# --- ports ------------------------------------------------------------------------------------------------


def test_ports(tmp_path: Path) -> None:
    units = units_of(good_config(tmp_path))  # llama on 8080, gateway (with its socket) on 4000
    busy = {8080, 4000}

    def in_use(host: str, port: int) -> bool:
        return port in busy

    def run(holders: dict[int, list[PortHolder]], running: Callable[[str], bool] | None) -> Check:
        return doctor.check_ports(units, running, in_use, lambda port: holders.get(port, []))

    def none_running(unit: str) -> bool:
        return False

    def socket_running(unit: str) -> bool:
        return unit == "llmctl-gateway.socket"

    assert doctor.check_ports(units, none_running, lambda h, p: False, lambda p: []).status == "ok"
    own = {8080: [PortHolder(10, "llama-server", "llmctl-llama.service")]}
    # The gateway socket is held by the user manager itself: no unit in its cgroup.
    manager = {4000: [PortHolder(1, "systemd", None)]}
    check = run(own | manager, socket_running)
    assert check.status == "ok", check.details
    assert "llama: 127.0.0.1:8080 held by llmctl-llama.service" in check.details

    squatter = {8080: [PortHolder(4242, "python3", None)]}
    check = run(squatter | manager, socket_running)
    assert check.status == "fail" and check.reason == "taken by another process: llama"
    assert "llama: 127.0.0.1:8080 in use by python3 (pid 4242), not by llmctl-llama.service" in check.details

    # Another llmctl unit on our port is not ours either.
    check = run({8080: [PortHolder(5, "x", "llmctl-other.service")]} | manager, lambda unit: True)
    assert check.status == "fail"

    # An owner this user cannot see, while systemd runs our unit: ours.
    assert run({}, lambda unit: True).status == "ok"
    # ... while it does not: someone else's.
    check = run({}, none_running)
    assert check.status == "fail" and "a process this user cannot see" in check.details[0]
    # No manager to ask: a warning.
    check = run(squatter, None)
    assert check.status == "warn" and "cannot ask systemd" in check.details[0]


def test_port_holders_finds_a_real_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        holders = doctor.port_holders(port)
    if not holders:
        pytest.skip("psutil cannot list sockets here")
    assert [h.pid for h in holders] == [os.getpid()]
    assert holders[0].unit is None


def test_unit_of_pid_reads_the_cgroup(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/llmctl-llama.service\n"
    )
    assert procs.unit_of_pid(7, tmp_path) == "llmctl-llama.service"
    assert procs.unit_of_pid(8, tmp_path) is None


# --- GPUs ------------------------------------------------------------------------------------------------


def gpu_config(tmp_path: Path, gpus: list[Any] | None) -> Any:
    overrides = minimal_config()
    if gpus is not None:
        overrides["backends"]["llama"]["gpus"] = gpus
    return load_config(write_config(tmp_path / f"g{gpus}.yaml", overrides)).config


def test_gpus(tmp_path: Path) -> None:
    none = GpuFacts(False, "NVML Shared Library Not Found")
    one = GpuFacts(True, "", "550.1", ((0, "GPU-aaaa", "RTX 4090", 24 * GIB),))
    assert doctor.check_gpus(gpu_config(tmp_path, []), none).status == "ok"
    assert doctor.check_gpus(None, none).status == "ok"
    check = doctor.check_gpus(gpu_config(tmp_path, None), none)
    assert check.status == "warn" and "llama will run on the CPU" in check.reason
    check = doctor.check_gpus(gpu_config(tmp_path, [0]), none)
    assert check.status == "fail" and "llama name GPUs" in check.reason
    check = doctor.check_gpus(gpu_config(tmp_path, [0]), one)
    assert check.status == "ok" and check.reason == "1 GPU(s), driver 550.1"
    assert check.details == ("GPU 0: RTX 4090, 24.0 GiB, GPU-aaaa",)
    assert doctor.check_gpus(gpu_config(tmp_path, ["GPU-aaaa"]), one).status == "ok"
    check = doctor.check_gpus(gpu_config(tmp_path, [1, "GPU-bbbb"]), one)
    assert check.status == "fail" and "llama: GPU 1; llama: GPU GPU-bbbb" in check.reason
    empty = GpuFacts(True, "", "550.1", ())
    assert doctor.check_gpus(gpu_config(tmp_path, [0]), empty).status == "fail"
    assert doctor.check_gpus(gpu_config(tmp_path, None), empty).status == "warn"


def test_gpu_facts_degrade_without_nvml() -> None:
    facts = doctor.gpu_facts()  # no GPU on the test machines: NVML cannot start
    if facts.available:
        pytest.skip("this machine has a usable NVIDIA GPU")
    assert facts.why and not facts.why.startswith("no NVIDIA GPU can be used (")


# --- model files ------------------------------------------------------------------------------------------


def test_models(tmp_path: Path) -> None:
    config = minimal_config()
    config["models"]["tiny"]["source"] = str(gguf(tmp_path / "tiny.gguf", 2048))
    config["models"]["other"] = {"backend": "llama", "source": str(tmp_path / "missing.gguf")}
    config["models"]["ollama-tag"] = {"remote": {"provider": "openai", "model": "x"}}
    loaded = load_config(write_config(tmp_path / "c.yaml", config)).config
    check = doctor.check_models(loaded, {})
    assert check.status == "warn" and check.reason.endswith(": other")
    assert f"tiny: {tmp_path / 'tiny.gguf'} (2.0 KiB)" in check.details
    # Served now (state.json), the missing one fails.
    assert doctor.check_models(loaded, {"llama": "other"}).status == "fail"
    (tmp_path / "tiny.gguf").write_bytes(b"not a gguf at all")
    check = doctor.check_models(loaded, {})
    assert check.status == "fail" and "tiny" in check.reason
    assert any("no GGUF magic" in d for d in check.details)
    assert doctor.check_models(None, {}).status == "ok"


def test_model_directory_size(tmp_path: Path) -> None:
    (tmp_path / "hf" / "sub").mkdir(parents=True)
    (tmp_path / "hf" / "a.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "hf" / "sub" / "b").write_bytes(b"x" * 24)
    assert doctor._size(tmp_path / "hf") == 1024
    assert doctor.human_size(1024) == "1.0 KiB" and doctor.human_size(3 * GIB) == "3.0 GiB"


# --- disk, key ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "status"), [(50 * 1024**2, "fail"), (512 * 1024**2, "warn"), (5 * GIB, "ok")]
)
def test_disk(tmp_path: Path, free: int, status: str) -> None:
    seen: list[Path] = []

    def usage(path: Path) -> tuple[int, int, int]:
        seen.append(path)
        return (10 * GIB, 10 * GIB - free, free)

    check = doctor.check_disk(tmp_path / "not" / "yet" / "llmctl", usage)
    assert check.status == status
    assert seen == [tmp_path]  # the nearest directory that exists


def test_disk_unknown(tmp_path: Path) -> None:
    def broken(path: Path) -> tuple[int, int, int]:
        raise OSError(5, "Input/output error")

    assert doctor.check_disk(tmp_path, broken).status == "warn"


def test_gateway_key(tmp_path: Path) -> None:
    key = tmp_path / "gateway.env"
    assert doctor.check_gateway_key(key, enabled=False, installed=False).status == "ok"
    assert doctor.check_gateway_key(key, enabled=True, installed=False).status == "warn"
    check = doctor.check_gateway_key(key, enabled=True, installed=True)
    assert check.status == "fail" and "cannot start without it" in check.reason
    key.write_text("LITELLM_MASTER_KEY=sk-0123456789\n")
    key.chmod(0o644)
    check = doctor.check_gateway_key(key, enabled=True, installed=True)
    assert (check.status, check.fix) == ("fail", f"chmod 600 {key}")
    key.chmod(0o600)
    check = doctor.check_gateway_key(key, enabled=True, installed=True)
    assert check.status == "ok" and "(mode 0600)" in check.reason
    key.write_text("nothing useful\n")
    assert doctor.check_gateway_key(key, enabled=True, installed=True).status == "fail"


# --- all together ---------------------------------------------------------------------------------------------


NAMES = [
    "config", "user-manager", "linger", "unit-files", "units", "executables", "ports", "gpus", "models",
    "disk", "gateway-key",
]  # fmt: skip


def test_run_on_a_healthy_machine_before_up(tmp_path: Path, paths: Paths) -> None:
    checks = doctor.run(paths, good_config(tmp_path), fake_probes())
    assert [c.name for c in checks] == NAMES
    status = {c.name: c.status for c in checks}
    assert status == dict.fromkeys(NAMES, "ok") | {"units": "warn", "gateway-key": "warn", "gpus": "warn"}
    assert doctor.worst([c.status for c in checks]) == "warn"


def test_run_after_up_with_everything_in_step(tmp_path: Path, paths: Paths) -> None:
    config = good_config(tmp_path)
    loaded = load_config(config)
    stack = render_stack(loaded.config, RenderOptions(config_path=config.resolve(), paths=paths))
    apply_changes(compare(stack, paths.config_home), paths.config_home)
    ensure_gateway_key(paths.gateway_env_file)
    verified: list[list[str]] = []

    def verify(files: Any) -> str:
        verified.append([Path(f).name for f in files])
        return ""

    checks = {c.name: c for c in doctor.run(paths, config, fake_probes(verify=verify))}
    assert checks["units"].status == "ok", checks["units"]
    assert checks["unit-files"].status == "ok"
    installed = [p.name for p in doctor.installed_unit_files(paths.unit_dir)]
    assert verified == [installed]
    assert {
        "llmctl-llama.service",
        "llmctl-gateway.service",
        "llmctl-gateway.socket",
        "llmctl.target",
    } <= set(installed)
    assert checks["gateway-key"].status == "ok"

    # A unit edited by hand: out of step, and systemd still runs the old one.
    unit = paths.unit_dir / "llmctl-llama.service"
    unit.write_text(unit.read_text().replace("Type=exec", "Type=exec\nRestartSecs=5"))
    checks = {
        c.name: c
        for c in doctor.run(paths, config, fake_probes(need_reload=lambda u: ["llmctl-llama.service"]))
    }
    assert checks["units"].status == "warn"
    assert checks["units"].details == (
        "changed: systemd/user/llmctl-llama.service",
        "llmctl-llama.service: changed on disk, systemd still runs the old version",
    )


def test_run_without_a_config_or_a_manager(tmp_path: Path, paths: Paths) -> None:
    checks = doctor.run(paths, tmp_path / "missing.yaml", fake_probes(manager_reachable=lambda: False))
    names = [c.name for c in checks]
    assert names == [
        "config",
        "user-manager",
        "linger",
        "unit-files",
        "gpus",
        "models",
        "disk",
        "gateway-key",
    ]
    status = {c.name: c.status for c in checks}
    assert status["config"] == "fail" and status["user-manager"] == "fail"


def test_run_without_a_manager_cannot_tell_port_owners(tmp_path: Path, paths: Paths) -> None:
    probes = fake_probes(manager_reachable=lambda: False, port_in_use=lambda host, port: port == 8080)
    checks = {c.name: c for c in doctor.run(paths, good_config(tmp_path), probes)}
    assert checks["ports"].status == "warn"


def test_check_as_dict() -> None:
    check = Check("x", "warn", "why", "do this", ("a",))
    assert check.as_dict() == {
        "name": "x",
        "status": "warn",
        "reason": "why",
        "fix": "do this",
        "details": ["a"],
    }


def test_port_in_use_counts_listeners_not_time_wait_leftovers() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert procs.port_in_use("127.0.0.1", port)
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end of the port stays in TIME_WAIT
    client.close()
    listener.close()
    assert not procs.port_in_use("127.0.0.1", port)
