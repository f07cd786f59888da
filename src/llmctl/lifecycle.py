"""up, down, restart: install the rendered units and drive them through systemd.

`up` checks everything it can before it writes anything (executables, model files, ports),
installs only what changed, and starts or restarts only units that are stopped or whose files
changed, so running it twice does nothing the second time. Backends load in parallel; the
gateway starts after them. Waiting ends early when a unit fails, and the failure is shown
with the unit's state and its last journal lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmctl import applied_render, procs, systemd, transaction
from llmctl.backends import adapter_for
from llmctl.backends.base import probe_client
from llmctl.config.load import LoadedConfig
from llmctl.config.schema import Config
from llmctl.converge import Progress, UnitOutcome, closing_jobs, converge, preflight, wait_serving
from llmctl.errors import LlmctlError
from llmctl.install import ChangeKind, apply_changes, compare, installed_llmctl_units
from llmctl.lock import state_lock
from llmctl.paths import Paths
from llmctl.render.units import (
    GATEWAY_UNIT,
    REDIS_CONF_FILE,
    REDIS_UNIT,
    TARGET,
    UNIT_SUBDIR,
    RenderedStack,
    keyed_backends,
    unit_name,
)
from llmctl.router import ROUTER_UNIT
from llmctl.secrets import ensure_backend_key, ensure_gateway_key, ensure_redis_password, ensure_router_key
from llmctl.stack import StackUnit, select, stack_units
from llmctl.state import applied_config_file, record_applied
from llmctl.up_report import UpResult


def up(
    loaded: LoadedConfig,
    stack: RenderedStack,
    paths: Paths,
    names: tuple[str, ...] = (),
    *,
    timeout: float | None = None,
    wait_lock: bool = True,
    progress: Progress | None = None,
    on_message: Callable[[str], None] | None = None,
    serving: dict[str, str] | None = None,
    rollback_on_failure: bool = True,
) -> UpResult:
    """Install what changed and bring the chosen units to serving, as one transaction.

    With changes, a snapshot is taken first; if a unit then fails to become ready, the
    snapshot is restored and serving resumes (unless rollback_on_failure is off, which keeps
    the failed state for debugging).
    """
    from llmctl import recovery, snapshots  # noqa: PLC0415 - avoids an import cycle

    systemd.require_manager()
    all_units = stack_units(loaded.config, serving)
    chosen = select(all_units, names)
    result = UpResult()
    with state_lock(paths.state_dir, "up", wait=wait_lock, on_wait=on_message):
        recovery.recover_pending(paths, on_message=on_message)
        states = systemd.show([name for u in all_units for name in (u.unit, *u.companions)])
        preflight(chosen, states, loaded.config.gateway.litellm_metrics)
        changes = compare(stack, paths.config_home)
        result.files = [c for c in changes if c.kind is not ChangeKind.UNCHANGED]
        intent = None
        if result.files:
            applied = applied_config_file(paths.state_dir)
            snapshot = snapshots.take(
                paths,
                loaded.path,
                reason="before up",
                command="up",
                keep=loaded.config.snapshots.keep,
                config_content=applied if applied.is_file() else None,
            )
            result.snapshot = snapshot.id
            intent = transaction.begin(paths.state_dir, "up", snapshot.id, tuple(u.unit for u in chosen))
            intent = transaction.advance(paths.state_dir, intent, "snapshot-taken")
        try:
            removed = [c.path.rsplit("/", 1)[-1] for c in changes if c.kind is ChangeKind.REMOVED]
            if removed:
                # Units whose backend left the config: stop them before their files go.
                systemd.stop(removed)
                result.outcomes.extend(UnitOutcome(u, "removed") for u in removed)
            if any(u.is_gateway for u in chosen):
                result.gateway_key_created = ensure_gateway_key(paths.gateway_env_file)
            result.backend_keys_created = ensure_backend_keys(loaded.config, paths)
            result.redis_password_created = ensure_redis(loaded.config, paths)
            if routes_on_demand(loaded.config):
                result.router_key_created = ensure_router_key(paths.router_key_file)
            apply_changes(changes, paths.config_home)
            # Before anything starts: the supervisor reads the applied config when it starts.
            record_applied(paths.state_dir, loaded.text)
            _record_render(loaded, stack, paths, all_units)
            if intent:
                intent = transaction.advance(paths.state_dir, intent, "files-written")
            if result.files:
                systemd.daemon_reload()
            changed = _to_restart(result)
            # Nothing installed, stopped or reloaded since `show` above: its answer still holds.
            unchanged = not result.files and not changed
            result.outcomes.extend(
                converge(
                    chosen, changed, timeout=timeout, progress=progress, states=states if unchanged else None
                )
            )
            if not names:
                # Marks the target active, so stopping it by hand stops the stack (PartOf=).
                systemd.start([TARGET], block=False)
        except (LlmctlError, KeyboardInterrupt) as failure:
            if intent is None or not rollback_on_failure:
                if intent is not None:
                    transaction.finish(paths.state_dir)  # kept on purpose: nothing to recover
                raise
            raise recovery.roll_back_after(
                paths, intent.snapshot, failure, also=tuple(u.unit for u in chosen), on_message=on_message
            ) from None
        if intent is not None:
            transaction.finish(paths.state_dir)
    return result


def _to_restart(result: UpResult) -> set[str]:
    """The paths `converge` treats as changed: the files installed, plus the unit files of
    what must restart although its unit is the same."""
    # A new key reaches a running server and the gateway only through a restart.
    new_keys = {f"{UNIT_SUBDIR}/{unit_name(n)}" for n in result.backend_keys_created}
    if result.redis_password_created:
        new_keys.add(f"{UNIT_SUBDIR}/{REDIS_UNIT}")
    if result.router_key_created:
        new_keys.add(f"{UNIT_SUBDIR}/{ROUTER_UNIT}")
    if new_keys:
        new_keys.add(f"{UNIT_SUBDIR}/{GATEWAY_UNIT}")
    changed = {c.path for c in result.files} | new_keys
    if REDIS_CONF_FILE in changed:
        # Redis reads its config only when it starts (its unit file may be unchanged).
        changed.add(f"{UNIT_SUBDIR}/{REDIS_UNIT}")
    return changed


def ensure_backend_keys(config: Config, paths: Paths) -> list[str]:
    """Create the key file of each backend started with an API key (`api_key: true`) that has
    none yet; returns their names."""
    created = []
    for name in keyed_backends(config):
        variable = adapter_for(config.backends[name].kind).api_key_variable
        assert variable is not None, "the schema allows api_key only where the adapter names a variable"
        if ensure_backend_key(paths.backend_key_file(name), name, variable):
            created.append(name)
    return created


def _record_render(loaded: LoadedConfig, stack: RenderedStack, paths: Paths, units: list[StackUnit]) -> None:
    """What a later `up NAME` needs to start these units without the config (applied_render)."""
    config = loaded.config
    secrets = [paths.backend_key_file(name) for name in keyed_backends(config)]
    if config.gateway.enabled and config.gateway.cache is not None:
        secrets += [paths.redis_data_dir, paths.redis_env_file, paths.redis_auth_file]
    if routes_on_demand(config):
        secrets.append(paths.router_key_file)
    applied_render.write(
        paths, config_path=loaded.path, config_text=loaded.text, files=stack.files, units=units,
        secret_files=secrets, warnings=[problem.describe() for problem in loaded.warnings],
    )  # fmt: skip


def routes_on_demand(config: Config) -> bool:
    """Whether the stack has llmctl's router (and so its key)."""
    return config.gateway.enabled and config.gateway.on_demand


def ensure_redis(config: Config, paths: Paths) -> bool:
    """gateway.cache: Redis's data directory (0700) and its password, in redis.env and in the
    include redis.conf names; returns True when the password is new."""
    if not config.gateway.enabled or config.gateway.cache is None:
        return False
    paths.redis_data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return ensure_redis_password(paths.redis_env_file, paths.redis_auth_file)


@dataclass(frozen=True)
class StopOutcome:
    unit: str
    was_running: bool
    leftover_pids: tuple[int, ...] = ()
    port_busy: bool = False


def down(
    loaded: LoadedConfig | None,
    paths: Paths,
    names: tuple[str, ...] = (),
    *,
    wait_lock: bool = True,
    on_message: Callable[[str], None] | None = None,
) -> list[StopOutcome]:
    """Stop units (all llmctl units, gateway first, by default) and confirm they are gone."""
    from llmctl import recovery  # noqa: PLC0415 - avoids an import cycle

    systemd.require_manager()
    configured = stack_units(loaded.config) if loaded is not None else []
    # (unit, units stopped with it, host, port): the gateway's socket holds its port.
    Target = tuple[str, tuple[str, ...], str, int]
    if names:
        chosen: list[Target] = [(u.unit, u.companions, u.host, u.port) for u in select(configured, names)]
    else:
        installed = [rel.rsplit("/", 1)[-1] for rel in installed_llmctl_units(paths.config_home)]
        by_unit = {u.unit: u for u in configured}
        companions = {c for u in configured for c in u.companions}
        chosen = [(u.unit, u.companions, u.host, u.port) for u in configured]
        chosen += [
            (u, (), "", 0) for u in installed if u not in by_unit and u not in companions and u != TARGET
        ]
    chosen.reverse()  # the gateway before the backends it routes to
    outcomes = []
    with state_lock(paths.state_dir, "down", wait=wait_lock, on_wait=on_message):
        recovery.recover_pending(paths, on_message=on_message, bring_up=False)
        states = systemd.show([u for u, _, _, _ in chosen])
        if not names:
            systemd.stop([TARGET])
        for unit, with_it, host, port in chosen:
            state = states.get(unit)
            pids = procs.cgroup_pids(state.control_group) if state and state.running else []
            systemd.stop([unit, *with_it])
            leftover = procs.wait_gone(pids, 10.0)
            busy = bool(port) and procs.port_in_use(host, port)
            outcomes.append(StopOutcome(unit, bool(state and state.running), tuple(leftover), busy))
    bad = [o for o in outcomes if o.leftover_pids or o.port_busy]
    if bad:
        raise LlmctlError(
            "stopped, but not everything is gone",
            details=[
                f"{o.unit}: "
                + ", ".join(
                    ([f"processes still alive: {list(o.leftover_pids)}"] if o.leftover_pids else [])
                    + (["its port is still bound"] if o.port_busy else [])
                )
                for o in bad
            ],
            hint="A process may have left its cgroup; check with `ss -ltnp` and `ps`.",
        )
    return outcomes


def restart(
    loaded: LoadedConfig,
    paths: Paths,
    names: tuple[str, ...],
    *,
    timeout: float | None = None,
    progress: Progress | None = None,
    on_message: Callable[[str], None] | None = None,
    serving: dict[str, str] | None = None,
) -> list[UnitOutcome]:
    systemd.require_manager()
    chosen = select(stack_units(loaded.config, serving), names)
    outcomes = []
    from llmctl import recovery  # noqa: PLC0415 - avoids an import cycle

    with (
        state_lock(paths.state_dir, "restart", on_wait=on_message),
        probe_client(5.0) as client,
    ):
        recovery.recover_pending(paths, on_message=on_message)
        systemd.reset_failed([u.unit for u in chosen])
        jobs = {unit.unit: systemd.start_job(unit.unit, restart=True) for unit in chosen}
        with closing_jobs(jobs):
            for unit in chosen:
                waited = wait_serving(
                    unit, timeout or unit.start_timeout, client, progress, job=jobs.pop(unit.unit)
                )
                outcomes.append(UnitOutcome(unit.unit, "restarted", waited))
    return outcomes
