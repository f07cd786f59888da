"""`llmctl doctor`: is this machine ready to run the stack, and is what runs in step with the config?

Each check is a function that takes what it needs (facts about the host are passed in, so tests
can drive every outcome) and returns a `Check`: ok, warn or fail, a reason, and a fix. `run`
gathers the facts through `Probes`, whose defaults ask the real host: systemd, logind, NVML,
the file system, the ports. A failed check means `llmctl up` would fail or the stack cannot
serve; a warning means something works worse than it could, or cannot be told.

Modules, by what they check: `files` (the config, model files, disk space, the gateway key),
`manager` (the systemd user manager, lingering, the installed units), `executables`, `ports`,
`gpus`; `report` holds `Check` and the size formatting they share. `run` and `Probes` live here,
in the package itself, so that replacing `llmctl.doctor.Probes` (as the CLI tests do) changes
what `run` uses.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import procs, systemd
from llmctl.doctor.executables import (
    VERSION_TIMEOUT,
    check_executables,
    check_litellm_metrics,
    executable_version,
)
from llmctl.doctor.files import (
    DISK_FAIL_BYTES,
    DISK_WARN_BYTES,
    check_backend_keys,
    check_config,
    check_disk,
    check_gateway_key,
    check_models,
    check_redis_password,
)
from llmctl.doctor.gpus import GpuFacts, check_gpus, gpu_facts
from llmctl.doctor.manager import (
    check_linger,
    check_unit_files,
    check_units_in_step,
    check_user_manager,
    installed_unit_files,
)
from llmctl.doctor.ports import PortHolder, check_ports, port_holders
from llmctl.doctor.report import GIB, MIB, Check, Status, human_size, worst
from llmctl.errors import LlmctlError

if TYPE_CHECKING:
    from llmctl.config.load import LoadedConfig
    from llmctl.paths import Paths
    from llmctl.stack import StackUnit

__all__ = [
    "DISK_FAIL_BYTES",
    "DISK_WARN_BYTES",
    "GIB",
    "MIB",
    "VERSION_TIMEOUT",
    "Check",
    "GpuFacts",
    "PortHolder",
    "Probes",
    "Status",
    "check_backend_keys",
    "check_config",
    "check_disk",
    "check_executables",
    "check_gateway_key",
    "check_gpus",
    "check_linger",
    "check_litellm_metrics",
    "check_models",
    "check_ports",
    "check_redis_password",
    "check_unit_files",
    "check_units_in_step",
    "check_user_manager",
    "executable_version",
    "gpu_facts",
    "human_size",
    "installed_unit_files",
    "port_holders",
    "run",
    "worst",
]


# --- the probes: where the facts come from on a real host -----------------------------------------


def _unit_states(units: list[str]) -> dict[str, bool]:
    return {name: state.running for name, state in systemd.show(units).items()}


def _need_reload(units: list[str]) -> list[str]:
    if not units:
        return []
    result = systemd.systemctl("show", "--property=Id,NeedDaemonReload", *units)
    stale = []
    for block in result.stdout.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("NeedDaemonReload") == "yes":
            stale.append(props.get("Id", "?"))
    return stale


def _linger() -> bool | None:
    from llmctl.autostart import linger_enabled  # noqa: PLC0415

    return linger_enabled()


def _resolve(command: str) -> Path | None:
    from llmctl.executables import resolve_executable  # noqa: PLC0415

    return resolve_executable(command)


def _can_import(python: Path, module: str) -> bool:
    from llmctl.gateway_runtime.interpreter import can_import  # noqa: PLC0415

    return can_import(python, module)


def _disk_usage(path: Path) -> tuple[int, int, int]:
    usage = shutil.disk_usage(path)
    return usage.total, usage.used, usage.free


@dataclass(frozen=True)
class Probes:
    """Where the facts come from; tests replace any of them."""

    manager_reachable: Callable[[], bool] = systemd.manager_reachable
    linger: Callable[[], bool | None] = _linger
    verify: Callable[[Sequence[Path]], str] = systemd.verify
    unit_running: Callable[[list[str]], dict[str, bool]] = _unit_states
    need_reload: Callable[[list[str]], list[str]] = _need_reload
    resolve: Callable[[str], Path | None] = _resolve
    can_import: Callable[[Path, str], bool] = _can_import
    version: Callable[[str, Path], str | None] = executable_version
    port_in_use: Callable[[str, int], bool] = procs.port_in_use
    port_holders: Callable[[int], list[PortHolder]] = port_holders
    gpus: Callable[[], GpuFacts] = gpu_facts
    disk_usage: Callable[[Path], tuple[int, int, int]] = _disk_usage
    user: Callable[[], str] = getpass.getuser


# --- running them all -----------------------------------------------------------------------------


def run(paths: Paths, config_path: Path, probes: Probes | None = None) -> list[Check]:
    """Every check, in the order a person would fix things."""
    probes = probes or Probes()
    checks: list[Check] = []
    config_check, loaded = check_config(config_path)
    checks.append(config_check)

    reachable = probes.manager_reachable()
    checks.append(check_user_manager(reachable, os.environ.get("XDG_RUNTIME_DIR")))
    checks.append(check_linger(probes.linger(), probes.user()))
    unit_files = installed_unit_files(paths.unit_dir)
    checks.append(check_unit_files(unit_files, probes.verify))

    units: list[StackUnit] = []
    serving: dict[str, str] = {}
    config = loaded.config if loaded is not None else None
    if loaded is not None:
        from llmctl.state import serving_now  # noqa: PLC0415

        with contextlib.suppress(LlmctlError):
            serving = serving_now(loaded.config, paths.state_dir)
        checks.append(_units_in_step(loaded, paths, serving, probes if reachable else None, unit_files))
        from llmctl.stack import stack_units  # noqa: PLC0415

        units = stack_units(loaded.config, serving)
        checks.append(check_executables(units, probes.resolve, probes.version))
        gateway = next((u for u in units if u.is_gateway), None)
        if gateway is not None and loaded.config.gateway.litellm_metrics:
            checks.append(check_litellm_metrics(gateway, probes.resolve, probes.can_import))
        states: dict[str, bool] | None = None
        if reachable:
            names = sorted({u.unit for u in units} | {c for u in units for c in u.companions})
            with contextlib.suppress(LlmctlError):
                states = probes.unit_running(names)
        running = None if states is None else (lambda unit: states.get(unit, False))
        checks.append(check_ports(units, running, probes.port_in_use, probes.port_holders))
    checks.append(check_gpus(config, probes.gpus()))
    checks.append(check_models(config, serving))
    checks.append(check_disk(paths.state_dir, probes.disk_usage))
    gateway_unit = paths.unit_dir / "llmctl-gateway.service"
    checks.append(
        check_gateway_key(
            paths.gateway_env_file,
            enabled=config.gateway.enabled if config is not None else gateway_unit.exists(),
            installed=gateway_unit.exists(),
        )
    )
    if config is not None:
        from llmctl.render.units import keyed_backends, unit_name  # noqa: PLC0415

        keyed = keyed_backends(config)
        if keyed:  # only when a backend is started with a key: no line to read otherwise
            installed = {n for n in keyed if (paths.unit_dir / unit_name(n)).exists()}
            checks.append(check_backend_keys(paths, keyed, installed=installed))
        if config.gateway.enabled and config.gateway.cache is not None:
            from llmctl.render.units import REDIS_UNIT  # noqa: PLC0415

            installed_redis = (paths.unit_dir / REDIS_UNIT).exists()
            checks.append(check_redis_password(paths, installed=installed_redis))
    return checks


def _units_in_step(
    loaded: LoadedConfig, paths: Paths, serving: dict[str, str], probes: Probes | None, unit_files: list[Path]
) -> Check:
    from llmctl.install import compare  # noqa: PLC0415
    from llmctl.render.units import RenderOptions, render_stack  # noqa: PLC0415

    try:
        stack = render_stack(
            loaded.config,
            RenderOptions(
                config_path=loaded.path.resolve(), paths=paths, serving=tuple(sorted(serving.items()))
            ),
        )
    except LlmctlError as err:
        return Check("units", "fail", f"the config does not render: {err.message}", fix=err.hint)
    stale: list[str] = []
    if probes is not None and unit_files:
        with contextlib.suppress(LlmctlError):
            stale = probes.need_reload([p.name for p in unit_files])
    return check_units_in_step(compare(stack, paths.config_home), stale)
