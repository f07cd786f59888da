"""What `llmctl init` finds on this machine: executables, GGUF files, Ollama's models, GPUs.

Detection is bounded and quiet: executables on PATH and in the usual virtualenv places, GGUF
files in the usual model directories (a limited walk, files checked for the GGUF magic), the
models of an Ollama that answers on 127.0.0.1:11434 (a one-second timeout), GPUs through NVML.
Every source of facts is a field of `Sources`, so tests can describe any machine.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What each kind's executable is called; llama-cpp-python is a python that has llama_cpp.
EXECUTABLE_NAMES = {
    "llama-server": ("llama-server",),
    "llama-cpp-python": ("python3", "python"),
    "ollama": ("ollama",),
    "vllm": ("vllm",),
    "litellm": ("litellm",),
}
KINDS = tuple(EXECUTABLE_NAMES)
OLLAMA_URL = "http://127.0.0.1:11434"
OLLAMA_TIMEOUT = 1.0
GGUF_MAGIC = b"GGUF"
SCAN_MAX_ENTRIES = 20_000  # directory entries looked at, over all model directories
SCAN_MAX_DEPTH = 4
SCAN_MAX_FILES = 200
# "-00001-of-00003.gguf": one file of a model split in several (the starter config names it too).
SHARD_SUFFIX = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


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


def pretty_path(path: Path, home: Path) -> str:
    """`path` as a person writes it: under home as ~/..., else in full."""
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


# --- executables ----------------------------------------------------------------------------------


def bin_dirs(home: Path, env: Mapping[str, str]) -> list[tuple[Path, str]]:
    """Where executables are looked for, in order: PATH, then the usual user places."""
    found: list[tuple[Path, str]] = []
    for entry in env.get("PATH", "").split(os.pathsep):
        if entry and entry.startswith("/"):
            found.append((Path(entry), "PATH"))
    extra = [home / ".local" / "bin", home / "llama.cpp" / "build" / "bin"]
    for pattern in ("venvs/*/bin", ".venvs/*/bin", ".local/pipx/venvs/*/bin"):
        extra.extend(sorted(home.glob(pattern)))
    found.extend((d, pretty_path(d, home)) for d in extra)
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


# --- GGUF files -----------------------------------------------------------------------------------


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
            shard = SHARD_SUFFIX.search(name)
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


# --- Ollama, GPUs ---------------------------------------------------------------------------------


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


# --- all of it ------------------------------------------------------------------------------------


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
