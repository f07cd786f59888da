"""The units llmctl manages, as one list: what each is, where it listens, what it serves."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.backends import adapter_for
from llmctl.backends.base import base_url
from llmctl.errors import ExitCode, LlmctlError

# The installed units' names, without the renderer: `stack_from_installed` (status) must not
# import jinja2 or build the config schema.
from llmctl.render.names import (
    GATEWAY_NAME,
    GATEWAY_SOCKET,
    GATEWAY_START_TIMEOUT,
    GATEWAY_UNIT,
    REDIS_KIND,
    REDIS_NAME,
    REDIS_START_TIMEOUT,
    REDIS_UNIT,
    SUPERVISOR_NAME,
    SUPERVISOR_START_TIMEOUT,
    SUPERVISOR_UNIT,
    UNIT_SUBDIR,
    unit_name,
)

if TYPE_CHECKING:
    from llmctl.config.schema import Config

GATEWAY_KIND = "gateway"
SUPERVISOR_KIND = "supervisor"  # ready = active: Type=notify, READY=1 after its first round
ROUTER_KIND = "router"  # ready = active: Type=notify, READY=1 once it accepts


@dataclass(frozen=True)
class StackUnit:
    name: str  # backend name, or "gateway"
    unit: str
    kind: str  # a backend Kind value, or "gateway"
    host: str
    port: int
    model: str | None  # model id it must serve (one-model backends)
    models: tuple[str, ...]  # every model id it routes or can serve
    start_timeout: int
    command: str
    model_file: Path | None  # a GGUF or directory that must exist before starting
    companions: tuple[str, ...] = ()  # units that go with it (the gateway's socket)

    @property
    def url(self) -> str:
        return base_url(self.host, self.port)

    @property
    def is_gateway(self) -> bool:
        return self.kind == GATEWAY_KIND

    @property
    def is_supervisor(self) -> bool:
        return self.kind == SUPERVISOR_KIND

    @property
    def ready_when_active(self) -> bool:
        """llmctl's own Type=notify services (supervisor, router): active means READY=1 came."""
        return self.kind in (SUPERVISOR_KIND, ROUTER_KIND)

    @property
    def is_router(self) -> bool:
        return self.kind == ROUTER_KIND


def _supervisor_unit(host: str, port: int) -> StackUnit:
    import sys  # noqa: PLC0415

    return StackUnit(
        name=SUPERVISOR_NAME,
        unit=SUPERVISOR_UNIT,
        kind=SUPERVISOR_KIND,
        host=host,
        port=port,  # its metrics port (0: none)
        model=None,
        models=(),
        start_timeout=SUPERVISOR_START_TIMEOUT,
        command=sys.executable,
        model_file=None,
    )


def _router_unit(port: int) -> StackUnit:
    import sys  # noqa: PLC0415

    from llmctl.router import ROUTER_NAME, ROUTER_SOCKET, ROUTER_UNIT  # noqa: PLC0415

    return StackUnit(
        name=ROUTER_NAME, unit=ROUTER_UNIT, kind=ROUTER_KIND, host="127.0.0.1", port=port, model=None,
        models=(), start_timeout=SUPERVISOR_START_TIMEOUT, command=sys.executable, model_file=None,
        companions=(ROUTER_SOCKET,),
    )  # fmt: skip


def _redis_unit(port: int, command: str) -> StackUnit:
    return StackUnit(
        name=REDIS_NAME, unit=REDIS_UNIT, kind=REDIS_KIND, host="127.0.0.1", port=port, model=None,
        models=(), start_timeout=REDIS_START_TIMEOUT, command=command, model_file=None,
    )  # fmt: skip


def stack_units(config: Config, serving: dict[str, str] | None = None) -> list[StackUnit]:
    """Backends (sorted by name), the gateway's Redis, the gateway (and its router), the
    supervisor: the order `up` starts them in."""
    from llmctl.config.checks import classify_source  # noqa: PLC0415 - see the imports above
    from llmctl.render.gateway import routed_models  # noqa: PLC0415

    serving = serving or {}
    serving_map: dict[str, str] = {}
    units = []
    for name in sorted(config.backends):
        backend = config.backends[name]
        adapter = adapter_for(backend.kind)
        model_id = serving.get(name) or getattr(backend, "model", None)
        if model_id is not None:
            serving_map[name] = model_id
        model = config.models.get(model_id) if model_id else None
        model_file = None
        if model is not None and model.source and classify_source(model.source) in ("gguf", "directory"):
            model_file = Path(model.source).expanduser()
        units.append(
            StackUnit(
                name=name,
                unit=unit_name(name),
                kind=backend.kind.value,
                host=backend.host,
                port=backend.port,
                model=None if adapter.serves_many else model_id,
                models=tuple(sorted(config.models_of(name)))
                if adapter.serves_many
                else tuple(filter(None, [model_id])),
                start_timeout=backend.start_timeout or adapter.default_start_timeout,
                command=backend.command,
                model_file=model_file,
            )
        )
    if config.gateway.enabled:
        gw = config.gateway
        if gw.cache is not None:
            units.append(_redis_unit(gw.cache.port, gw.cache.command))
        units.append(
            StackUnit(
                name=GATEWAY_NAME,
                unit=GATEWAY_UNIT,
                kind=GATEWAY_KIND,
                host=gw.host,
                port=gw.port,
                model=None,
                models=tuple(routed_models(config, serving_map)),
                start_timeout=GATEWAY_START_TIMEOUT,
                command=gw.command,
                model_file=None,
                companions=(GATEWAY_SOCKET,),
            )
        )
        if gw.on_demand:
            units.append(_router_unit(gw.router_listen_port))
    if config.supervisor.enabled:
        metrics = config.supervisor.metrics
        units.append(_supervisor_unit(metrics.host, metrics.port if metrics.enabled else 0))
    return units


def select(units: list[StackUnit], names: tuple[str, ...]) -> list[StackUnit]:
    """The units named (backend names, 'gateway', or unit names), in stack order."""
    if not names:
        return units
    by_name = {u.name: u for u in units} | {u.unit: u for u in units}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        import difflib  # noqa: PLC0415 - only for this error

        known = [u.name for u in units]
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise LlmctlError(
            f"no backend or gateway named {unknown[0]!r} in the config",
            hint=(f"did you mean '{close[0]}'? " if close else "") + f"known: {', '.join(known)}",
            exit_code=ExitCode.USAGE,
        )
    wanted = {by_name[n].unit for n in names}
    return [u for u in units if u.unit in wanted]


def _directive(text: str, key: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip()
    return None


def _gate_arguments(exec_start_post: str) -> dict[str, str]:
    """--kind/--url/--model/--timeout of a rendered `wait-ready` gate (escape.py's quoting)."""
    words = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(exec_start_post)]
    return {words[i][2:]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")}


def stack_from_installed(config_home: Path) -> list[StackUnit]:
    """The stack as the installed unit files describe it, without any config.

    Every backend unit carries its readiness gate (`wait-ready --kind --url --model`), and the
    gateway's socket its address: after a rollback, the restored files, not the config the
    user may be editing, say what must serve.
    """
    from urllib.parse import urlsplit  # noqa: PLC0415

    unit_dir = config_home / UNIT_SUBDIR
    units = []
    for path in sorted(unit_dir.glob("llmctl-*.service")):
        text = path.read_text(encoding="utf-8", errors="replace")
        generated = text.startswith("# Generated by llmctl")
        if not generated or path.name in (GATEWAY_UNIT, "llmctl-router.service", REDIS_UNIT):
            continue
        gate = _directive(text, "ExecStartPost")
        args = _gate_arguments(gate) if gate else {}
        if "kind" not in args or "url" not in args:
            continue
        url = urlsplit(args["url"])
        units.append(
            StackUnit(
                name=path.name.removeprefix("llmctl-").removesuffix(".service"),
                unit=path.name,
                kind=args["kind"],
                host=url.hostname or "127.0.0.1",
                port=url.port or 80,
                model=args.get("model"),
                models=tuple(filter(None, [args.get("model")])),
                start_timeout=int(float(args.get("timeout", "300"))) + 5,
                command="",
                model_file=None,
            )
        )
    redis_file = unit_dir / REDIS_UNIT
    if redis_file.is_file():
        # Its port is in the unit's header comment (units/redis.service.j2).
        text = redis_file.read_text(encoding="utf-8", errors="replace")
        found = re.search(r"listens on 127\.0\.0\.1:(\d+)", text)
        units.append(_redis_unit(int(found[1]) if found else 0, ""))
    socket_file = unit_dir / GATEWAY_SOCKET
    if (unit_dir / GATEWAY_UNIT).is_file() and socket_file.is_file():
        listen = _directive(socket_file.read_text(encoding="utf-8", errors="replace"), "ListenStream") or ""
        host, _, port = listen.rpartition(":")
        units.append(
            StackUnit(
                name=GATEWAY_NAME,
                unit=GATEWAY_UNIT,
                kind=GATEWAY_KIND,
                host=host.strip("[]") or "127.0.0.1",
                port=int(port) if port.isdigit() else 4000,
                model=None,
                models=(),
                start_timeout=GATEWAY_START_TIMEOUT,
                command="",
                model_file=None,
                companions=(GATEWAY_SOCKET,),
            )
        )
    router_socket = unit_dir / "llmctl-router.socket"
    if (unit_dir / "llmctl-router.service").is_file() and router_socket.is_file():
        listen = _directive(router_socket.read_text(encoding="utf-8", errors="replace"), "ListenStream") or ""
        port = listen.rpartition(":")[2]
        units.append(_router_unit(int(port) if port.isdigit() else 0))
    supervisor_file = unit_dir / SUPERVISOR_UNIT
    if supervisor_file.is_file():
        # Its metrics address is in the unit's header comment (units/supervisor.service.j2).
        text = supervisor_file.read_text(encoding="utf-8", errors="replace")
        found = re.search(r"Prometheus metrics: \[?([^\s\]]+?)\]?:(\d+)\.", text)
        units.append(_supervisor_unit(found[1], int(found[2])) if found else _supervisor_unit("127.0.0.1", 0))
    return units
