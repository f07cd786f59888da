"""`llmctl status --json` for a running stack with a gateway against `systemctl --user show` of
the same units.

Runs inside a systemd user manager (bench/run uses the private one). Starts six llama-server
backends on the smoke model and the LiteLLM gateway (`$LLMCTL_TEST_LITELLM`, from
scripts/provision) through `llmctl up`, then times both commands side by side. status does
more than show: it probes each unit's health over HTTP (in parallel) and reads each unit's
cgroup for RSS and CPU; the ratio says what that costs over the bare query.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from abtime import compare

BACKENDS = 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> int:
    llama_server = os.environ["LLMCTL_TEST_LLAMA_SERVER"]
    litellm = os.environ["LLMCTL_TEST_LITELLM"]
    work = Path(tempfile.mkdtemp(prefix="llmctl-bench-"))
    model = work / "smoke.gguf"
    llmctl = [sys.executable, "-m", "llmctl"]
    subprocess.run([*llmctl, "model", "smoke", str(model)], check=True, stdout=subprocess.DEVNULL)
    backends = {
        f"b{i}": {
            "kind": "llama-server",
            "command": llama_server,
            "port": free_port(),
            "model": f"m{i}",
            "gpus": [],
        }
        for i in range(BACKENDS)
    }
    models = {f"m{i}": {"backend": f"b{i}", "source": str(model), "context": 256} for i in range(BACKENDS)}
    config = work / "llmctl.yaml"
    gateway = {"command": litellm, "port": free_port()}
    config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "backends": backends,
                "models": models,
                "gateway": gateway,
                # Its own metrics port: a demo stack may hold the default one.
                "supervisor": {"metrics": {"port": free_port()}},
            }
        )
    )
    base = [*llmctl, "--config", str(config)]
    subprocess.run([*base, "up"], check=True, stdout=subprocess.DEVNULL)
    try:
        units = [
            *(f"llmctl-b{i}.service" for i in range(BACKENDS)),
            "llmctl-gateway.service",
            "llmctl-supervisor.service",
        ]
        show = ["systemctl", "--user", "show", "--property=ActiveState,SubState,MainPID,NRestarts", *units]
        print(compare([*base, "status", "--json"], show, runs=20).report())
    finally:
        subprocess.run([*base, "down"], check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
