"""can_import: whether LiteLLM's python finds a module, without importing it."""

from __future__ import annotations

import sys
from pathlib import Path

from llmctl.gateway_runtime.interpreter import can_import


def test_a_module_the_python_has_and_one_it_lacks() -> None:
    python = Path(sys.executable)
    assert can_import(python, "json")
    assert not can_import(python, "llmctl_no_such_module")


def test_a_python_that_cannot_run_imports_nothing(tmp_path: Path) -> None:
    assert not can_import(tmp_path / "missing-python", "json")
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 7\n")
    broken.chmod(0o755)
    assert not can_import(broken, "json")
