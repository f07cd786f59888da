"""The gateway key: created once with mode 0600, never readable by others."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from llmctl.errors import LlmctlError
from llmctl.secrets import ensure_gateway_key, read_gateway_key


def test_created_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "llmctl" / "gateway.env"
    assert ensure_gateway_key(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_gateway_key(path)
    assert key.startswith("sk-") and len(key) > 40
    assert ensure_gateway_key(path) is False
    assert read_gateway_key(path) == key
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "gateway.env"
    ensure_gateway_key(path)
    path.chmod(0o644)
    with pytest.raises(LlmctlError, match="readable by others") as info:
        ensure_gateway_key(path)
    assert info.value.hint == f"chmod 600 {path}"


def test_missing_key_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="no gateway key yet"):
        read_gateway_key(tmp_path / "gateway.env")
