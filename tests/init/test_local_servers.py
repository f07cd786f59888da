"""probe_port against HTTP servers that answer as llama-server, llama-cpp-python and vLLM do
(their /v1/models and /props bodies, as their sources build them), and against nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from llmctl.init.local_servers import Served, probe_port
from tests.conftest import free_port

ANSWERS: dict[str, dict[str, Any]] = {
    # tools/server/server-context.cpp: get_res_model_info, and /props' model_path.
    "llama-server": {
        "/v1/models": {"object": "list", "data": [{"id": "gemma.gguf", "owned_by": "llamacpp"}]},
        "/props": {"model_path": "/models/gemma.gguf", "model_alias": "gemma.gguf"},
    },
    # llama_cpp/server/app.py: get_models; its id is the model alias, by default the path.
    "llama-cpp-python": {
        "/v1/models": {"object": "list", "data": [{"id": "/models/q.gguf", "owned_by": "me"}]}
    },
    "vllm": {
        "/v1/models": {
            "object": "list",
            "data": [{"id": "coder", "owned_by": "vllm", "root": "Qwen/Qwen2.5-Coder-7B-Instruct"}],
        }
    },
}


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[int]:
    answers = ANSWERS[request.param]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answers.get(self.path)
            data = json.dumps(body or {"error": "not found"}).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("llama-server", Served("llama-server", ("gemma.gguf", "/models/gemma.gguf"))),
        ("llama-cpp-python", Served("llama-cpp-python", ("/models/q.gguf",))),
        ("vllm", Served("vllm", ("coder", "Qwen/Qwen2.5-Coder-7B-Instruct"))),
    ],
    indirect=["server"],
)
def test_what_each_server_says_about_itself(server: int, expected: Served) -> None:
    assert probe_port(server) == expected


def test_nothing_listening_is_none() -> None:
    assert probe_port(free_port()) is None
