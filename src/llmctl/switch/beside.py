"""Starting the new model beside the old one, when it fits: the switch's bridge.

A backend's unit runs one server on one port, so the new model cannot start *in* the unit
while the old one still runs there. When the gateway routes the models and the memory holds
two copies of the new model next to the old one, the switch instead

1. starts the new model in a temporary unit, `llmctl-NAME-bridge.service` (the same command
   line, environment, key file and readiness gate, on a free loopback port), and checks that
   it lists the model and completes a token: a model that cannot load fails here, and the old
   one never stopped;
2. routes the new model id to the bridge (and the old id nowhere), in one gateway reload;
3. stops the old server, starts the unit with the new model, verifies it, routes the new id
   to it (a second reload: the bridge answers meanwhile) and stops the bridge.

So requests for the new model are served from the first reload on, with no gap, and a switch
that fails at the bridge changes nothing. The price is a second load of the new model, which
is why it needs the room for two copies (and is skipped without a gateway: then clients use
the backend's own port, which only the unit can hold).

The bridge's unit file is not in any snapshot: a rollback or an interrupted switch's recovery
removes and stops it with the other files the snapshot does not hold.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import systemd
from llmctl.backends import adapter_for
from llmctl.backends.base import probe_client
from llmctl.config.load import LoadedConfig
from llmctl.converge import Progress, wait_serving
from llmctl.fsutil import atomic_write
from llmctl.paths import Paths
from llmctl.render.units import UNIT_SUBDIR, RenderOptions, bridge_unit, render_bridge
from llmctl.stack import StackUnit
from llmctl.switch.steps import one_token

if TYPE_CHECKING:
    from llmctl.planner import Plan

GiB = 1 << 30
RAM_SPARE = GiB  # a CPU-only bridge leaves this much RAM free, besides two copies of the model


@dataclass(frozen=True)
class Bridge:
    unit: StackUnit
    file: str  # relative to $XDG_CONFIG_HOME
    text: str

    @property
    def address(self) -> tuple[str, int]:
        return self.unit.host, self.unit.port


def bridge_fits(loaded: LoadedConfig, plan: Plan | None, name: str) -> bool:
    """Whether the switch may start the new model beside the old one (see the module doc)."""
    config = loaded.config
    if not config.gateway.enabled or plan is None or not plan.fits or plan.evictions:
        return False
    if config.gateway.on_demand:
        return False  # the router routes by what it loaded; a bridge would be invisible to it
    if adapter_for(config.backends[name].kind).serves_many or f"{name}-bridge" in config.backends:
        return False
    if plan.device == "gpu":
        reserve = 0 if plan.kind == "vllm" else plan.reserve_bytes
        targets = [g for g in plan.gpus if g.target and g.needs]
        return bool(targets) and all(g.free_now >= 2 * g.needs + reserve for g in targets)
    available = available_ram()
    return available is not None and available >= 2 * plan.estimate.cpu_bytes + RAM_SPARE


def available_ram(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes (the kernel's estimate of what can be allocated without swapping)."""
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_bridge(
    loaded: LoadedConfig,
    paths: Paths,
    unit: StackUnit,
    model_id: str,
    options: RenderOptions,
    timeout: float | None,
    progress: Progress | None,
) -> Bridge:
    """Install and start the bridge for `unit`'s backend serving `model_id` (`options.serving`
    says so), wait until it serves, and check a one-token completion."""
    port = free_loopback_port()
    name, text = render_bridge(loaded.config, unit.name, port, options)
    bridge = Bridge(
        replace(unit, name=f"{unit.name}-bridge", unit=name, host="127.0.0.1", port=port),
        f"{UNIT_SUBDIR}/{name}",
        text,
    )
    atomic_write(paths.config_home / bridge.file, text)
    systemd.daemon_reload()
    systemd.reset_failed([bridge.unit.unit])
    job = systemd.start_job(bridge.unit.unit)
    with probe_client(5.0) as client:
        wait_serving(bridge.unit, timeout or unit.start_timeout, client, progress, job=job)
    one_token(bridge.unit, model_id, timeout=60)
    return bridge


def stop_bridge(bridge: Bridge, paths: Paths) -> None:
    systemd.stop([bridge.unit.unit])
    (paths.config_home / bridge.file).unlink(missing_ok=True)
    systemd.daemon_reload()


__all__ = ["Bridge", "bridge_fits", "bridge_unit", "start_bridge", "stop_bridge"]
