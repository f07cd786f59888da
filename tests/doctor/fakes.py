"""A described machine for the doctor tests: files that exist, a config without warnings, and
probes of a healthy host that each test changes where it looks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from llmctl.config.load import load_config
from llmctl.doctor import GpuFacts, Probes
from llmctl.stack import stack_units
from tests.conftest import minimal_config, write_config
from tests.conftest import write_executable as executable

GIB = 1024**3


def gguf(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * (size - 4))
    return path


def good_config(tmp_path: Path, **overrides: Any) -> Path:
    """A config whose executables and model file exist (no warnings)."""
    config = minimal_config(**overrides)
    config["backends"]["llama"]["command"] = str(executable(tmp_path / "bin" / "llama-server"))
    config["models"]["tiny"]["source"] = str(gguf(tmp_path / "models" / "tiny.gguf"))
    # An entry point as pip writes it: the gateway unit runs its #! python.
    config["gateway"]["command"] = str(executable(tmp_path / "bin" / "litellm", f"#!{sys.executable}\n"))
    return write_config(tmp_path / "llmctl.yaml", config)


def units_of(path: Path) -> list[Any]:
    """The backend and the gateway (other units the stack may grow are not what these tests are about)."""
    return [u for u in stack_units(load_config(path).config) if u.kind in ("llama-server", "gateway")]


def fake_probes(**overrides: Any) -> Probes:
    """Probes of a healthy machine with nothing running; tests change what they look at."""
    values: dict[str, Any] = {
        "manager_reachable": lambda: True,
        "linger": lambda: True,
        "verify": lambda files: "",
        "unit_running": lambda units: dict.fromkeys(units, False),
        "need_reload": lambda units: [],
        "version": lambda kind, path: "version: 1 (test)",
        "port_in_use": lambda host, port: False,
        "can_import": lambda python, module: True,
        "port_holders": lambda port: [],
        "gpus": lambda: GpuFacts(False, "NVML Shared Library Not Found"),
        "disk_usage": lambda path: (100 * GIB, 50 * GIB, 50 * GIB),
        "user": lambda: "alice",
    }
    values.update(overrides)
    return Probes(**values)
