"""llmctl doctor's runner: every check, in order, on described machines; and the report type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl import doctor
from llmctl.config.load import load_config
from llmctl.doctor import Check
from llmctl.install import apply_changes, compare
from llmctl.paths import Paths
from llmctl.render.units import RenderOptions, render_stack
from llmctl.secrets import ensure_gateway_key
from tests.doctor.fakes import fake_probes, good_config

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


def test_with_a_cache_redis_is_checked_like_any_unit(tmp_path: Path, paths: Paths) -> None:
    from tests.conftest import write_executable as executable  # noqa: PLC0415

    server = executable(tmp_path / "bin" / "redis-server")
    config = good_config(tmp_path)
    text = config.read_text().replace(
        "gateway:\n", f"gateway:\n  cache:\n    type: redis\n    port: 6390\n    command: {server}\n", 1
    )
    config.write_text(text)
    taken = {6390}
    checks = {
        c.name: c
        for c in doctor.run(paths, config, fake_probes(port_in_use=lambda host, port: port in taken))
    }
    assert [n for n in checks if n not in NAMES] == ["redis-password"]
    assert checks["redis-password"].status == "warn"  # `up` creates it
    assert f"redis (redis): {server}, version: 1 (test)" in checks["executables"].details
    assert checks["ports"].status == "fail" and "redis" in checks["ports"].reason


def test_litellm_metrics_is_checked_only_when_on(tmp_path: Path, paths: Paths) -> None:
    on = good_config(tmp_path, gateway={"command": "/x", "port": 4000, "litellm_metrics": True})
    lacking = {c.name: c for c in doctor.run(paths, on, fake_probes(can_import=lambda python, module: False))}
    assert lacking["litellm-metrics"].status == "fail"
    assert [c.name for c in lacking.values()].index("litellm-metrics") == NAMES.index("executables") + 1
    found = {c.name: c for c in doctor.run(paths, on, fake_probes(can_import=lambda python, module: True))}
    assert found["litellm-metrics"].status == "ok"
    off = doctor.run(paths, good_config(tmp_path), fake_probes(can_import=lambda python, module: False))
    assert "litellm-metrics" not in [c.name for c in off]
