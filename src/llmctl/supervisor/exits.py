"""Waking the supervisor the moment a backend's main process exits.

A crash is restarted at once (`RestartBook.crashed`) only if the supervisor hears of it within
the time a restart takes: polling `systemctl show` every round would add up to a round to
every crash. A pidfd (Linux 5.3) becomes readable when its process exits, whoever its parent
is, so one worker thread waits on all the backends' main processes at once and returns the
moment one of them is gone. Without pidfds (an old kernel) nothing breaks: the probes and the
rounds notice the exit, later.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterable


class ExitWait:
    """One wait, meant for a worker thread, until any of `pids` exits; `cancel()` ends it."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = frozenset(p for p in pids if p > 0)
        self._read, self._write = os.pipe()
        self._closed = False
        self._guard = threading.Lock()

    def run(self, timeout: float) -> list[int]:
        """The pids that exited (empty after `timeout` seconds or a cancel)."""
        fds: dict[int, int] = {}
        gone: list[int] = []
        try:
            for pid in self.pids:
                try:
                    fds[os.pidfd_open(pid)] = pid
                except ProcessLookupError:
                    gone.append(pid)
                except (OSError, AttributeError):
                    continue  # no pidfds here: the rounds notice the exit instead
            if gone:
                return sorted(gone)
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            poller.register(self._read, select.POLLIN)
            for fd, _ in poller.poll(max(timeout, 0.0) * 1000):
                if fd in fds:
                    gone.append(fds[fd])
            return sorted(gone)
        finally:
            for fd in fds:
                os.close(fd)
            self._close()

    def cancel(self) -> None:
        with self._guard:
            if not self._closed:
                with contextlib.suppress(OSError):
                    os.write(self._write, b"x")

    def _close(self) -> None:
        with self._guard:
            if not self._closed:
                self._closed = True
                os.close(self._read)
                os.close(self._write)
