"""llmctl init's detection on described machines: executables, GGUF files, Ollama's models."""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmctl import init
from llmctl.init import Sources
from tests.conftest import write_executable as executable
from tests.init.fakes import gguf, machine, no_gpus, venv


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "h"


def test_bin_dirs_path_first_then_user_places_without_duplicates(home: Path) -> None:
    (home / "venvs" / "b" / "bin").mkdir(parents=True)
    (home / "venvs" / "a" / "bin").mkdir(parents=True)
    (home / ".venvs" / "c" / "bin").mkdir(parents=True)
    (home / ".local" / "pipx" / "venvs" / "litellm" / "bin").mkdir(parents=True)
    env = {"PATH": f"/usr/bin:relative/bin:{home}/.local/bin"}
    dirs = init.bin_dirs(home, env)
    assert dirs == [
        (Path("/usr/bin"), "PATH"),
        (home / ".local" / "bin", "PATH"),
        (home / "llama.cpp" / "build" / "bin", "~/llama.cpp/build/bin"),
        (home / "venvs" / "a" / "bin", "~/venvs/a/bin"),
        (home / "venvs" / "b" / "bin", "~/venvs/b/bin"),
        (home / ".venvs" / "c" / "bin", "~/.venvs/c/bin"),
        (home / ".local" / "pipx" / "venvs" / "litellm" / "bin", "~/.local/pipx/venvs/litellm/bin"),
    ]


def test_find_executables_in_every_place(home: Path, tmp_path: Path) -> None:
    usr = tmp_path / "usr-bin"
    executable(usr / "ollama")
    executable(home / "llama.cpp" / "build" / "bin" / "llama-server")
    venv(home / "venvs" / "llama", modules=("llama_cpp",))
    venv(home / "venvs" / "plain")  # a python without llama_cpp is not llama-cpp-python
    litellm_python = venv(home / ".local" / "pipx" / "venvs" / "litellm", scripts=("litellm",))
    venv(home / ".venvs" / "vllm", scripts=("vllm",))
    # pipx links the entry point into ~/.local/bin: found once, first where PATH has it.
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "litellm").symlink_to(litellm_python.parent / "litellm")
    (home / "venvs" / "broken" / "bin").mkdir(parents=True)
    (home / "venvs" / "broken" / "bin" / "vllm").write_text("not executable")

    found = init.detect(machine(home, [usr]), models=False).executables
    assert [(f.path, f.where) for f in found["ollama"]] == [(usr / "ollama", "PATH")]
    assert [f.where for f in found["llama-server"]] == ["~/llama.cpp/build/bin"]
    assert [f.path for f in found["llama-cpp-python"]] == [home / "venvs" / "llama" / "bin" / "python3"]
    assert [f.path for f in found["litellm"]] == [home / ".local" / "bin" / "litellm"]
    assert [f.where for f in found["vllm"]] == ["~/.venvs/vllm/bin"]


def test_python_has_module_asks_a_python_outside_a_venv(tmp_path: Path) -> None:
    system_python = Path(sys.base_prefix) / "bin" / "python3"  # the tests run in a venv: its base
    if not system_python.is_file():
        pytest.skip(f"no {system_python}")
    assert init.python_has_module(system_python, "json")
    assert not init.python_has_module(system_python, "no_such_module_here")
    assert not init.python_has_module(tmp_path / "missing-python", "json")
    # A venv's python is judged by its site-packages, without running it.
    assert init.python_has_module(venv(tmp_path / "v", modules=("llama_cpp",)), "llama_cpp")
    assert not init.python_has_module(tmp_path / "v" / "bin" / "python3", "json")


def test_model_dirs(home: Path, tmp_path: Path) -> None:
    (home / "models").mkdir(parents=True)
    (home / ".cache" / "llama.cpp").mkdir(parents=True)
    cache = tmp_path / "llama-cache"
    cache.mkdir()
    assert init.model_dirs(home, {"LLAMA_CACHE": str(cache)}) == [
        home / "models",
        home / ".cache" / "llama.cpp",
        cache,
    ]
    assert init.model_dirs(home, {"LLAMA_CACHE": "relative"}) == [
        home / "models",
        home / ".cache" / "llama.cpp",
    ]


def test_scan_ggufs_checks_magic_and_skips_projectors_shards_hidden_and_symlinked_dirs(
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    a = gguf(root / "a-q4_k_m.gguf", 100)
    gguf(root / "notes.GGUF.txt")
    gguf(root / "fake.gguf", magic=b"PK\x03\x04")
    gguf(root / "mmproj-a-f16.gguf")
    first = gguf(root / "big" / "big-00001-of-00002.gguf", 200)
    gguf(root / "big" / "big-00002-of-00002.gguf")
    gguf(root / ".trash" / "old.gguf")
    (root / "link").symlink_to(root / "big")
    (root / "same.gguf").symlink_to(a)
    files, truncated = init.scan_ggufs([root])
    assert sorted((f.path, f.size) for f in files) == [(a, 100), (first, 200)]
    assert not truncated


def test_scan_ggufs_is_bounded(tmp_path: Path) -> None:
    deep = tmp_path / "m" / "1" / "2" / "3" / "4" / "5"
    gguf(deep / "deep.gguf")
    for i in range(5):
        gguf(tmp_path / "m" / f"f{i}.gguf")
    files, truncated = init.scan_ggufs([tmp_path / "m"], max_depth=3)
    assert len(files) == 5 and truncated
    files, truncated = init.scan_ggufs([tmp_path / "m"], max_files=2)
    assert len(files) == 2 and truncated
    files, truncated = init.scan_ggufs([tmp_path / "m"], max_entries=3)
    assert len(files) <= 3 and truncated


class _Tags(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        status = 200 if self.path == "/api/tags" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ollama_stand_in() -> Iterator[tuple[str, type[_Tags]]]:
    handler = type("Tags", (_Tags,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_ollama_models_from_api_tags(ollama_stand_in: tuple[str, type[_Tags]]) -> None:
    url, handler = ollama_stand_in
    # The shape of Ollama's GET /api/tags (docs/api.md), trimmed.
    handler.body = json.dumps(
        {
            "models": [
                {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189},
                {"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest", "size": 274302450},
            ]
        }
    ).encode()
    assert init.ollama_models(url) == ["llama3.2:latest", "nomic-embed-text:latest"]
    handler.body = b"not json"
    assert init.ollama_models(url) is None


def test_ollama_models_when_nothing_answers(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert init.ollama_models(f"http://127.0.0.1:{port}", timeout=0.5) is None


def test_detect_asks_ollama_only_when_it_is_installed(home: Path, tmp_path: Path) -> None:
    asked: list[bool] = []

    def tags() -> list[str] | None:
        asked.append(True)
        return ["qwen3:8b"]

    gguf(home / "models" / "x.gguf")
    sources = Sources(home=home, env={"PATH": ""}, ollama=tags, gpus=no_gpus)
    detection = init.detect(sources)
    assert detection.ollama_models is None and not asked
    assert [g.path for g in detection.ggufs] == [home / "models" / "x.gguf"]
    usr = tmp_path / "bin"
    executable(usr / "ollama")
    sources = Sources(home=home, env={"PATH": str(usr)}, ollama=tags, gpus=no_gpus)
    assert init.detect(sources).ollama_models == ["qwen3:8b"]
