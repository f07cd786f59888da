"""Doctor check on the programs the stack runs: each backend's and the gateway's executable is
found, and says which version it is."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.doctor.report import Check

if TYPE_CHECKING:
    from llmctl.stack import StackUnit

VERSION_TIMEOUT = 15.0


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


def check_litellm_metrics(
    gateway: StackUnit, resolve: Callable[[str], Path | None], can_import: Callable[[Path, str], bool]
) -> Check:
    """gateway.litellm_metrics: LiteLLM's python must find prometheus_client (`litellm[proxy]`
    does not install it), or the gateway fails at its start and `up` refuses it."""
    from llmctl.gateway_runtime.interpreter import METRICS_MODULE, litellm_python  # noqa: PLC0415

    entry = resolve(gateway.command)
    if entry is None:
        return Check("litellm-metrics", "warn", "LiteLLM not found: not checked (see executables)")
    python = litellm_python(entry)
    if can_import(python, METRICS_MODULE):
        return Check(
            "litellm-metrics", "ok", f"LiteLLM's python finds {METRICS_MODULE}", details=(str(python),)
        )
    return Check(
        "litellm-metrics",
        "fail",
        f"gateway.litellm_metrics is on, but LiteLLM's python ({python}) cannot import {METRICS_MODULE}",
        fix=f"{python} -m pip install prometheus-client, or set gateway.litellm_metrics: false",
    )
