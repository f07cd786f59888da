"""The steps a switch is made of: checks, timing, installing, routing, verifying, history."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import procs, systemd
from llmctl.backends.base import probe_client
from llmctl.config.checks import classify_source
from llmctl.config.load import LoadedConfig
from llmctl.errors import ExitCode, LlmctlError
from llmctl.fsutil import atomic_write
from llmctl.install import ChangeKind, apply_changes, compare
from llmctl.paths import Paths
from llmctl.render.gateway import render_gateway_config
from llmctl.render.units import GATEWAY_FILE, GATEWAY_UNIT, RenderedStack
from llmctl.stack import StackUnit

if TYPE_CHECKING:
    from llmctl.planner import Plan

HISTORY_FILE = "switch-history.jsonl"
HISTORY_KEEP = 1000


@dataclass
class SwitchResult:
    backend: str
    old: str | None
    new: str
    phases: list[tuple[str, float]] = field(default_factory=list)  # the phases that finished
    entered: list[str] = field(default_factory=list)  # every phase begun, finished or not
    snapshot: str | None = None
    unchanged: bool = False
    evicted: tuple[str, ...] = ()  # other backends stopped to make room

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.phases)


class Phases:
    def __init__(self, result: SwitchResult, on_phase: Callable[[str, float], None] | None) -> None:
        self.result = result
        self.on_phase = on_phase

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        self.result.entered.append(name)
        yield
        took = time.monotonic() - start
        self.result.phases.append((name, took))
        if self.on_phase is not None:
            self.on_phase(name, took)


def resolve(loaded: LoadedConfig, model_id: str, backend: str | None) -> str:
    """The backend that serves `model_id` (checked against --backend when given)."""
    config = loaded.config
    model = config.models.get(model_id)
    if model is None:
        import difflib  # noqa: PLC0415

        close = difflib.get_close_matches(model_id, list(config.models), n=1)
        raise LlmctlError(
            f"no model named {model_id!r} in the config",
            hint=(f"did you mean '{close[0]}'? " if close else "") + "llmctl config show lists them",
            exit_code=ExitCode.USAGE,
        )
    if model.remote is not None or model.backend is None:
        raise LlmctlError(
            f"{model_id} is served by a remote provider; there is nothing to switch",
            exit_code=ExitCode.USAGE,
        )
    if backend is not None and backend != model.backend:
        raise LlmctlError(
            f"{model_id} belongs to backend {model.backend!r}, not {backend!r}",
            hint="Each model names its backend in the config (models.ID.backend).",
            exit_code=ExitCode.USAGE,
        )
    return model.backend


def check_backend_key(loaded: LoadedConfig, paths: Paths, name: str) -> None:
    """A backend started with an API key needs its key file, which `llmctl up` creates (and
    restarts the gateway to read): a switch does not, so it refuses before touching anything."""
    if not getattr(loaded.config.backends[name], "api_key", False):
        return
    key_file = paths.backend_key_file(name)
    if not key_file.is_file():
        raise LlmctlError(
            f"{name} is configured with api_key: true but has no key yet ({key_file} is missing)",
            hint="Run `llmctl up` first: it creates the key and restarts what reads it. Nothing was changed.",
            exit_code=ExitCode.USAGE,
        )


def check_model_file(loaded: LoadedConfig, model_id: str) -> None:
    """The file must exist and (for GGUF) its header must parse: checked before touching anything."""
    model = loaded.config.models[model_id]
    assert model.source is not None
    kind = classify_source(model.source)
    if kind not in ("gguf", "directory"):
        return
    path = Path(model.source).expanduser()
    if not path.exists():
        raise LlmctlError(
            f"the model file of {model_id} does not exist: {path}",
            hint="Nothing was changed; the current model keeps serving.",
            exit_code=ExitCode.USAGE,
        )
    if kind == "gguf":
        from llmctl.estimate import read_gguf  # noqa: PLC0415

        try:
            read_gguf(path)
        except LlmctlError as err:
            raise LlmctlError(
                f"the model file of {model_id} is not a usable GGUF: {err.message}",
                hint="Nothing was changed; the current model keeps serving.",
                exit_code=ExitCode.USAGE,
            ) from None


def refuse_if_unfit(plan: Plan) -> None:
    """Refuse before touching anything when even every allowed eviction would not make room."""
    if plan.fits:
        return
    from llmctl.planner import human_bytes  # noqa: PLC0415

    raise LlmctlError(
        f"{plan.model} does not fit on {plan.backend}'s GPUs: short by {human_bytes(plan.short_by)}"
        " even after every allowed eviction; nothing was changed",
        details=[*plan.notes, *(f"GPU {g.index}: free {human_bytes(g.free_now)}, needs {human_bytes(g.needs)}"
                                for g in plan.gpus if g.target)],
        hint="llmctl plan shows the numbers; a smaller context or quantisation, fewer gpu_layers, or "
        "unpinning a backend makes room.",
    )  # fmt: skip


def install(stack: RenderedStack, paths: Paths) -> set[str]:
    changes = compare(stack, paths.config_home)
    apply_changes(changes, paths.config_home)
    changed = {c.path for c in changes if c.kind is not ChangeKind.UNCHANGED}
    if changed:
        systemd.daemon_reload()
    return changed


def gateway_running() -> bool:
    state = systemd.show([GATEWAY_UNIT]).get(GATEWAY_UNIT)
    return state is not None and state.active_state == "active"


def set_routes(
    loaded: LoadedConfig,
    paths: Paths,
    serving: dict[str, str],
    addresses: Mapping[str, tuple[str, int]] | None = None,
) -> None:
    """Write gateway.yaml for `serving` and, when the gateway runs, reload it (no request lost).
    `addresses` routes a backend's models to another address (the switch's bridge)."""
    if not loaded.config.gateway.enabled:
        return
    text = render_gateway_config(loaded.config, serving, addresses)
    target = paths.config_home / GATEWAY_FILE
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return
    atomic_write(target, text)
    if gateway_running():
        systemd.reload([GATEWAY_UNIT])


def all_serving(loaded: LoadedConfig, serving: dict[str, str]) -> dict[str, str]:
    """Recorded choices over the config's `model:` for every backend."""
    out = {n: m for n, b in loaded.config.backends.items() if (m := getattr(b, "model", None))}
    out.update(serving)
    return out


def one_token(unit: StackUnit, model_id: str, timeout: float) -> None:
    """A real completion: a server can list its model and still fail to generate."""
    with probe_client(timeout) as client:
        from llmctl.backends.http import transport_errors  # noqa: PLC0415

        try:
            response = client.post(
                f"{unit.url}/v1/chat/completions",
                json={"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
            )
        except transport_errors() as exc:
            raise LlmctlError(f"{unit.name}: the test completion failed: {exc}") from None
    if response.status_code != 200:
        raise LlmctlError(
            f"{unit.name}: the test completion answered {response.status_code}: {response.text[:200]}"
        )


def wait_stopped(unit: StackUnit, pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = procs.alive(pids)
        if not left and not procs.port_in_use(unit.host, unit.port):
            return
        time.sleep(0.02)
    holders = procs.alive(pids)
    raise LlmctlError(
        f"{unit.name} stopped, but "
        + (f"processes {holders} are still alive" if holders else f"port {unit.port} is still bound"),
        hint="llmctl runbook gpu-memory-not-freed",
    )


def record_history(paths: Paths, result: SwitchResult, ok: bool) -> None:
    """Append one line per switch (bounded), for status and the metrics."""
    path = paths.state_dir / HISTORY_FILE
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": result.backend,
        "from": result.old,
        "to": result.new,
        "ok": ok,
        "total_s": round(result.total, 3),
        "phases": {name: round(seconds, 3) for name, seconds in result.phases},
    }
    try:
        lines = path.read_text(encoding="utf-8").splitlines()[-(HISTORY_KEEP - 1) :]
    except FileNotFoundError:
        lines = []
    atomic_write(path, "\n".join([*lines, json.dumps(entry)]) + "\n")
