"""Installing the fake programs (fake_vllm, fake_ollama) as executables a unit can run."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def install_fake(directory: Path, program: str, module: str) -> Path:
    """An executable `directory/program` that runs `module` (as __main__) with this interpreter."""
    path = directory / program
    path.write_text(
        f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        f"runpy.run_module({module!r}, run_name='__main__')\n"
    )
    path.chmod(0o755)
    return path
