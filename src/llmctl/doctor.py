"""`llmctl doctor`: is this machine ready to run the stack, and is what runs in step with the config?

Each check is a function that takes what it needs (facts about the host are passed in, so tests
can drive every outcome) and returns a `Check`: ok, warn or fail, a reason, and a fix. `run`
gathers the facts through `Probes`, whose defaults ask the real host: systemd, logind, NVML,
the file system, the ports. A failed check means `llmctl up` would fail or the stack cannot
serve; a warning means something works worse than it could, or cannot be told.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmctl import procs, systemd
from llmctl.errors import ConfigError, LlmctlError

if TYPE_CHECKING:
    from llmctl.config.load import LoadedConfig
    from llmctl.config.schema import Config
    from llmctl.install import FileChange
    from llmctl.paths import Paths
    from llmctl.stack import StackUnit

Status = Literal["ok", "warn", "fail"]
MIB = 1024 * 1024
GIB = 1024 * MIB
DISK_FAIL_BYTES = 100 * MIB  # a snapshot, a state file, a journal line: below this, writes fail
DISK_WARN_BYTES = 1 * GIB
VERSION_TIMEOUT = 15.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    reason: str
    fix: str | None = None
    details: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "fix": self.fix,
            "details": list(self.details),
        }


def worst(statuses: Sequence[Status]) -> Status:
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


# --- config -------------------------------------------------------------------------------------


def check_config(path: Path) -> tuple[Check, LoadedConfig | None]:
    """The config loads (errors fail; warnings such as missing files warn)."""
    from llmctl.config.load import load_config  # noqa: PLC0415 - pydantic

    try:
        loaded = load_config(path)
    except ConfigError as err:
        missing = not path.exists()
        return (
            Check(
                "config",
                "fail",
                err.message,
                fix="llmctl init writes a starter config"
                if missing
                else "llmctl validate names each problem",
                details=tuple(err.details),
            ),
            None,
        )
    config = loaded.config
    what = f"{path}: {len(config.backends)} backends, {len(config.models)} models"
    if loaded.warnings:
        return (
            Check(
                "config",
                "warn",
                f"{what}, {len(loaded.warnings)} warning(s)",
                fix="llmctl validate --strict",
                details=tuple(w.describe() for w in loaded.warnings),
            ),
            loaded,
        )
    return Check("config", "ok", what), loaded


# --- systemd ------------------------------------------------------------------------------------


def check_user_manager(reachable: bool, runtime_dir: str | None) -> Check:
    if reachable:
        return Check("user-manager", "ok", "systemctl --user answers")
    why = "no systemd user manager answers systemctl --user"
    if not runtime_dir:
        why += " (XDG_RUNTIME_DIR is not set)"
    return Check("user-manager", "fail", why, fix=systemd.NO_MANAGER_HINT)


def check_linger(linger: bool | None, user: str) -> Check:
    fix = f"loginctl enable-linger {user}"
    if linger is True:
        return Check("linger", "ok", "lingering is on: the stack runs without a login session")
    if linger is False:
        return Check(
            "linger",
            "warn",
            "lingering is off: the stack stops when your last session ends and starts only at login",
            fix=fix,
        )
    return Check("linger", "warn", "cannot tell whether lingering is on (logind does not answer)", fix=fix)


def installed_unit_files(unit_dir: Path) -> list[Path]:
    """llmctl's installed unit files (those carrying its header)."""
    from llmctl.install import GENERATED_MARK  # noqa: PLC0415

    found = []
    if unit_dir.is_dir():
        for path in sorted(unit_dir.glob("llmctl*")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if path.is_file() and path.read_text(encoding="utf-8").startswith(GENERATED_MARK):
                    found.append(path)
    return found


def check_unit_files(files: Sequence[Path], verify: Callable[[Sequence[Path]], str]) -> Check:
    """`systemd-analyze --user verify` prints nothing for good units; any output is a failure."""
    if not files:
        return Check("unit-files", "ok", "no llmctl units installed yet (nothing to verify)")
    try:
        output = verify(files)
    except LlmctlError as err:
        return Check("unit-files", "warn", f"cannot verify the units: {err.message}", fix=err.hint)
    if output:
        lines = tuple(line for line in output.splitlines() if line.strip())
        return Check(
            "unit-files",
            "fail",
            f"systemd-analyze verify complains about the installed units ({len(lines)} line(s))",
            fix="llmctl up rewrites llmctl's units from the config (edit the config, not the units)",
            details=lines,
        )
    return Check("unit-files", "ok", f"systemd-analyze verify: {len(files)} unit file(s) clean")


def check_units_in_step(changes: Sequence[FileChange], need_reload: Sequence[str]) -> Check:
    """Installed files against what the config renders, and units systemd has not re-read."""
    from llmctl.install import ChangeKind  # noqa: PLC0415

    differ = [c for c in changes if c.kind is not ChangeKind.UNCHANGED]
    if differ and all(c.kind is ChangeKind.ADDED for c in changes):
        return Check("units", "warn", "the stack is not installed yet", fix="llmctl up")
    details = [f"{c.kind.value}: {c.path}" for c in differ]
    details += [f"{unit}: changed on disk, systemd still runs the old version" for unit in need_reload]
    if details:
        return Check(
            "units",
            "warn",
            f"{len(differ)} installed file(s) differ from the config"
            + (f", {len(need_reload)} unit(s) need daemon-reload" if need_reload else ""),
            fix="llmctl diff shows how; llmctl up applies the config (and overwrites hand edits)",
            details=tuple(details),
        )
    return Check("units", "ok", "installed units and gateway file match the config")


# --- executables --------------------------------------------------------------------------------


def check_executables(
    units: Sequence[StackUnit],
    resolve: Callable[[str], Path | None],
    version: Callable[[str, Path], str | None],
) -> Check:
    if not units:
        return Check("executables", "ok", "no backends or gateway configured")
    details = []
    missing = []
    for unit in units:
        path = resolve(unit.command)
        if path is None:
            missing.append(unit.name)
            details.append(f"{unit.name} ({unit.kind}): '{unit.command}' not found")
            continue
        found = version(unit.kind, path)
        details.append(
            f"{unit.name} ({unit.kind}): {path}" + (f", {found}" if found else ", version unknown")
        )
    if missing:
        return Check(
            "executables",
            "fail",
            f"not found: {', '.join(missing)}",
            fix="install them, or give their absolute path as `command:` (systemd does not use your PATH)",
            details=tuple(details),
        )
    return Check("executables", "ok", f"{len(units)} found", details=tuple(details))


_PYTHON_DISTRIBUTION = {"llama-cpp-python": "llama_cpp_python", "vllm": "vllm", "gateway": "litellm"}


def executable_version(kind: str, path: Path, timeout: float = VERSION_TIMEOUT) -> str | None:
    """A short version string: a python package's version from its venv's metadata (importing
    LiteLLM or vLLM just to ask takes seconds), else the first line of `--version`."""
    distribution = _PYTHON_DISTRIBUTION.get(kind)
    if distribution:
        python = path if kind == "llama-cpp-python" else _entry_point_python(path)
        if python is not None:
            code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
            out = _run_quiet([str(python), "-c", code], timeout)
            if out:
                return f"{distribution.replace('_', '-')} {out.splitlines()[0].strip()}"
        if kind == "llama-cpp-python":
            return None
    out = _run_quiet([str(path), "--version"], timeout)
    if not out:
        return None
    # llama-server prints its build among device lines: "version: 1 (0c1e570)".
    for line in out.splitlines():
        if line.lower().startswith("version"):
            return line.strip()
    return out.splitlines()[0].strip()[:120]


def _entry_point_python(entry_point: Path) -> Path | None:
    from llmctl.gateway_runtime.interpreter import _from_shebang  # noqa: PLC0415

    named, _ = _from_shebang(entry_point)
    for candidate in (named, entry_point.parent / "python"):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _run_quiet(argv: list[str], timeout: float) -> str:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (result.stdout.strip() or result.stderr.strip()) if result.returncode == 0 else ""


# --- ports --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortHolder:
    pid: int
    name: str
    unit: str | None  # the llmctl unit whose cgroup holds the process, if any


def check_ports(
    units: Sequence[StackUnit],
    running: Callable[[str], bool] | None,
    in_use: Callable[[str, int], bool],
    holders: Callable[[int], list[PortHolder]],
) -> Check:
    """Each port is free, or held by its own unit (for the gateway: by its socket unit).

    `running(unit)` says whether systemd runs a unit; None when the manager cannot be asked.
    """
    if not units:
        return Check("ports", "ok", "no ports configured")
    details = []
    bad = []
    unsure = []
    for unit in units:
        where = f"{unit.name}: {unit.host}:{unit.port}"
        if not in_use(unit.host, unit.port):
            details.append(f"{where} free")
            continue
        found = holders(unit.port)
        own = {unit.unit, *unit.companions}
        if any(h.unit in own for h in found):
            details.append(f"{where} held by {unit.unit}")
            continue
        strangers = [h for h in found if h.unit is None or h.unit not in own]
        ours_running = running is not None and any(running(u) for u in own)
        if ours_running and not [h for h in strangers if h.unit is not None]:
            # The socket's listener is the user manager itself; an unreadable owner is
            # another user's process only if systemd does not run our unit.
            details.append(f"{where} held by {unit.unit}")
            continue
        who = ", ".join(f"{h.name} (pid {h.pid}{', ' + h.unit if h.unit else ''})" for h in strangers)
        who = who or "a process this user cannot see"
        if running is None:
            unsure.append(unit.name)
            details.append(f"{where} in use by {who}; cannot ask systemd whether it is {unit.unit}")
        else:
            bad.append(unit.name)
            details.append(f"{where} in use by {who}, not by {unit.unit}")
    if bad:
        return Check(
            "ports",
            "fail",
            f"taken by another process: {', '.join(bad)}",
            fix="stop the other process (ss -ltnp shows it), or change `port:` in the config",
            details=tuple(details),
        )
    if unsure:
        return Check(
            "ports",
            "warn",
            f"in use, owner unknown: {', '.join(unsure)}",
            fix="ss -ltnp",
            details=tuple(details),
        )
    return Check("ports", "ok", "every port is free or held by its own unit", details=tuple(details))


def port_holders(port: int, proc_root: Path = Path("/proc")) -> list[PortHolder]:
    """Processes listening on `port` that this user can see, with their llmctl unit."""
    import psutil  # noqa: PLC0415

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return []
    found: dict[int, PortHolder] = {}
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port or not conn.pid:
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            name = "?"
        found[conn.pid] = PortHolder(conn.pid, name, procs.unit_of_pid(conn.pid, proc_root))
    return list(found.values())


# --- GPUs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuFacts:
    available: bool  # NVML initialised
    why: str  # why not, when not
    driver: str | None = None
    gpus: tuple[tuple[int, str, str, int], ...] = ()  # (index, uuid, name, total bytes)


def gpu_facts() -> GpuFacts:
    """What NVML sees. Uses llmctl.gpu.read_inventory where it exists, else NVML directly."""
    from llmctl import gpu  # noqa: PLC0415

    read_inventory = getattr(gpu, "read_inventory", None)
    if read_inventory is not None:
        inventory = read_inventory()
        if inventory.source != "nvml":
            note = inventory.note or "NVML is not usable"
            # read_inventory says "no NVIDIA GPU can be used (WHY)": keep the WHY.
            match = re.fullmatch(r"no NVIDIA GPU can be used \((.*)\)", note)
            return GpuFacts(False, match.group(1) if match else note)
        return GpuFacts(
            True,
            "",
            inventory.driver_version,
            tuple((g.index, g.uuid, g.name, g.total_bytes) for g in inventory.gpus),
        )
    with gpu.nvml() as lib:
        if lib is None:
            return GpuFacts(False, "NVML cannot initialise (no driver, or nvidia-ml-py missing)")
        gpus = []
        try:
            driver = _text(lib.nvmlSystemGetDriverVersion())
            for index in range(lib.nvmlDeviceGetCount()):
                handle = lib.nvmlDeviceGetHandleByIndex(index)
                memory = lib.nvmlDeviceGetMemoryInfo(handle)
                name = _text(lib.nvmlDeviceGetName(handle))
                gpus.append((index, _text(lib.nvmlDeviceGetUUID(handle)), name, int(memory.total)))
        except lib.NVMLError as exc:
            return GpuFacts(False, f"NVML: {exc}")
        return GpuFacts(True, "", driver, tuple(gpus))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_gpus(config: Config | None, facts: GpuFacts) -> Check:
    """The driver answers and every GPU the config names is visible."""
    wanted: dict[str, list[int | str] | None] = {}
    if config is not None:
        wanted = {name: (list(b.gpus) if b.gpus is not None else None) for name, b in config.backends.items()}
    pinned = {name: refs for name, refs in wanted.items() if refs}
    any_gpu = {name for name, refs in wanted.items() if refs is None}
    if not facts.available:
        if pinned:
            return Check(
                "gpus",
                "fail",
                f"no GPU is usable ({facts.why}), but {', '.join(sorted(pinned))} name GPUs in `gpus:`",
                fix="install or load the NVIDIA driver (nvidia-smi must work); llmctl runbook gpu-missing",
            )
        if any_gpu:
            return Check(
                "gpus",
                "warn",
                f"no GPU is usable ({facts.why}); {', '.join(sorted(any_gpu))} will run on the CPU",
                fix="set `gpus: []` for CPU-only backends, or install the NVIDIA driver",
            )
        return Check("gpus", "ok", f"no GPU needed (every backend has gpus: []); {facts.why}")
    details = tuple(f"GPU {i}: {name}, {total / GIB:.1f} GiB, {uuid}" for i, uuid, name, total in facts.gpus)
    driver = f"driver {facts.driver}" if facts.driver else "driver version unknown"
    if not facts.gpus:
        status: Status = "fail" if pinned else "warn" if any_gpu else "ok"
        return Check(
            "gpus",
            status,
            f"NVML answers ({driver}) but sees no GPU",
            fix="nvidia-smi -L; llmctl runbook gpu-missing",
        )
    indices = {i for i, _, _, _ in facts.gpus}
    uuids = {uuid for _, uuid, _, _ in facts.gpus}
    unknown = [
        f"{name}: GPU {ref}"
        for name, refs in sorted(pinned.items())
        for ref in refs or []
        if (isinstance(ref, int) and ref not in indices) or (isinstance(ref, str) and ref not in uuids)
    ]
    if unknown:
        return Check(
            "gpus",
            "fail",
            f"the config names GPUs NVML does not see: {'; '.join(unknown)}",
            fix="use the indices or UUIDs `nvidia-smi -L` prints in `gpus:`",
            details=details,
        )
    return Check("gpus", "ok", f"{len(facts.gpus)} GPU(s), {driver}", details=details)


# --- model files --------------------------------------------------------------------------------


def _size(path: Path, limit: int = 10_000) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for count, item in enumerate(path.rglob("*")):
        if count >= limit:
            break
        with contextlib.suppress(OSError):
            if item.is_file():
                total += item.stat().st_size
    return total


def human_size(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def check_models(config: Config | None, serving: dict[str, str]) -> Check:
    """Local model files exist, are readable, and (GGUF) start with the GGUF magic."""
    from llmctl.config.checks import classify_source  # noqa: PLC0415

    if config is None:
        return Check("models", "ok", "no config")
    loaded = set(serving.values()) | {m for b in config.backends.values() if (m := getattr(b, "model", None))}
    details = []
    failed: list[str] = []
    warned: list[str] = []
    for mid, model in sorted(config.models.items()):
        if not model.source or classify_source(model.source) not in ("gguf", "directory"):
            continue
        path = Path(model.source).expanduser()
        problem = None
        if not path.exists():
            problem = "does not exist"
        elif not os.access(path, os.R_OK):
            problem = "is not readable by you"
        elif path.is_file() and path.suffix.lower() == ".gguf":
            try:
                with path.open("rb") as handle:
                    if handle.read(4) != b"GGUF":
                        problem = "is not a GGUF file (no GGUF magic at its start)"
            except OSError as exc:
                problem = f"cannot be read ({exc.strerror})"
        if problem is None:
            details.append(f"{mid}: {path} ({human_size(_size(path))})")
            continue
        is_loaded = mid in loaded
        details.append(f"{mid}: {path} {problem}" + (" (a backend serves it)" if is_loaded else ""))
        (failed if is_loaded else warned).append(mid)
    if failed:
        return Check(
            "models",
            "fail",
            f"model files a backend serves are missing or unusable: {', '.join(failed)}",
            fix="fix `source:` in the config, or download the file again",
            details=tuple(details),
        )
    if warned:
        return Check(
            "models",
            "warn",
            f"model files not served now are missing or unusable: {', '.join(warned)}",
            fix="fix `source:` before switching to them",
            details=tuple(details),
        )
    return Check("models", "ok", f"{len(details)} local model file(s) present", details=tuple(details))


# --- disk, gateway key ----------------------------------------------------------------------------


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(state_dir: Path, usage: Callable[[Path], tuple[int, int, int]]) -> Check:
    where = _existing(state_dir)
    try:
        _total, _used, free = usage(where)
    except OSError as exc:
        return Check("disk", "warn", f"cannot tell the free space at {where}: {exc.strerror}")
    reason = f"{human_size(free)} free for {state_dir}"
    fix = "free some space: snapshots and state live there (llmctl snapshot list; llmctl snapshot delete ID)"
    if free < DISK_FAIL_BYTES:
        return Check("disk", "fail", reason, fix=fix)
    if free < DISK_WARN_BYTES:
        return Check("disk", "warn", reason, fix=fix)
    return Check("disk", "ok", reason)


def check_gateway_key(path: Path, *, enabled: bool, installed: bool) -> Check:
    if not enabled and not path.exists():
        return Check("gateway-key", "ok", "the gateway is disabled")
    if not path.exists():
        if installed:
            return Check(
                "gateway-key",
                "fail",
                f"{path} is missing: the installed gateway unit cannot start without it",
                fix="llmctl up writes a new key (clients then need it: llmctl gateway key)",
            )
        return Check("gateway-key", "warn", f"{path} does not exist yet", fix="llmctl up creates it")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(
            "gateway-key",
            "fail",
            f"{path} is readable by others (mode {mode:04o}); it holds the gateway's master key",
            fix=f"chmod 600 {path}",
        )
    from llmctl.secrets import read_gateway_key  # noqa: PLC0415

    try:
        read_gateway_key(path)
    except LlmctlError as err:
        return Check("gateway-key", "fail", err.message, fix=err.hint)
    return Check("gateway-key", "ok", f"{path} (mode {mode:04o})")


# --- running them all ------------------------------------------------------------------------------


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
    from llmctl.config.checks import resolve_executable  # noqa: PLC0415

    return resolve_executable(command)


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
    version: Callable[[str, Path], str | None] = executable_version
    port_in_use: Callable[[str, int], bool] = procs.port_in_use
    port_holders: Callable[[int], list[PortHolder]] = port_holders
    gpus: Callable[[], GpuFacts] = gpu_facts
    disk_usage: Callable[[Path], tuple[int, int, int]] = _disk_usage
    user: Callable[[], str] = getpass.getuser


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
        from llmctl.state import effective_serving, load_serving  # noqa: PLC0415

        with contextlib.suppress(LlmctlError):
            serving = effective_serving(loaded.config, load_serving(paths.state_dir))
        checks.append(_units_in_step(loaded, paths, serving, probes if reachable else None, unit_files))
        from llmctl.stack import stack_units  # noqa: PLC0415

        units = stack_units(loaded.config, serving)
        checks.append(check_executables(units, probes.resolve, probes.version))
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
