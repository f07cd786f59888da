"""A stand-in for gateway_runtime/child.py in the fast tests: same argv, stdlib only.

It serves HTTP on the inherited listening fd and answers every GET with JSON saying who it is:
its tag (from the config), generation, pid, the config path and a few environment variables.
The config snapshot (CONFIG_FILE_PATH) holds `key: value` lines:

    tag: a               # what GET answers with
    behaviour: ok        # ok | fail (exit 3 before ready) | hang (never ready) | die (exit 7 after ready)
    ready_delay: 0.2     # seconds before it is ready (or fails)
    stop_delay: 1.0      # seconds it lingers after SIGTERM (a long drain)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ENV_SHOWN = ("CONFIG_FILE_PATH", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET", "LITELLM_MODE", "TEST_SECRET")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--generation", type=int, required=True)
    args, _ = parser.parse_known_args()
    config_path = os.environ["CONFIG_FILE_PATH"]
    settings = {}
    for line in Path(config_path).read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            settings[key.strip()] = value.strip()
    behaviour = settings.get("behaviour", "ok")
    time.sleep(float(settings.get("ready_delay", "0")))
    if behaviour == "fail":
        print("fake child: failing as told", file=sys.stderr)
        return 3
    if behaviour == "hang":
        while True:
            time.sleep(60)

    body = json.dumps(
        {
            "tag": settings.get("tag"),
            "generation": args.generation,
            "pid": os.getpid(),
            "env": {name: os.environ.get(name) for name in ENV_SHOWN},
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=args.fd)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.write(args.ready_fd, b"READY\n")
    os.close(args.ready_fd)
    if behaviour == "die":
        time.sleep(0.3)
        os._exit(7)
    while not stop.wait(0.05):
        pass
    time.sleep(float(settings.get("stop_delay", "0")))
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
