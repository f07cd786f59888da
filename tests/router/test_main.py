"""What the router's process reads: its key and the backends' keys, from their files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmctl.paths import Paths
from llmctl.router.main import _backend_keys, cached_file
from llmctl.secrets import ensure_backend_key, gateway_variable


def test_a_cached_file_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "key"
    reads: list[str] = []

    def read(p: Path) -> str:
        reads.append(p.read_text())
        return reads[-1]

    current = cached_file(path, read)
    with pytest.raises(FileNotFoundError):
        current()
    path.write_text("one")
    assert current() == current() == "one" and len(reads) == 1
    path.write_text("two!")
    os.utime(path, ns=(1, 1))
    assert current() == "two!" and len(reads) == 2


def test_backend_keys_are_those_of_keyed_backends_and_none_when_unreadable(paths: Paths) -> None:
    ensure_backend_key(paths.backend_key_file("vllm"), "vllm", "VLLM_API_KEY")
    keys = _backend_keys(paths, {"vllm", "gone"})
    expected = dict(
        line.split("=", 1) for line in paths.backend_key_file("vllm").read_text().splitlines() if "=" in line
    )[gateway_variable("vllm")]
    assert keys("vllm") == expected
    assert keys("gone") is None  # keyed, but its file is missing: the backend answers 401
    assert keys("llama") is None  # not keyed
