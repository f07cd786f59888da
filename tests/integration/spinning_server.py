"""A `llama-server` stand-in that hangs while it spins a CPU, for the supervisor's tests.

`spinning-server --host H --port P --model F --alias NAME ...` (the command line llmctl renders
for llama-server) answers as llama-server does once loaded (shared/reference/backends.md 2.3,
2.4): GET /health 200 {"status": "ok"}; GET /v1/models with the alias; GET /slots with one
idle slot; POST /v1/completions with one token. On SIGUSR1 it hangs the way a wedged server
does: a thread burns a CPU, /health and completions never answer, and /slots shows one slot
processing a request whose token counts never move. The tests install it as an executable
with `install_spinning_server`.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.integration.fake_programs import install_fake

HUNG = threading.Event()


def install_spinning_server(directory: Path) -> Path:
    return install_fake(directory, "spinning-server", "tests.integration.spinning_server")


def spin() -> None:
    HUNG.wait()
    while True:  # a busy loop: CPU time goes up, nothing gets done
        pass


def slots() -> list[dict[str, Any]]:
    slot: dict[str, Any] = {"id": 0, "n_ctx": 512, "speculative": False, "is_processing": HUNG.is_set()}
    if HUNG.is_set():
        slot |= {
            "id_task": 42, "n_prompt_tokens": 9, "n_prompt_tokens_processed": 9,
            "next_token": [{"has_next_token": True, "has_new_line": False, "n_remain": 7, "n_decoded": 1}],
        }  # fmt: skip
    return [slot]


class Handler(BaseHTTPRequestHandler):
    alias = "model"

    def reply(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def hang_here(self) -> None:
        while True:  # what a wedged server's HTTP thread does: never answer
            time.sleep(60)

    def do_GET(self) -> None:
        if self.path == "/slots":
            self.reply(200, slots())
        elif HUNG.is_set():
            self.hang_here()
        elif self.path in ("/health", "/v1/health"):
            self.reply(200, {"status": "ok"})
        elif self.path in ("/v1/models", "/models"):
            self.reply(200, {"object": "list", "data": [{"id": self.alias, "object": "model"}]})
        else:
            self.reply(404, {"error": {"code": 404, "message": "File Not Found"}})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if HUNG.is_set():
            self.hang_here()
        if self.path in ("/v1/completions", "/completion"):
            choice = {"text": " x", "index": 0, "finish_reason": "length"}
            self.reply(200, {"object": "text_completion", "model": self.alias, "choices": [choice]})
        else:
            self.reply(404, {"error": {"code": 404, "message": "File Not Found"}})

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--alias", default="model")
    args, _ = parser.parse_known_args()
    Handler.alias = args.alias
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGUSR1, lambda *_: HUNG.set())
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    threading.Thread(target=spin, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
