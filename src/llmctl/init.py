"""`llmctl init`: look at what this machine has and write a starter config for it.

Detection is bounded and quiet: executables on PATH and in the usual virtualenv places, GGUF
files in the usual model directories (a limited walk, files checked for the GGUF magic), the
models of an Ollama that answers on 127.0.0.1:11434 (a one-second timeout), GPUs through NVML.
Every source of facts is a parameter, so tests can describe any machine. Choosing is a pure
function of what was found; writing refuses to replace a config unless forced, and then
snapshots the old one first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.errors import ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.paths import Paths

# What each kind's executable is called; llama-cpp-python is a python that has llama_cpp.
EXECUTABLE_NAMES = {
    "llama-server": ("llama-server",),
    "llama-cpp-python": ("python3", "python"),
    "ollama": ("ollama",),
    "vllm": ("vllm",),
    "litellm": ("litellm",),
}
KINDS = tuple(EXECUTABLE_NAMES)
DEFAULT_PORTS = {
    "ollama": 11434,
    "llama-cpp-python": 8000,
    "llama-server": 8080,
    "vllm": 8001,
    "gateway": 4000,
}
BACKEND_NAMES = {"llama-server": "llama-server", "llama-cpp-python": "llama-cpp", "ollama": "ollama"}
OLLAMA_URL = "http://127.0.0.1:11434"
OLLAMA_TIMEOUT = 1.0
GGUF_MAGIC = b"GGUF"
SCAN_MAX_ENTRIES = 20_000  # directory entries looked at, over all model directories
SCAN_MAX_DEPTH = 4
SCAN_MAX_FILES = 200
DEFAULT_CONTEXT = 4096
GPU_FIT = 0.8  # a model file larger than this share of the biggest GPU is not chosen for it
DEMO_PORT_BASE = 18080
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


# --- what was found --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundExecutable:
    kind: str
    path: Path
    where: str  # "PATH", "~/venvs/llama/bin", ...


@dataclass(frozen=True)
class GgufFile:
    path: Path
    size: int


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int


@dataclass(frozen=True)
class Detection:
    executables: dict[str, list[FoundExecutable]]
    ggufs: list[GgufFile]
    model_dirs: list[Path]  # searched for GGUF files (those that exist)
    scan_truncated: bool
    ollama_models: list[str] | None  # None: no Ollama answered
    gpus: list[GpuInfo]
    gpu_note: str  # why there are none, or the driver version

    def first(self, kind: str) -> FoundExecutable | None:
        found = self.executables.get(kind) or []
        return found[0] if found else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "executables": {
                kind: [{"path": str(f.path), "where": f.where} for f in found]
                for kind, found in self.executables.items()
            },
            "gguf_files": [{"path": str(g.path), "size_bytes": g.size} for g in self.ggufs],
            "model_dirs": [str(d) for d in self.model_dirs],
            "scan_truncated": self.scan_truncated,
            "ollama_models": self.ollama_models,
            "gpus": [{"index": g.index, "name": g.name, "total_bytes": g.total_bytes} for g in self.gpus],
            "gpu_note": self.gpu_note,
        }


def _pretty(path: Path, home: Path) -> str:
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


def bin_dirs(home: Path, env: Mapping[str, str]) -> list[tuple[Path, str]]:
    """Where executables are looked for, in order: PATH, then the usual user places."""
    found: list[tuple[Path, str]] = []
    for entry in env.get("PATH", "").split(os.pathsep):
        if entry and entry.startswith("/"):
            found.append((Path(entry), "PATH"))
    extra = [home / ".local" / "bin", home / "llama.cpp" / "build" / "bin"]
    for pattern in ("venvs/*/bin", ".venvs/*/bin", ".local/pipx/venvs/*/bin"):
        extra.extend(sorted(home.glob(pattern)))
    found.extend((d, _pretty(d, home)) for d in extra)
    seen: set[Path] = set()
    unique = []
    for directory, label in found:
        key = Path(os.path.normpath(directory))
        if key not in seen:
            seen.add(key)
            unique.append((directory, label))
    return unique


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def venv_has_module(python: Path, module: str) -> bool:
    """Whether the virtualenv of `python` (bin/python) has `module` installed (no python run)."""
    root = python.parent.parent
    if not (root / "pyvenv.cfg").is_file():
        return False
    return any(root.glob(f"lib/python3*/site-packages/{module}/__init__.py"))


def python_has_module(python: Path, module: str, timeout: float = 5.0) -> bool:
    """A venv's python: its site-packages; any other: ask it (find_spec imports nothing)."""
    if (python.parent.parent / "pyvenv.cfg").is_file():
        return venv_has_module(python, module)
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    try:
        result = subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            check=False,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def find_executables(
    dirs: Sequence[tuple[Path, str]],
    has_module: Callable[[Path, str], bool] = python_has_module,
) -> dict[str, list[FoundExecutable]]:
    """Each kind's executables, in search order, without duplicates (symlinks resolved)."""
    found: dict[str, list[FoundExecutable]] = {kind: [] for kind in KINDS}
    seen: dict[str, set[Path]] = {kind: set() for kind in KINDS}
    for directory, label in dirs:
        for kind, names in EXECUTABLE_NAMES.items():
            for name in names:
                path = directory / name
                if not _executable(path):
                    continue
                if kind == "llama-cpp-python" and not has_module(path, "llama_cpp"):
                    continue
                real = path.resolve()
                if real in seen[kind]:
                    continue
                seen[kind].add(real)
                found[kind].append(FoundExecutable(kind, path, label))
                break  # python3 and python in one venv are the same
    return found


def model_dirs(home: Path, env: Mapping[str, str]) -> list[Path]:
    dirs = [home / "models", home / ".cache" / "llama.cpp", home / ".local" / "share" / "llama.cpp"]
    if env.get("LLAMA_CACHE", "").startswith("/"):
        dirs.append(Path(env["LLAMA_CACHE"]))
    unique: list[Path] = []
    for directory in dirs:
        if directory.is_dir() and directory not in unique:
            unique.append(directory)
    return unique


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def scan_ggufs(
    dirs: Sequence[Path],
    *,
    max_entries: int = SCAN_MAX_ENTRIES,
    max_depth: int = SCAN_MAX_DEPTH,
    max_files: int = SCAN_MAX_FILES,
) -> tuple[list[GgufFile], bool]:
    """GGUF files under dirs (hidden directories skipped, symlinked directories not followed,
    vision projectors and later shards of split models left out). Returns (files, truncated)."""
    found: dict[Path, GgufFile] = {}
    budget = max_entries
    truncated = False

    def walk(directory: Path, depth: int) -> Iterator[Path]:
        nonlocal budget, truncated
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            budget -= 1
            if budget < 0:
                truncated = True
                return
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if depth < max_depth:
                    yield from walk(Path(entry.path), depth + 1)
                elif not truncated:
                    truncated = True
            elif entry.name.lower().endswith(".gguf"):
                yield Path(entry.path)

    for root in dirs:
        for path in walk(root, 1):
            name = path.name.lower()
            shard = _SHARD.search(name)
            if "mmproj" in name or (shard and int(shard.group(1)) != 1):
                continue
            if not _is_gguf(path):
                continue
            real = path.resolve()
            if real in found:
                continue
            try:
                size = real.stat().st_size
            except OSError:
                continue
            found[real] = GgufFile(path, size)
            if len(found) >= max_files:
                return list(found.values()), True
    return list(found.values()), truncated


def ollama_models(url: str = OLLAMA_URL, timeout: float = OLLAMA_TIMEOUT) -> list[str] | None:
    """Names of the models Ollama has pulled, from /api/tags; None when nothing answers."""
    import httpx  # noqa: PLC0415 - slow to import

    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.get(f"{url}/api/tags")
            response.raise_for_status()
            data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
    names = [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]
    return sorted(n for n in names if n and n != "None")


def gpu_inventory() -> tuple[list[GpuInfo], str]:
    from llmctl.doctor import gpu_facts  # noqa: PLC0415

    facts = gpu_facts()
    if not facts.available:
        return [], facts.why
    gpus = [GpuInfo(index, name, total) for index, _uuid, name, total in facts.gpus]
    return gpus, f"driver {facts.driver}" if facts.driver else "NVML"


@dataclass(frozen=True)
class Sources:
    """Where detection looks; tests describe another machine with these."""

    home: Path
    env: Mapping[str, str]
    has_module: Callable[[Path, str], bool] = python_has_module
    ollama: Callable[[], list[str] | None] = ollama_models
    gpus: Callable[[], tuple[list[GpuInfo], str]] = gpu_inventory


def detect(sources: Sources, *, models: bool = True) -> Detection:
    """Everything init looks at. models=False skips GGUF files, Ollama and GPUs (for --demo)."""
    executables = find_executables(bin_dirs(sources.home, sources.env), sources.has_module)
    if not models:
        return Detection(executables, [], [], False, None, [], "")
    dirs = model_dirs(sources.home, sources.env)
    ggufs, truncated = scan_ggufs(dirs)
    ollama = sources.ollama() if executables["ollama"] else None
    gpus, note = sources.gpus()
    return Detection(executables, ggufs, dirs, truncated, ollama, gpus, note)


# --- what to write -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    what: str
    why: str


@dataclass
class Plan:
    config: dict[str, Any]
    choices: list[Choice] = field(default_factory=list)


def model_id_for(path: Path, taken: set[str]) -> str:
    stem = _SHARD.sub("", path.name)
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    base = re.sub(r"[^A-Za-z0-9._:/@+-]+", "-", stem).strip("-._") or "model"
    if not base[0].isalnum():
        base = "m" + base
    base = base[:120]
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def pick_gguf(ggufs: Sequence[GgufFile], gpus: Sequence[GpuInfo]) -> tuple[GgufFile, str]:
    """With a GPU: the largest file that fits in GPU_FIT of the biggest one; else the smallest."""
    by_size = sorted(ggufs, key=lambda g: (g.size, str(g.path)))
    if gpus:
        room = max(g.total_bytes for g in gpus) * GPU_FIT
        fitting = [g for g in by_size if g.size <= room]
        if fitting:
            return fitting[-1], f"the largest GGUF that fits in {GPU_FIT:.0%} of the biggest GPU's memory"
        return by_size[
            0
        ], "the smallest GGUF (none fits in the GPU's memory: lower gpu_layers or pick another)"
    return by_size[0], "the smallest GGUF (no GPU: it runs on the CPU)"


def _free_port(wanted: int, used: set[int], in_use: Callable[[int], bool]) -> int:
    port = wanted
    while port in used or in_use(port):
        port += 1
    used.add(port)
    return port


class _Planner:
    def __init__(self, detection: Detection, port_in_use: Callable[[int], bool], home: Path) -> None:
        self.detection = detection
        self.port_in_use = port_in_use
        self.home = home
        self.result = Plan({"version": 1, "backends": {}, "models": {}})
        self.backends: dict[str, Any] = self.result.config["backends"]
        self.models: dict[str, Any] = self.result.config["models"]
        self.used_ports: set[int] = set()
        self.taken: set[str] = set()
        self.gpu = bool(detection.gpus)

    def choose(self, what: str, why: str) -> None:
        self.result.choices.append(Choice(what, why))

    def port_for(self, kind: str) -> int:
        wanted = DEFAULT_PORTS[kind]
        port = _free_port(wanted, self.used_ports, self.port_in_use)
        if port != wanted:
            self.choose(
                f"port {port} for {kind}", f"{wanted} is in use by another process (ss -ltnp shows it)"
            )
        return port

    def backend(self, kind: str, found: FoundExecutable) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": kind, "command": str(found.path), "port": self.port_for(kind)}
        if not self.gpu:
            entry["gpus"] = []
        return entry

    def llama(self) -> None:
        from llmctl.doctor import human_size  # noqa: PLC0415

        detection = self.detection
        llama = detection.first("llama-server") or detection.first("llama-cpp-python")
        if llama is None:
            return
        if not detection.ggufs:
            self.choose(f"{llama.kind} not configured", "no GGUF file in " + _dirs_text(detection, self.home))
            return
        name = BACKEND_NAMES[llama.kind]
        chosen, why = pick_gguf(detection.ggufs, detection.gpus)
        entry = self.backend(llama.kind, llama)
        entry["model"] = None  # filled in below; here for its place in the file
        for gguf in sorted(detection.ggufs, key=lambda g: str(g.path)):
            mid = model_id_for(gguf.path, self.taken)
            model: dict[str, Any] = {"backend": name, "source": str(gguf.path), "context": DEFAULT_CONTEXT}
            if self.gpu:
                model["gpu_layers"] = 99
            self.models[mid] = model
            if gguf is chosen:
                entry["model"] = mid
        self.backends[name] = entry
        self.choose(f"backend {name} ({llama.kind}, {llama.path})", f"found in {llama.where}")
        others = len(detection.ggufs) - 1
        self.choose(
            f"{name} serves {entry['model']} ({human_size(chosen.size)})"
            + (f"; {others} other GGUF file(s) added as models it can switch to" if others else ""),
            why,
        )
        if llama.kind == "llama-server" and detection.first("llama-cpp-python"):
            self.choose(
                "llama-cpp-python not configured", "llama-server serves the GGUF files (add it by hand)"
            )

    def ollama(self) -> None:
        ollama = self.detection.first("ollama")
        if ollama is None:
            return
        self.backends["ollama"] = self.backend("ollama", ollama)
        self.choose(f"backend ollama ({ollama.path})", f"found in {ollama.where}")
        tags = self.detection.ollama_models
        if not tags:
            self.choose(
                "no Ollama models", "no Ollama answered on 127.0.0.1:11434 to list them (ollama pull MODEL)"
            )
            return
        for tag in tags:
            valid = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}", tag) and tag not in self.taken
            mid = tag if valid else model_id_for(Path(tag + ".gguf"), self.taken)
            self.taken.add(mid)
            self.models[mid] = {"backend": "ollama", "source": tag}
        self.choose(
            f"{len(tags)} Ollama model(s) routed: {', '.join(tags)}",
            "pulled in the Ollama on 127.0.0.1:11434 (llmctl's Ollama runs as you, with ~/.ollama/models:"
            " models pulled by a system-wide Ollama live elsewhere)",
        )

    def vllm(self) -> None:
        vllm = self.detection.first("vllm")
        if vllm is not None:
            self.choose(
                f"vllm ({vllm.path}) not configured",
                "it needs a Hugging Face model id: add a vllm backend by hand (config/llmctl.example.yaml)",
            )

    def gateway(self) -> None:
        litellm = self.detection.first("litellm")
        if litellm is not None and self.backends:
            self.result.config["gateway"] = {"command": str(litellm.path), "port": self.port_for("gateway")}
            self.choose(f"gateway (LiteLLM, {litellm.path})", f"found in {litellm.where}")
            return
        self.result.config["gateway"] = {"enabled": False}
        self.choose(
            "gateway disabled", "no litellm executable found" if litellm is None else "no backend to route to"
        )


def plan(detection: Detection, port_in_use: Callable[[int], bool], home: Path) -> Plan:
    """The starter config for what was found, and why each thing was chosen."""
    planner = _Planner(detection, port_in_use, home)
    planner.llama()
    planner.ollama()
    planner.vllm()
    planner.gateway()
    if not planner.backends:
        planner.choose(
            "no backend configured",
            "found no llama-server or llama-cpp-python with GGUF files, and no Ollama: "
            "install one and run llmctl init --force, or edit the config",
        )
    return planner.result


def _dirs_text(detection: Detection, home: Path) -> str:
    return ", ".join(_pretty(d, home) for d in detection.model_dirs) or "the model directories (none exist)"


def _scalar(value: str) -> str:
    """A YAML scalar for a path or name: plain when that reads back the same, else quoted."""
    import yaml  # noqa: PLC0415

    plain = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
    return plain if plain == value else json.dumps(value)


def render_plan(result: Plan, detection: Detection, home: Path) -> str:
    import yaml  # noqa: PLC0415

    lines = ["# Written by `llmctl init` from what it found on this machine; edit freely.", "#"]
    lines += [f"# {line}" for line in found_lines(detection, home)]
    lines.append("#")
    lines.append("# chose:")
    lines += [f"#   {c.what}: {c.why}" for c in result.choices]
    body = yaml.safe_dump(result.config, sort_keys=False, default_flow_style=False, width=1000)
    return "\n".join(lines) + "\n" + body


def found_lines(detection: Detection, home: Path) -> list[str]:
    from llmctl.doctor import human_size  # noqa: PLC0415

    lines = ["found:"]
    for kind in KINDS:
        found = detection.executables.get(kind) or []
        text = ", ".join(f"{f.path} ({f.where})" for f in found) if found else "not found"
        lines.append(f"  {kind}: {text}")
    if detection.ggufs:
        largest = max(g.size for g in detection.ggufs)
        more = " (scan stopped early)" if detection.scan_truncated else ""
        lines.append(
            f"  GGUF files: {len(detection.ggufs)} in {_dirs_text(detection, home)}, "
            f"largest {human_size(largest)}{more}"
        )
    else:
        lines.append(f"  GGUF files: none in {_dirs_text(detection, home)}")
    if detection.ollama_models is None:
        lines.append("  Ollama models: no Ollama answered on 127.0.0.1:11434")
    else:
        lines.append(f"  Ollama models: {', '.join(detection.ollama_models) or 'none pulled'}")
    if detection.gpus:
        gpus = "; ".join(f"{g.index}: {g.name}, {human_size(g.total_bytes)}" for g in detection.gpus)
        lines.append(f"  GPUs: {gpus} ({detection.gpu_note})")
    else:
        lines.append(f"  GPUs: none ({detection.gpu_note})")
    return lines


# --- the demo ------------------------------------------------------------------------------------------


def demo_config(
    *, llama_server: Path, llama_cpp_python: Path, litellm: Path, model: Path, port_base: int = DEMO_PORT_BASE
) -> str:
    """The demo stack: llama-server and llama-cpp-python on one (smoke) model, behind the gateway,
    with a fallback from the first to the second."""
    return f"""\
# The llmctl demo stack (written by `llmctl init --demo`). The model is a smoke-test model with
# random weights: its answers are noise; it proves the servers load a model and serve requests.
version: 1
backends:
  native:
    kind: llama-server
    command: {_scalar(str(llama_server))}
    port: {port_base}
    model: smoke-native
    gpus: []
  pyserver:
    kind: llama-cpp-python
    command: {_scalar(str(llama_cpp_python))}
    port: {port_base + 1}
    model: smoke-py
    gpus: []
models:
  smoke-native:
    backend: native
    source: {_scalar(str(model))}
    context: 512
  smoke-py:
    backend: pyserver
    source: {_scalar(str(model))}
    context: 512
gateway:
  command: {_scalar(str(litellm))}
  port: {port_base + 2}
  fallbacks:
    smoke-native: [smoke-py]
"""


# --- writing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteResult:
    path: Path
    action: str  # "written" | "replaced" | "unchanged"
    snapshot: str | None = None


def check_valid(text: str, source: str) -> None:
    """What init writes must load (warnings about missing files are fine)."""
    from llmctl.config.load import parse_config  # noqa: PLC0415

    parse_config(text, source)


def write_action(path: Path, text: str, *, force: bool) -> str:
    """ "write" (nothing there), "unchanged" (the same text is there), "replace" (with force);
    raises LlmctlError (exit 2) for an existing, different config without force."""
    if not (path.exists() or path.is_symlink()):
        return "write"
    try:
        current = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current == text:
        return "unchanged"
    if not force:
        raise LlmctlError(
            f"{path} already exists; not replacing it",
            hint="llmctl init --force replaces it (it snapshots the current one first: llmctl snapshot list)",
            exit_code=ExitCode.USAGE,
        )
    return "replace"


def write_config(path: Path, text: str, *, force: bool, paths: Paths) -> WriteResult:
    """Write the config atomically. An existing, different config is replaced only with force,
    after a snapshot of it (which never prunes older snapshots)."""
    from llmctl import snapshots  # noqa: PLC0415
    from llmctl.fsutil import atomic_write  # noqa: PLC0415

    check_valid(text, str(path))
    action = write_action(path, text, force=force)
    if action == "unchanged":
        return WriteResult(path, "unchanged")
    if action == "write":
        atomic_write(path, text)
        return WriteResult(path, "written")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    keep = max(snapshots.DEFAULT_KEEP, len(snapshots.list_snapshots(paths)) + 1)
    snapshot = snapshots.take(paths, path, reason="before init --force", command="init", keep=keep)
    atomic_write(path, text, mode=mode)
    return WriteResult(path, "replaced", snapshot.id)


def ensure_smoke_model(path: Path) -> bool:
    """Write the smoke model at path unless it exists; True when written."""
    if path.exists():
        return False
    try:
        from llmctl.smoke_model import write_smoke_model  # noqa: PLC0415

        path.parent.mkdir(parents=True, exist_ok=True)
        write_smoke_model(path)
    except ImportError as exc:
        raise LlmctlError(
            f"cannot write the smoke model: {exc}",
            hint="reinstall llmctl (gguf is a dependency), or give a GGUF file with --model PATH",
        ) from None
    except (OSError, ValueError) as exc:
        raise LlmctlError(f"cannot write the smoke model {path}: {exc}") from None
    return True
