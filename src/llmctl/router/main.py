"""`llmctl router serve` (run by llmctl-router.service): the config, the policies, the socket."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.router.scheduler import ModelPolicy

if TYPE_CHECKING:
    from llmctl.config.schema import Config
    from llmctl.paths import Paths

DEFAULT_LOAD_TIMEOUT_EXTRA = 30.0
# Described GPUs (the JSON of `llmctl gpus --json`) instead of NVML, for the router's plans:
# `systemctl --user set-environment LLMCTL_GPU_INVENTORY=FILE` (tests; trying a plan by hand).
INVENTORY_VARIABLE = "LLMCTL_GPU_INVENTORY"  # over the backend's start timeout: the swap's own steps


def policies_for(config: Config) -> dict[str, ModelPolicy]:
    """One policy per local model: the model's settings over its backend's, over the defaults."""
    from llmctl.backends import adapter_for  # noqa: PLC0415

    out = {}
    for model_id, model in sorted(config.models.items()):
        if model.backend is None or model.backend not in config.backends:
            continue
        backend = config.backends[model.backend]
        start = backend.start_timeout or adapter_for(backend.kind).default_start_timeout
        out[model_id] = ModelPolicy(
            model_id=model_id,
            backend=model.backend,
            pinned=model.pinned,
            idle_unload=model.idle_unload if model.idle_unload is not None else backend.idle_unload,
            min_residency=model.min_residency or 0.0,
            load_timeout=model.load_timeout or start + DEFAULT_LOAD_TIMEOUT_EXTRA,
        )
    return out


def settings_lines(config: Config) -> list[str]:
    """What the router takes from the config when it starts, a line each, for its unit file.

    The router reads these once; written into its unit, a change to any of them changes the
    file, and `llmctl up` restarts the router (its socket holds new connections meanwhile).
    """
    from llmctl.backends import adapter_for  # noqa: PLC0415

    lines = []
    for policy in policies_for(config).values():
        words = [f"{policy.model_id} on {policy.backend}:"]
        if policy.pinned:
            words.append("pinned")
        if policy.idle_unload is not None:
            words.append(f"idle_unload={policy.idle_unload:g}s")
        if policy.min_residency:
            words.append(f"min_residency={policy.min_residency:g}s")
        words.append(f"load_timeout={policy.load_timeout:g}s")
        lines.append(" ".join(words))
    for name, backend in sorted(config.backends.items()):
        many = " (serves many models)" if adapter_for(backend.kind).serves_many else ""
        lines.append(f"backend {name}: {backend.kind} at {backend.host}:{backend.port}{many}")
    lines.append(f"drain_timeout={config.gateway.drain_timeout:g}s")
    return lines


def serve(config_path: Path, state_dir: Path | None, inventory_file: Path | None) -> int:
    from llmctl.backends import adapter_for  # noqa: PLC0415
    from llmctl.config.load import load_config  # noqa: PLC0415
    from llmctl.gateway_runtime.sockets import bind_socket, inherited_socket, systemd_notifier  # noqa: PLC0415
    from llmctl.paths import Paths  # noqa: PLC0415
    from llmctl.router.loader import SwitchLoader  # noqa: PLC0415
    from llmctl.router.metrics import RouterMetrics  # noqa: PLC0415
    from llmctl.router.scheduler import Scheduler  # noqa: PLC0415
    from llmctl.router.server import Router, event_recorder, run  # noqa: PLC0415
    from llmctl.router.watch import UnitWatch  # noqa: PLC0415
    from llmctl.secrets import ensure_router_key, read_router_key  # noqa: PLC0415
    from llmctl.state import applied_config_file  # noqa: PLC0415

    if inventory_file is None and os.environ.get(INVENTORY_VARIABLE):
        inventory_file = Path(os.environ[INVENTORY_VARIABLE])
    paths = Paths.from_env()
    if state_dir is not None and state_dir.name == "llmctl":
        paths = replace(paths, state_home=state_dir.parent)  # what the unit says wins
    applied = applied_config_file(paths.state_dir)
    # The config the installed units came from, addressed as the user's file (snapshots of a
    # load record the user's config as a switch on the command line does).
    loaded = replace(load_config(applied if applied.is_file() else config_path), path=config_path)
    config = loaded.config
    metrics = RouterMetrics()
    loader = SwitchLoader(loaded, paths, config_path, inventory_file, on_message=_say)
    serves_many = {n for n, b in config.backends.items() if adapter_for(b.kind).serves_many}
    scheduler = Scheduler(
        policies_for(config), serves_many, loader,
        drain_timeout=config.gateway.drain_timeout, on_event=event_recorder(paths.state_dir, metrics),
    )  # fmt: skip
    for name, model in _loaded_now(paths).items():
        if name in scheduler.slots:
            scheduler.set_loaded(name, model)
    addresses = {n: (b.host, b.port) for n, b in config.backends.items()}
    watch = UnitWatch(paths.config_home)
    for name in scheduler.slots:
        watch.model(name)  # what the files say now is what `_loaded_now` saw
    ensure_router_key(paths.router_key_file)  # `up` wrote it; made here if deleted since
    keyed = {n for n, b in config.backends.items() if getattr(b, "api_key", False)}
    router = Router(
        scheduler, addresses, metrics, watch=watch, is_running=_unit_running,
        key=cached_file(paths.router_key_file, read_router_key),
        backend_key=_backend_keys(paths, keyed),
    )  # fmt: skip
    sock = inherited_socket(os.environ) or bind_socket("127.0.0.1", config.gateway.router_listen_port)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(run(router, sock, systemd_notifier()))
    # Not asyncio.run, which waits for the threads of loads and unloads still running: each
    # waits on a systemctl job of a backend, and systemd orders a backend's job after this
    # router's stop (it is ordered after them), so waiting would hold the stop until
    # TimeoutStopSec. Such a load's intent record lets the next llmctl command finish or roll
    # it back (recovery), as after a kill.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cached_file(path: Path, read: Callable[[Path], str]) -> Callable[[], str]:
    """`read(path)`, read again only when the file changed (a stat per call): the router asks
    for its key at every request. Raises what `read` and `stat` raise."""
    seen: dict[tuple[int, int, int], str] = {}

    def current() -> str:
        st = path.stat()
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature not in seen:
            seen.clear()
            seen[signature] = read(path)
        return seen[signature]

    return current


def _backend_keys(paths: Paths, keyed: set[str]) -> Callable[[str], str | None]:
    """The key of each backend started with one (`api_key: true`), from its key file."""
    from llmctl.errors import LlmctlError  # noqa: PLC0415
    from llmctl.secrets import gateway_variable, read_backend_key  # noqa: PLC0415

    def reader(name: str) -> Callable[[], str]:
        return cached_file(
            paths.backend_key_file(name), lambda path: read_backend_key(path, gateway_variable(name))
        )

    readers = {name: reader(name) for name in keyed}

    def key(backend: str) -> str | None:
        reader = readers.get(backend)
        if reader is None:
            return None
        try:
            return reader()
        except (LlmctlError, OSError):
            return None  # the backend answers 401, which says what is wrong

    return key


def _loaded_now(paths: Paths) -> dict[str, str]:
    """Backends whose unit runs now, with the model its installed unit serves."""
    from llmctl import systemd  # noqa: PLC0415
    from llmctl.stack import stack_from_installed  # noqa: PLC0415

    units = [u for u in stack_from_installed(paths.config_home) if u.model is not None]
    states = systemd.show([u.unit for u in units])
    out = {}
    for unit in units:
        state = states.get(unit.unit)
        if state is not None and state.active_state in ("active", "activating") and unit.model is not None:
            out[unit.name] = unit.model
    return out


def _unit_running(backend: str) -> bool:
    from llmctl import systemd  # noqa: PLC0415
    from llmctl.render.units import unit_name  # noqa: PLC0415

    state = systemd.show([unit_name(backend)]).get(unit_name(backend))
    return state is not None and state.active_state in ("active", "activating", "reloading")


def _say(message: str) -> None:
    print(f"llmctl-router: {message}", file=sys.stderr, flush=True)
