"""Supervisor benchmarks, at default settings, on the smoke model (run under scripts/with-user-manager).

1. Cost: RSS and CPU of the supervisor over one minute while it watches 6 llama-servers.
2. A hung backend: `kill -STOP` one server; time to the restart event (detection) and from the
   restart event to serving a completion again (detection-to-serving), several times.

Targets (the issue): detection-to-serving <= 20 s; RSS < 40 MiB and CPU < 1 % of a core.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import yaml

from llmctl.paths import Paths
from llmctl.smoke_model import write_smoke_model

LLMCTL = [sys.executable, "-m", "llmctl"]
BACKENDS = 6
ROUNDS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def show(unit: str, prop: str) -> str:
    return subprocess.run(
        ["systemctl", "--user", "show", unit, "-P", prop], capture_output=True, text=True, check=True
    ).stdout.strip()


def serves(port: int) -> bool:
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"model": "m", "prompt": "hi", "max_tokens": 1},
            timeout=1,
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def restart_events(state_dir: Path) -> list[dict[str, object]]:
    path = state_dir / "events.jsonl"
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "restart"]


def main() -> int:
    env: dict[str, str] = {}
    cache = Path(os.environ.get("LLMCTL_DEV_CACHE") or Path.home() / ".cache/llmctl-dev")
    for line in (cache / "provision.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    server = env["LLMCTL_TEST_LLAMA_SERVER"]
    root = Path(tempfile.mkdtemp(prefix="bench-supervisor-"))
    model = write_smoke_model(root / "smoke.gguf")
    ports = {f"b{i}": free_port() for i in range(BACKENDS)}
    config = root / "llmctl.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "backends": {
                    n: {"kind": "llama-server", "command": server, "port": p, "model": f"m-{n}", "gpus": []}
                    for n, p in ports.items()
                },
                "models": {f"m-{n}": {"backend": n, "source": str(model), "context": 256} for n in ports},
                "gateway": {"enabled": False},
                "supervisor": {"metrics": {"port": free_port()}},
            }
        )
    )
    state_dir = Paths.from_env().state_dir

    def llmctl(*args: str) -> None:
        subprocess.run(
            [*LLMCTL, "--config", str(config), *args], check=True, capture_output=True, timeout=300
        )

    llmctl("up")
    try:
        pid = int(show("llmctl-supervisor.service", "MainPID"))
        proc = psutil.Process(pid)
        time.sleep(5)  # past start-up
        t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
        peak = 0
        while time.monotonic() - t0 < 60:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(1)
        cpu = (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
        uss = proc.memory_full_info().uss
        print(f"supervisor watching {BACKENDS} llama-servers, default settings, 60 s:")
        print(
            f"  RSS peak {peak / 2**20:.1f} MiB (USS {uss / 2**20:.1f} MiB); "
            f"CPU {cpu * 100:.2f} % of one core"
        )

        print(
            "hung backend (kill -STOP), default settings (liveness every 10 s, 5 s timeout, "
            f"3 failures), {ROUNDS} runs:"
        )
        for i in range(ROUNDS):
            name = f"b{i}"
            port = ports[name]
            unit = f"llmctl-{name}.service"
            before = len(restart_events(state_dir))
            os.kill(int(show(unit, "MainPID")), signal.SIGSTOP)
            stopped = time.time()
            while len(restart_events(state_dir)) == before:
                time.sleep(0.05)
            event = restart_events(state_dir)[-1]
            detected = datetime.fromisoformat(str(event["time"])).timestamp()
            while not serves(port):
                time.sleep(0.05)
            served = time.time()
            print(
                f"  {name}: stop -> restart event {detected - stopped:5.1f} s; "
                f"restart event -> serving {served - detected:4.2f} s (target <= 20 s)"
            )
    finally:
        llmctl("down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
