"""Rendering the config into systemd user units and the gateway file, without touching disk.

`render_stack` is a pure function of the config, the paths and how commands resolve: the same
inputs give byte-identical output, which is what makes `llmctl diff` and "re-running `up`
restarts nothing" work. Every value goes through `llmctl.render.escape` on its way in.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from llmctl import __version__
from llmctl.backends import adapter_for
from llmctl.config.schema import AnyBackend, Config
from llmctl.errors import ExitCode, LlmctlError
from llmctl.executables import resolve_executable
from llmctl.gateway_runtime import (
    BACKLOG,
    CHILD_STOP_TIMEOUT,
    REDIS_BREAKER_VARIABLE,
    RELOAD_WAIT_TIMEOUT,
    RUNTIME_DIR_NAME,
)
from llmctl.gateway_runtime.interpreter import litellm_python
from llmctl.paths import Paths
from llmctl.render import escape, names
from llmctl.render.gateway import render_gateway_config

# The installed names live in render.names (no jinja2 or schema there, for `status`); the
# renderer's callers know them from here.
GATEWAY_FILE = names.GATEWAY_FILE
templates_dir = names.templates_dir
GATEWAY_NAME = names.GATEWAY_NAME
GATEWAY_SOCKET = names.GATEWAY_SOCKET
GATEWAY_START_TIMEOUT = names.GATEWAY_START_TIMEOUT
GATEWAY_UNIT = names.GATEWAY_UNIT
REDIS_CONF_FILE = names.REDIS_CONF_FILE
REDIS_UNIT = names.REDIS_UNIT
SUPERVISOR_NAME = names.SUPERVISOR_NAME
SUPERVISOR_START_TIMEOUT = names.SUPERVISOR_START_TIMEOUT
SUPERVISOR_UNIT = names.SUPERVISOR_UNIT
TARGET = names.TARGET
UNIT_SUBDIR = names.UNIT_SUBDIR
unit_name = names.unit_name
STOP_TIMEOUT = 60
RESTART_SEC = 10
# Five starts in ten minutes, then systemd stops trying (Result=start-limit-hit); with
# RestartSec=10 a crash loop takes about a minute to get there instead of half a second.
START_LIMIT_INTERVAL = 600
START_LIMIT_BURST = 5
SUPERVISOR_STOP_TIMEOUT = 30
SUPERVISOR_RESTART_SEC = 5
# Clients' connections wait in the socket's queue while the gateway is down: restart it soon.
# It reloads no model, and the start limit above still ends a crash loop (in ~40 s, not ~80).
GATEWAY_RESTART_SEC = 2
GATEWAY_STOP_TIMEOUT = CHILD_STOP_TIMEOUT + 15
# The router holds no model: a crashed one should be back before LiteLLM's clients notice.
ROUTER_RESTART_SEC = 1
# Redis holds no model either; the gateway skips the cache meanwhile.
REDIS_RESTART_SEC = 2
# Its save of the cache to disk on SIGTERM: seconds for a cache of a few GB.
REDIS_STOP_TIMEOUT = 60
REDIS_BREAKER_RECOVERY = 5
assert GATEWAY_START_TIMEOUT > RELOAD_WAIT_TIMEOUT, "reload-wait must give up before systemd does"


def syslog_identifier(unit: str) -> str:
    return unit.removesuffix(".service")


@dataclass(frozen=True)
class RenderedStack:
    """Files keyed by their path relative to $XDG_CONFIG_HOME, in start order for units."""

    files: dict[str, str]
    units: list[str]  # unit names in start order: backends, redis, gateway, supervisor (target last)

    def unit_path(self, unit: str) -> str:
        return f"{UNIT_SUBDIR}/{unit}"


@dataclass(frozen=True)
class RenderOptions:
    config_path: Path
    paths: Paths
    # How the readiness gate runs llmctl: this interpreter, so a venv install keeps working.
    llmctl_argv: tuple[str, ...] = (sys.executable, "-m", "llmctl")
    resolve: Callable[[str], Path | None] = resolve_executable
    # Models the backends serve now, where they differ from the config (after `switch`).
    serving: tuple[tuple[str, str], ...] = ()


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - systemd syntax, escaped by llmctl.render.escape
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _render(template: str, options: RenderOptions, **values: object) -> str:
    """A unit template with what every unit's header says (llmctl's version, the config)."""
    return (
        _environment()
        .get_template(template)
        .render(version=__version__, config_path=escape.plain_value(str(options.config_path)), **values)
    )


def _executable(command: str, resolve: Callable[[str], Path | None], where: str) -> str:
    found = resolve(command)
    if found is not None:
        return str(found)
    path = Path(command).expanduser()
    if not path.is_absolute():
        # systemd does not search $PATH, so a bare name must be resolved now.
        raise LlmctlError(
            f"{where}: '{command}' is not on PATH",
            hint="Install it, or give its absolute path in the config.",
            exit_code=ExitCode.USAGE,
        )
    # A missing absolute path is rendered as written: `up` and `doctor` name the file.
    return str(path)


def _expand(path: str) -> str:
    return str(Path(path).expanduser()) if path.startswith("~") else path


def serving_model(config: Config, name: str, options: RenderOptions) -> str | None:
    override = dict(options.serving).get(name)
    return override if override is not None else getattr(config.backends[name], "model", None)


def keyed_backends(config: Config) -> list[str]:
    """Backends started with an API key llmctl generates (`api_key: true`), sorted."""
    return sorted(name for name, backend in config.backends.items() if getattr(backend, "api_key", False))


def _ready_gate(options: RenderOptions, kind: str, url: str, model: str | None, timeout: int) -> str:
    argv = [*options.llmctl_argv, "wait-ready", "--kind", kind, "--url", url]
    if model is not None:
        argv += ["--model", model]
    argv += ["--timeout", str(timeout), "--pid", escape.ExpandedVariable("${MAINPID}")]
    return escape.exec_line(argv)


def render_bridge(config: Config, name: str, port: int, options: RenderOptions) -> tuple[str, str]:
    """(unit name, unit file) of a temporary second server for backend `name`, on 127.0.0.1:port,
    serving what `options.serving` says for it: `llmctl switch` starts it beside the old model
    (llmctl.switch.beside). Same command line, environment, key file and readiness gate."""
    backend = config.backends[name].model_copy(update={"host": "127.0.0.1", "port": port})
    unit = bridge_unit(name)
    return unit, _render_backend(config, name, backend, options, unit=unit)


def bridge_unit(backend: str) -> str:
    return f"llmctl-{backend}-bridge.service"


def _render_backend(
    config: Config, name: str, backend: AnyBackend, options: RenderOptions, *, unit: str | None = None
) -> str:
    unit = unit or unit_name(name)
    adapter = adapter_for(backend.kind)
    model_id = serving_model(config, name, options)
    model = config.models.get(model_id) if model_id else None
    if model is not None and model.source is not None:
        model = model.model_copy(update={"source": _expand(model.source)})
    launch = adapter.launch(
        backend, _executable(backend.command, options.resolve, f"backends.{name}.command"), model_id, model
    )
    start_timeout = backend.start_timeout or adapter.default_start_timeout
    environment = {**launch.environment, **backend.environment}
    description = f"llmctl backend {name} ({backend.kind}" + (f", serving {model_id})" if model_id else ")")
    # The key file has no "-": without its key the server must not start (it would serve openly).
    key_files = [options.paths.backend_key_file(name)] if name in keyed_backends(config) else []
    return _render(
        "backend.service.j2",
        options,
        unit=unit,
        syslog_identifier=syslog_identifier(unit),
        description=escape.plain_value(description),
        exec_start=escape.exec_line(launch.argv),
        environment=[escape.env_assignment(k, v) for k, v in environment.items()],
        unset_environment=escape.unit_word_list(launch.unset_environment),
        environment_files=[escape.plain_value(str(path)) for path in key_files],
        # The gate gets a little less than systemd's own limit so it can say why it gave up.
        exec_ready=_ready_gate(
            options, backend.kind.value, adapter.url(backend), model_id, max(start_timeout - 5, 1)
        ),
        restart=adapter.restart,
        restart_sec=RESTART_SEC,
        start_timeout=start_timeout,
        stop_timeout=STOP_TIMEOUT,
        start_limit_interval=START_LIMIT_INTERVAL,
        start_limit_burst=START_LIMIT_BURST,
    )


def _listen_stream(host: str, port: int) -> str:
    """ListenStream= takes an address, not a name."""
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        raise LlmctlError(
            f"gateway.host: '{host}' is not an IP address; the gateway's socket unit needs one",
            hint="Use 127.0.0.1 (or another address of this machine).",
            exit_code=ExitCode.USAGE,
        ) from None
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _render_gateway_socket(config: Config, options: RenderOptions) -> str:
    gw = config.gateway
    listen = _listen_stream(gw.host, gw.port)
    return _render(
        "gateway.socket.j2",
        options,
        unit=GATEWAY_SOCKET,
        service=GATEWAY_UNIT,
        description=escape.plain_value(f"llmctl gateway socket ({listen})"),
        listen=escape.plain_value(listen),
        backlog=BACKLOG,
    )


def _render_gateway(config: Config, options: RenderOptions) -> str:
    gw = config.gateway
    entry_point = _executable(gw.command, options.resolve, "gateway.command")
    runtime_dir = escape.ExpandedVariable("${RUNTIME_DIRECTORY}")
    serve = [
        *options.llmctl_argv, "gateway", "serve",
        "--litellm-python", str(litellm_python(Path(entry_point))),
        "--config", str(options.paths.gateway_file),
        "--runtime-dir", runtime_dir,
    ]  # fmt: skip
    reload = [
        *options.llmctl_argv, "gateway", "reload-wait",
        "--pid", escape.ExpandedVariable("${MAINPID}"),
        "--runtime-dir", runtime_dir,
        "--timeout", str(RELOAD_WAIT_TIMEOUT),
    ]  # fmt: skip
    keyed = keyed_backends(config)
    backend_variables = sorted(
        {v for n in keyed if (v := adapter_for(config.backends[n].kind).api_key_variable) is not None}
    )
    cached = gw.cache is not None
    environment = {
        # PRODUCTION: do not load a stray ./.env from the working directory (the home dir).
        "LITELLM_MODE": "PRODUCTION",
        # Offline: use the bundled cost map instead of fetching one at every start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    if cached:
        # After 5 failed Redis calls LiteLLM skips Redis for this long (its default: 60 s), so
        # a restarted Redis is used again within seconds (measured: see README, gateway.cache).
        environment[REDIS_BREAKER_VARIABLE] = str(REDIS_BREAKER_RECOVERY)
    return _render(
        "gateway.service.j2",
        options,
        unit=GATEWAY_UNIT,
        socket=GATEWAY_SOCKET,
        syslog_identifier=syslog_identifier(GATEWAY_UNIT),
        description="llmctl gateway (LiteLLM proxy)",
        # Not After= the backends: the socket queues requests whatever starts first, and
        # adding a backend must change only gateway.yaml (a reload), not this unit (a restart).
        # After= its Redis: when both start, LiteLLM finds the cache up. Wants=, not Requires=:
        # stopping Redis must not stop the gateway.
        after=escape.unit_word_list([GATEWAY_SOCKET, *([REDIS_UNIT] if cached else [])]),
        redis_unit=REDIS_UNIT if cached else "",
        redis_env_file=escape.plain_value(str(options.paths.redis_env_file)) if cached else "",
        exec_start=escape.exec_line(serve),
        exec_reload=escape.exec_line(reload),
        environment=[escape.env_assignment(k, v) for k, v in environment.items()],
        # LiteLLM reads these in place of its argv; the supervisor sets CONFIG_FILE_PATH
        # for each child to that child's snapshot. A backend's key file also names the key
        # by the variable the backend reads: the gateway needs only its LLMCTL_API_KEY_<NAME>.
        unset_environment=escape.unit_word_list(["HOST", "PORT", "CONFIG_FILE_PATH", *backend_variables]),
        key_file=escape.plain_value(str(options.paths.gateway_env_file)),
        secrets_file=escape.plain_value(str(options.paths.secrets_env_file)),
        # "-": a missing key fails only the routes to that backend, not the whole gateway.
        backend_key_files=[escape.plain_value(str(options.paths.backend_key_file(n))) for n in keyed],
        router_key_file=escape.plain_value(str(options.paths.router_key_file))
        if config.gateway.on_demand
        else "",
        runtime_directory=escape.plain_value(RUNTIME_DIR_NAME),
        restart_sec=GATEWAY_RESTART_SEC,
        start_timeout=GATEWAY_START_TIMEOUT,
        stop_timeout=GATEWAY_STOP_TIMEOUT,
        start_limit_interval=START_LIMIT_INTERVAL,
        start_limit_burst=START_LIMIT_BURST,
    )


def _render_redis(config: Config, options: RenderOptions) -> str:
    """llmctl-redis.service (gateway.cache): Redis on loopback, its config in redis.conf."""
    cache = config.gateway.cache
    assert cache is not None
    # As found on PATH, symlinks kept: Debian's redis-server is a link to redis-check-rdb, one
    # binary that runs as the server only when argv[0] says redis-server.
    server = _executable(cache.command, options.resolve, "gateway.cache.command")
    return _render(
        "redis.service.j2",
        options,
        unit=REDIS_UNIT,
        port=cache.port,
        conf_file=escape.plain_value(str(options.paths.redis_conf_file)),
        data_dir=escape.plain_value(str(options.paths.redis_data_dir)),
        description=escape.plain_value(f"llmctl redis (the gateway's cache, 127.0.0.1:{cache.port})"),
        exec_start=escape.exec_line([server, str(options.paths.redis_conf_file)]),
        restart_sec=REDIS_RESTART_SEC,
        start_timeout=names.REDIS_START_TIMEOUT,
        stop_timeout=REDIS_STOP_TIMEOUT,
        syslog_identifier=syslog_identifier(REDIS_UNIT),
        start_limit_interval=START_LIMIT_INTERVAL,
        start_limit_burst=START_LIMIT_BURST,
    )


def _render_supervisor(config: Config, options: RenderOptions) -> str:
    sup = config.supervisor
    serve = [
        *options.llmctl_argv, "--config", str(options.config_path),
        "supervise", "--state-dir", str(options.paths.state_dir),
    ]  # fmt: skip
    metrics = f"{sup.metrics.host}:{sup.metrics.port}" if sup.metrics.enabled else ""
    return _render(
        "supervisor.service.j2",
        options,
        unit=SUPERVISOR_UNIT,
        syslog_identifier=syslog_identifier(SUPERVISOR_UNIT),
        description="llmctl supervisor (health probes, restarts, metrics)",
        metrics=escape.plain_value(metrics),
        exec_start=escape.exec_line(serve),
        watchdog_sec=sup.watchdog_sec,
        restart_sec=SUPERVISOR_RESTART_SEC,
        start_timeout=SUPERVISOR_START_TIMEOUT,
        stop_timeout=SUPERVISOR_STOP_TIMEOUT,
        start_limit_interval=START_LIMIT_INTERVAL,
        start_limit_burst=START_LIMIT_BURST,
    )


def _render_router(config: Config, options: RenderOptions) -> tuple[str, str]:
    """(socket unit, service unit) of llmctl's router (gateway.on_demand)."""
    from llmctl.router import ROUTER_SOCKET, ROUTER_UNIT  # noqa: PLC0415
    from llmctl.router.main import settings_lines  # noqa: PLC0415

    listen = _listen_stream("127.0.0.1", config.gateway.router_listen_port)
    socket_text = _render(
        "router.socket.j2", options, unit=ROUTER_SOCKET,
        description=escape.plain_value(f"llmctl router socket ({listen})"),
        listen=escape.plain_value(listen), backlog=BACKLOG,
    )  # fmt: skip
    serve = [
        *options.llmctl_argv, "--config", str(options.config_path),
        "router", "serve", "--state-dir", str(options.paths.state_dir),
    ]  # fmt: skip
    backends = [unit_name(n) for n in sorted(config.backends)]
    service_text = _render(
        "router.service.j2",
        options,
        unit=ROUTER_UNIT,
        socket=ROUTER_SOCKET,
        description="llmctl router (models loaded on demand)",
        settings=[escape.plain_value(line) for line in settings_lines(config)],
        after=escape.unit_word_list([ROUTER_SOCKET, *backends]),
        exec_start=escape.exec_line(serve),
        restart_sec=ROUTER_RESTART_SEC,
        start_timeout=SUPERVISOR_START_TIMEOUT,
        stop_timeout=int(config.gateway.drain_timeout) + 15,
        syslog_identifier=syslog_identifier(ROUTER_UNIT),
        start_limit_interval=START_LIMIT_INTERVAL,
        start_limit_burst=START_LIMIT_BURST,
    )
    return socket_text, service_text


def render_stack(config: Config, options: RenderOptions) -> RenderedStack:
    files: dict[str, str] = {}
    units: list[str] = []
    for name in sorted(config.backends):
        unit = unit_name(name)
        files[f"{UNIT_SUBDIR}/{unit}"] = _render_backend(config, name, config.backends[name], options)
        units.append(unit)
    wants = list(units)
    if config.gateway.enabled and config.gateway.cache is not None:
        from llmctl.render.redis_conf import render_redis_conf  # noqa: PLC0415

        files[f"{UNIT_SUBDIR}/{REDIS_UNIT}"] = _render_redis(config, options)
        files[REDIS_CONF_FILE] = render_redis_conf(
            config.gateway.cache, options.paths, escape.plain_value(str(options.config_path))
        )
        units.append(REDIS_UNIT)
        wants.append(REDIS_UNIT)
    if config.gateway.enabled:
        files[f"{UNIT_SUBDIR}/{GATEWAY_SOCKET}"] = _render_gateway_socket(config, options)
        files[f"{UNIT_SUBDIR}/{GATEWAY_UNIT}"] = _render_gateway(config, options)
        files["llmctl/gateway.yaml"] = render_gateway_config(config, dict(serving_model_map(config, options)))
        units.append(GATEWAY_UNIT)
        wants += [GATEWAY_SOCKET, GATEWAY_UNIT]
        if config.gateway.on_demand:
            from llmctl.router import ROUTER_SOCKET, ROUTER_UNIT  # noqa: PLC0415

            socket_text, service_text = _render_router(config, options)
            files[f"{UNIT_SUBDIR}/{ROUTER_SOCKET}"] = socket_text
            files[f"{UNIT_SUBDIR}/{ROUTER_UNIT}"] = service_text
            units.append(ROUTER_UNIT)
            wants += [ROUTER_SOCKET, ROUTER_UNIT]
    if config.supervisor.enabled:
        files[f"{UNIT_SUBDIR}/{SUPERVISOR_UNIT}"] = _render_supervisor(config, options)
        units.append(SUPERVISOR_UNIT)
        wants.append(SUPERVISOR_UNIT)
    files[f"{UNIT_SUBDIR}/{TARGET}"] = _render(
        "llmctl.target.j2",
        options,
        wants=escape.unit_word_list(wants),
    )
    return RenderedStack(files=files, units=units)


def serving_model_map(config: Config, options: RenderOptions) -> dict[str, str]:
    """backend name -> model id it serves now (backends that serve one model)."""
    out = {}
    for name in config.backends:
        model = serving_model(config, name, options)
        if model is not None:
            out[name] = model
    return out
