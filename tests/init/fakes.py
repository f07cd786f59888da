"""Described machines for the init tests: executables, virtualenvs and GGUF files laid out
under a temporary home, with no Ollama and no GPU unless a test brings them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from llmctl.config.load import parse_config
from llmctl.init import GpuInfo, Sources
from tests.conftest import write_executable as executable

GIB = 1024**3


def venv(root: Path, *, modules: tuple[str, ...] = (), scripts: tuple[str, ...] = ()) -> Path:
    """A virtualenv's layout: pyvenv.cfg, bin/python3, site-packages with these packages."""
    (root / "pyvenv.cfg").parent.mkdir(parents=True, exist_ok=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = executable(root / "bin" / "python3", "#!/bin/sh\nexit 0\n")
    for module in modules:
        package = root / "lib" / "python3.11" / "site-packages" / module
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
    for script in scripts:
        executable(root / "bin" / script, f"#!{python}\n")
    return python


def gguf(path: Path, size: int = 64, magic: bytes = b"GGUF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(magic + b"\0" * (size - len(magic)))
    return path


def no_ollama() -> list[str] | None:
    return None


def no_gpus() -> tuple[list[GpuInfo], str]:
    return [], "NVML Shared Library Not Found"


def machine(home: Path, path_dirs: list[Path] | None = None, **env: str) -> Sources:
    environment = {"PATH": os.pathsep.join(str(p) for p in path_dirs or [])} | env
    return Sources(home=home, env=environment, ollama=no_ollama, gpus=no_gpus)


def loads(text: str) -> dict[str, Any]:
    parse_config(text)  # what init writes must pass validation
    data: dict[str, Any] = yaml.safe_load(text)
    return data
