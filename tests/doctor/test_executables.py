"""llmctl doctor's executables check: found or not, and the version each reports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmctl import doctor
from llmctl.doctor import executables
from tests.conftest import write_executable as executable
from tests.doctor.fakes import good_config, units_of


def test_executables(tmp_path: Path) -> None:
    units = units_of(good_config(tmp_path))
    versions = {"llama-server": "version: 7 (abc)", "gateway": None}

    def resolve(command: str) -> Path | None:
        return Path(command) if Path(command).exists() else None

    check = doctor.check_executables(units, resolve, lambda kind, path: versions[kind])
    assert check.status == "ok"
    assert any(d.endswith("version: 7 (abc)") for d in check.details)
    assert any(d.endswith("version unknown") for d in check.details)

    check = doctor.check_executables(units, lambda command: None, lambda kind, path: None)
    assert check.status == "fail" and check.reason == "not found: llama, gateway"
    assert doctor.check_executables([], resolve, lambda kind, path: None).status == "ok"


def test_executable_version_from_version_output_and_from_package_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = executable(
        tmp_path / "llama-server", "#!/bin/sh\necho 'load_backend: x' >&2\necho 'version: 9 (c0ffee)' >&2\n"
    )
    assert doctor.executable_version("llama-server", server) == "version: 9 (c0ffee)"
    assert doctor.executable_version("ollama", executable(tmp_path / "ollama", "#!/bin/sh\nexit 3\n")) is None
    # A python entry point: the version comes from its venv's package metadata, not from running it.
    entry = executable(tmp_path / "venv" / "bin" / "litellm", f"#!{sys.executable}\nraise SystemExit(9)\n")
    monkeypatch.setitem(executables._PYTHON_DISTRIBUTION, "gateway", "click")
    found = doctor.executable_version("gateway", entry)
    assert found is not None and found.startswith("click 8.")
    assert doctor.executable_version("llama-cpp-python", Path(sys.executable)) is None  # no llama_cpp here


def test_litellm_metrics_needs_prometheus_client_in_litellms_python(tmp_path: Path) -> None:
    gateway = next(u for u in units_of(good_config(tmp_path)) if u.is_gateway)
    python = executable(tmp_path / "venv" / "bin" / "python", "#!/bin/sh\n")
    entry = executable(tmp_path / "venv" / "bin" / "litellm", f"#!{python}\n")
    asked: list[tuple[Path, str]] = []

    def can_import(found: bool) -> Callable[[Path, str], bool]:
        def answer(python: Path, module: str) -> bool:
            asked.append((python, module))
            return found

        return answer

    check = doctor.check_litellm_metrics(gateway, lambda command: entry, can_import(True))
    assert check.status == "ok" and asked == [(python, "prometheus_client")]
    check = doctor.check_litellm_metrics(gateway, lambda command: entry, can_import(False))
    assert check.status == "fail" and str(python) in check.reason
    assert check.fix is not None and f"{python} -m pip install prometheus-client" in check.fix
    missing = doctor.check_litellm_metrics(gateway, lambda command: None, can_import(True))
    assert missing.status == "warn"
