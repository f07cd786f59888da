"""Which python runs the gateway's child: the LiteLLM venv's, found from its `litellm` entry point."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from llmctl.errors import ExitCode, LlmctlError

# pip (distlib) writes this when the interpreter's path is too long or has spaces:
#   #!/bin/sh
#   '''exec' "/path with space/bin/python" "$0" "$@"
_SH_LAUNCHER = re.compile(r"""^'''exec' (?P<command>.+) "\$0" "\$@"$""")


def _usable(path: Path) -> bool:
    return path.is_absolute() and path.is_file() and os.access(path, os.X_OK)


def _from_shebang(entry_point: Path) -> tuple[Path | None, str]:
    """(interpreter named by the entry point's first lines, that first line for messages)."""
    try:
        with entry_point.open("rb") as handle:
            head = handle.read(4096)
    except OSError as err:
        return None, f"unreadable: {err.strerror}"
    lines = head.decode("utf-8", "replace").splitlines()
    first = lines[0] if lines else ""
    if not first.startswith("#!"):
        return None, "no #! line"
    words = first[2:].split()
    if not words:
        return None, first
    if words[0] in ("/bin/sh", "/usr/bin/sh") and len(lines) > 1:
        match = _SH_LAUNCHER.match(lines[1])
        if match:
            try:
                command = shlex.split(match["command"])
            except ValueError:
                return None, first
            return (Path(command[0]) if command else None), first
        return None, first
    # `#!/usr/bin/env python3` names no venv: only an absolute python counts.
    return (Path(words[0]) if "python" in Path(words[0]).name else None), first


def litellm_python(entry_point: Path) -> Path:
    """The interpreter of LiteLLM's venv: the entry point's #! line, else bin/python beside it.

    The path is not resolved: a venv's python is a symlink, and only through the venv's own
    path does it see the venv's packages. A missing entry point is rendered as written (its
    bin/python), like every other missing command: `up` refuses it and names the file.
    """
    beside = entry_point.parent / "python"
    if not entry_point.exists():
        return beside
    named, first_line = _from_shebang(entry_point)
    for candidate in (named, beside):
        if candidate is not None and _usable(candidate):
            return candidate
    raise LlmctlError(
        f"gateway.command: cannot tell which python runs LiteLLM from {entry_point} "
        f"(its first line: {first_line!r}; no executable {beside})",
        hint="Point gateway.command at the `litellm` script inside LiteLLM's venv, "
        "e.g. ~/venvs/litellm/bin/litellm.",
        exit_code=ExitCode.USAGE,
    )


# LiteLLM's prometheus callback (gateway.litellm_metrics) imports it at start, and litellm[proxy]
# does not install it: without it the gateway's config load fails and the unit never starts.
METRICS_MODULE = "prometheus_client"
_FIND_SPEC = "import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)"


def can_import(python: Path, module: str) -> bool:
    """Whether `python` finds `module` (without importing it: ~20 ms, not LiteLLM's seconds)."""
    try:
        done = subprocess.run(
            [str(python), "-c", _FIND_SPEC, module], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
