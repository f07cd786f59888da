"""The state lock: exclusive, names its holder, released when the holder dies."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmctl.errors import LlmctlError
from llmctl.lock import state_lock


def test_second_holder_fails_with_no_wait_and_names_the_first(tmp_path: Path) -> None:
    held = rf"pid {os.getpid()} \(switch: .*\) holds the llmctl lock"
    with (
        state_lock(tmp_path, "switch"),
        pytest.raises(LlmctlError, match=held),
        state_lock(tmp_path, "up", wait=False),
    ):
        pass
    with state_lock(tmp_path, "up", wait=False):
        pass


def test_waiting_gives_up_after_timeout_with_a_message(tmp_path: Path) -> None:
    messages: list[str] = []
    with (
        state_lock(tmp_path, "switch"),
        pytest.raises(LlmctlError, match="gave up after 0 s"),
        state_lock(tmp_path, "up", timeout=0.3, on_wait=messages.append),
    ):
        pass
    assert messages and messages[0].startswith("waiting for pid")


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from llmctl.lock import state_lock
            with state_lock(Path({str(tmp_path)!r}), "up"):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with state_lock(tmp_path, "up", wait=False):
        pass


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LlmctlError, match="cannot open the lock"), state_lock(blocker / "state", "up"):
        pass
