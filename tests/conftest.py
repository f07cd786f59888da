"""Shared fixtures for the fast tests: every XDG path points into tmp_path."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl.paths import Paths


@pytest.fixture(autouse=True)
def isolated_xdg(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Keep unit tests away from the real ~/.config (integration tests bring their own)."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    home = tmp_path / "home"
    for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_STATE_HOME", ".local/state")):
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LLMCTL_CONFIG", raising=False)
    yield


@pytest.fixture
def paths() -> Paths:
    return Paths.from_env()


def minimal_config(**overrides: Any) -> dict[str, Any]:
    """A valid config with one llama-server backend and one model; tests change parts of it."""
    config: dict[str, Any] = {
        "version": 1,
        "backends": {
            "llama": {
                "kind": "llama-server",
                "command": "/opt/llama/llama-server",
                "port": 8080,
                "model": "tiny",
            }
        },
        "models": {"tiny": {"backend": "llama", "source": "/models/tiny.gguf", "context": 512}},
        "gateway": {"command": "/opt/litellm/bin/litellm", "port": 4000},
    }
    config.update(overrides)
    return config


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(dump(config))
    return path


class FakeClock:
    """A monotonic clock that moves only when something sleeps on it: waits run instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def write_executable(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path
