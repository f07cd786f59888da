"""One lock serialises every llmctl command that changes state.

An flock on a file under the state dir: the kernel drops it when its holder dies, however it
dies, so a stale lock cannot outlive a killed llmctl. The file also says who holds it, for
the message a second command prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from llmctl.errors import LlmctlError


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another llmctl"
    return text or "another llmctl"


@contextlib.contextmanager
def state_lock(
    state_dir: Path,
    command: str,
    *,
    wait: bool = True,
    timeout: float = 600,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LlmctlError(
            f"cannot open the lock in {state_dir}: {exc.strerror}",
            hint="Check that the state directory exists and is writable by you.",
        ) from None
    path = state_dir / "lock"
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(path)
                if not wait:
                    raise LlmctlError(
                        f"{holder} holds the llmctl lock",
                        hint="Wait for it to finish, or run without --no-wait to queue behind it.",
                    ) from None
                if time.monotonic() > deadline:
                    raise LlmctlError(f"gave up after {timeout:.0f} s waiting for {holder}") from None
                if not told and on_wait is not None:
                    on_wait(f"waiting for {holder} to finish...")
                    told = True
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({command}: {' '.join(sys.argv[1:])[:200]})\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
