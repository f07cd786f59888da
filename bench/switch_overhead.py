"""Switch overhead: `llmctl switch` wall time minus the server's own load-to-ready time.

Runs inside a systemd user manager (bench/run uses the private one). One llama-server backend,
two smoke models, no gateway (a gateway adds its own reload, reported by the gateway bench).
Each round times, side by side:
  A. `llmctl switch` to the other model (whole process, as a user runs it), and the total the
     switch itself records (its phases, check to routes-in: what it prints and what status and
     the metrics show);
  B. the same llama-server binary started directly on that model, until /health answers 200
     (polled every 10 ms), then stopped: the server's own load-to-ready time.
Overhead = A - B, reported as median over the rounds, for both A's.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROUNDS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def direct_load(binary: str, model: Path) -> float:
    port = free_port()
    start = time.perf_counter()
    server = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--model", str(model), "--ctx-size", "256",
         "--n-gpu-layers", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.01)
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    binary = os.environ["LLMCTL_TEST_LLAMA_SERVER"]
    work = Path(tempfile.mkdtemp(prefix="llmctl-bench-"))
    llmctl = [sys.executable, "-m", "llmctl"]
    models = {}
    for name in ("a", "b"):
        path = work / f"{name}.gguf"
        subprocess.run([*llmctl, "model", "smoke", str(path)], check=True, stdout=subprocess.DEVNULL)
        models[name] = {"backend": "native", "source": str(path), "context": 256}
    config = work / "llmctl.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1,
        "backends": {"native": {"kind": "llama-server", "command": binary, "port": free_port(), "model": "a",
                                "gpus": []}},
        "models": models,
        "gateway": {"enabled": False},
    }))  # fmt: skip
    base = [*llmctl, "--config", str(config)]
    subprocess.run([*base, "up"], check=True, stdout=subprocess.DEVNULL)
    switch_times, load_times, recorded = [], [], []
    target = "b"
    try:
        for _ in range(ROUNDS):
            start = time.perf_counter()
            out = subprocess.run([*base, "switch", target, "--json"], check=True, capture_output=True).stdout
            switch_times.append(time.perf_counter() - start)
            recorded.append(json.loads(out)["data"]["total_s"])
            load_times.append(direct_load(binary, Path(models[target]["source"])))
            target = "a" if target == "b" else "b"
    finally:
        subprocess.run([*base, "down"], check=True, stdout=subprocess.DEVNULL)
    overheads = [s - d for s, d in zip(switch_times, load_times, strict=True)]
    own = [r - d for r, d in zip(recorded, load_times, strict=True)]
    print(f"llmctl switch (whole process)   median {statistics.median(switch_times) * 1000:7.1f} ms")
    print(f"switch's own recorded total     median {statistics.median(recorded) * 1000:7.1f} ms")
    print(f"server load-to-ready (direct)   median {statistics.median(load_times) * 1000:7.1f} ms")
    for label, values in (("overhead, whole process", overheads), ("overhead, recorded total", own)):
        print(
            f"{label:31} median {statistics.median(values) * 1000:7.1f} ms"
            f" (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}), {ROUNDS} rounds"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
