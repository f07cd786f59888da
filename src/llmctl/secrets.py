"""The gateway's master key: generated once, kept in a 0600 file, read by systemd.

The unit reads it through EnvironmentFile=, so it never appears in a unit file, an argv, the
gateway's config, a log line or `status`. `llmctl gateway key` prints it for the user.
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

from llmctl.errors import LlmctlError
from llmctl.fsutil import atomic_write

KEY_VARIABLE = "LITELLM_MASTER_KEY"


def ensure_gateway_key(path: Path) -> bool:
    """Create the key file if missing (returns True then); refuse a file others can read."""
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise LlmctlError(
                f"{path} is readable by others (mode {mode:o}); it holds the gateway's master key",
                hint=f"chmod 600 {path}",
            )
        read_gateway_key(path)
        return False
    key = "sk-" + secrets.token_urlsafe(32)
    atomic_write(path, f"# llmctl gateway master key (mode 0600)\n{KEY_VARIABLE}={key}\n", mode=0o600)
    return True


def read_gateway_key(path: Path) -> str:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LlmctlError(
            f"no gateway key yet ({path})", hint="`llmctl up` creates it when it first starts the gateway."
        ) from None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == KEY_VARIABLE and value.strip().startswith("sk-"):
            return value.strip()
    raise LlmctlError(
        f"{path} has no {KEY_VARIABLE}=sk-... line", hint="Delete it; `llmctl up` writes a new one."
    )
