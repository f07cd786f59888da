"""Checks across fields: references, fallback cycles, ports, exposure, files on disk.

Each check yields `Problem`s with a YAML path; errors stop the config from loading, warnings
(things that are often true while a config is written before installing) are shown by
`llmctl validate` and become errors with `--strict`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from llmctl.config.litellm_settings import passthrough_problems
from llmctl.config.problems import Loc, Problem, format_loc
from llmctl.config.schema import AnyBackend, Config, Kind, is_loopback
from llmctl.executables import resolve_executable

SourceKind = Literal["gguf", "directory", "hf-repo", "ollama-tag"]


def classify_source(source: str) -> SourceKind | None:
    """What a model's `source` names. None: a relative path, which is ambiguous."""
    if source.startswith(("/", "~")):
        return "gguf" if source.lower().endswith(".gguf") else "directory"
    if source.startswith(".") or source.lower().endswith(".gguf"):
        return None
    if ":" in source or "/" not in source:
        return "ollama-tag"
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source):
        return "hf-repo"
    return "ollama-tag"


ACCEPTS: dict[Kind, tuple[SourceKind, ...]] = {
    Kind.LLAMA_SERVER: ("gguf",),
    Kind.LLAMA_CPP_PYTHON: ("gguf",),
    Kind.VLLM: ("hf-repo", "directory", "gguf"),
    Kind.OLLAMA: ("ollama-tag", "hf-repo"),
}


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"known: {', '.join(sorted(known))}" if known else "none are defined"


def _check_references(config: Config) -> Iterator[Problem]:
    backends = list(config.backends)
    for mid, model in config.models.items():
        if model.backend is not None and model.backend not in config.backends:
            yield Problem(
                ("models", mid, "backend"),
                f"unknown backend '{model.backend}'; {_suggest(model.backend, backends)}",
            )
            continue
        if model.backend is None or model.source is None:
            continue
        backend = config.backends[model.backend]
        kind = classify_source(model.source)
        if kind is None:
            yield Problem(
                ("models", mid, "source"),
                "relative paths are ambiguous; use an absolute path or ~/...",
            )
        elif kind not in ACCEPTS[backend.kind]:
            wants = " or ".join(k.replace("-", " ") for k in ACCEPTS[backend.kind])
            yield Problem(
                ("models", mid, "source"),
                f"{backend.kind} backend '{model.backend}' cannot serve a {kind.replace('-', ' ')};"
                f" it needs a {wants}",
            )
    for name, backend in config.backends.items():
        current = getattr(backend, "model", None)
        if current is None:
            continue
        if current not in config.models:
            yield Problem(
                ("backends", name, "model"),
                f"unknown model '{current}'; {_suggest(current, list(config.models))}",
            )
        elif config.models[current].backend != name:
            owner = config.models[current].backend
            yield Problem(
                ("backends", name, "model"),
                f"model '{current}' is not served by this backend "
                + (f"(its backend is '{owner}')" if owner else "(it is a remote model)"),
            )


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _check_fallbacks(config: Config) -> Iterator[Problem]:
    models = list(config.models)
    for source, targets in config.gateway.fallbacks.items():
        if source not in config.models:
            yield Problem(
                ("gateway", "fallbacks", source),
                f"unknown model '{source}'; {_suggest(source, models)}",
            )
        for i, target in enumerate(targets):
            if target not in config.models:
                yield Problem(
                    ("gateway", "fallbacks", source, i),
                    f"unknown fallback model '{target}'; {_suggest(target, models)}",
                )
            elif target == source:
                yield Problem(("gateway", "fallbacks", source, i), "a model cannot fall back to itself")
    cycle = _find_cycle({k: [t for t in v if t != k] for k, v in config.gateway.fallbacks.items()})
    if cycle:
        yield Problem(("gateway", "fallbacks"), f"fallback cycle: {' -> '.join(cycle)}")


def _check_network(config: Config) -> Iterator[Problem]:
    listeners: list[tuple[Loc, int]] = [
        (("backends", name, "port"), b.port) for name, b in config.backends.items()
    ]
    if config.gateway.enabled:
        listeners.append((("gateway", "port"), config.gateway.port))
        if config.gateway.on_demand:
            # The router listens on loopback beside the gateway (default: the next port).
            listeners.append((("gateway", "router_port"), config.gateway.router_listen_port))
        if config.gateway.cache is not None:
            listeners.append((("gateway", "cache", "port"), config.gateway.cache.port))
    metrics = config.supervisor.metrics
    if config.supervisor.enabled and metrics.enabled:
        listeners.append((("supervisor", "metrics", "port"), metrics.port))
    seen: dict[int, Loc] = {}
    for loc, port in listeners:
        if port in seen:
            yield Problem(loc, f"port {port} is also used by {format_loc(seen[port][:-1])}")
        else:
            seen[port] = loc
    exposed: list[tuple[Loc, str, bool]] = [
        (("backends", n), b.host, b.allow_non_loopback) for n, b in config.backends.items()
    ]
    exposed.append((("gateway",), config.gateway.host, config.gateway.allow_non_loopback))
    if config.supervisor.enabled and metrics.enabled:
        exposed.append((("supervisor", "metrics"), metrics.host, metrics.allow_non_loopback))
    for loc, host, allowed in exposed:
        if not is_loopback(host) and not allowed:
            yield Problem(
                (*loc, "host"),
                f"{host} is not a loopback address; set allow_non_loopback: true to expose it"
                " on purpose (anyone who can reach it can use the model)",
            )


def _check_supervisor(config: Config) -> Iterator[Problem]:
    for name in config.supervisor.backends:
        if name not in config.backends:
            yield Problem(
                ("supervisor", "backends", name),
                f"unknown backend '{name}'; {_suggest(name, list(config.backends))}",
            )
    for name in ("gateway", "supervisor", "redis"):
        if name in config.backends:
            yield Problem(("backends", name), f"'{name}' is reserved (llmctl-{name}.service is llmctl's own)")


def _check_files(config: Config) -> Iterator[Problem]:
    for name, backend in config.backends.items():
        yield from _check_command(("backends", name, "command"), backend)
    if config.gateway.enabled and resolve_executable(config.gateway.command) is None:
        yield Problem(
            ("gateway", "command"),
            f"executable '{config.gateway.command}' not found",
            "warning",
        )
    cache = config.gateway.cache
    if cache is not None and not config.gateway.enabled:
        yield Problem(("gateway", "cache"), "has no effect: the gateway is disabled", "warning")
    elif cache is not None and resolve_executable(cache.command) is None:
        yield Problem(
            ("gateway", "cache", "command"),
            f"executable '{cache.command}' not found (Debian: apt-get install redis-server)",
            "warning",
        )
    for mid, model in config.models.items():
        if model.source and classify_source(model.source) in ("gguf", "directory"):
            path = Path(model.source).expanduser()
            if not path.exists():
                yield Problem(("models", mid, "source"), f"{path} does not exist", "warning")


def _check_command(loc: Loc, backend: AnyBackend) -> Iterator[Problem]:
    command = backend.command
    if "/" in command and not command.startswith(("/", "~")):
        yield Problem(loc, "relative paths are ambiguous; use an absolute path, ~/..., or a name")
        return
    if resolve_executable(command) is None:
        yield Problem(loc, f"executable '{command}' not found", "warning")


def check_config(config: Config) -> list[Problem]:
    return [
        *_check_references(config),
        *_check_fallbacks(config),
        *passthrough_problems(config.gateway.litellm, config.models, on_demand=config.gateway.on_demand),
        *_check_network(config),
        *_check_supervisor(config),
        *_check_files(config),
    ]
