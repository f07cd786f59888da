"""The gateway supervisor's signals, turned into flags it looks at between waits."""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType


class Signals:
    """SIGHUP/SIGTERM/SIGINT become flags; every signal (SIGCHLD too) wakes `wait`'s select."""

    def __init__(self) -> None:
        self.hup = False
        self.term = False
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.hup = True
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self.term = True

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_fd, 512):
                pass
