"""gateway.on_demand: what the router costs, side by side with what it cannot avoid.

Runs inside a systemd user manager (bench/run uses the private one). One llama-server backend
with two smoke models, the real LiteLLM gateway with `on_demand: true`. Per round, alternating
the model:
  A. `llmctl switch` (whole process; it goes through the router) vs the same llama-server
     started directly on that model until /health answers: the server's own load-to-ready;
  B. the first request for the model that is not loaded, through the gateway (load + answer)
     vs direct load-to-ready + one direct request of the same shape;
  C. per-request latency of the loaded model through the router vs straight to the backend
     (both without LiteLLM, interleaved): what the per-model path adds to every request.
Figures are medians; the targets (issue 12) are A <= +1 s, B <= +0.5 s, C <= +2 ms p50.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

# Run as a script (bench/run): this directory is on sys.path.
from switch_overhead import direct_load, free_port

ROUNDS = 6
LATENCY_REQUESTS = 200
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def post(url: str, body: dict[str, object], key: str | None = None, timeout: float = 300) -> float:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback http
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        response.read()
        assert response.status == 200
    return time.perf_counter() - start


def direct_first_request(binary: str, model: Path) -> float:
    """Load-to-ready plus one request, on a server of its own."""
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
                post(f"http://127.0.0.1:{port}/v1/chat/completions", {"model": "x", **BODY}, timeout=5)
                return time.perf_counter() - start
            except OSError:
                time.sleep(0.01)
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    binary = os.environ["LLMCTL_TEST_LLAMA_SERVER"]
    work = Path(tempfile.mkdtemp(prefix="llmctl-bench-"))
    llmctl = [sys.executable, "-m", "llmctl"]
    models: dict[str, dict[str, object]] = {}
    for name in ("a", "b"):
        path = work / f"{name}.gguf"
        subprocess.run([*llmctl, "model", "smoke", str(path)], check=True, stdout=subprocess.DEVNULL)
        models[name] = {"backend": "native", "source": str(path), "context": 256}
    native_port, gateway_port, router_port = free_port(), free_port(), free_port()
    config = work / "llmctl.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1,
        "backends": {"native": {"kind": "llama-server", "command": binary, "port": native_port, "model": "a",
                                "gpus": []}},
        "models": models,
        "gateway": {"command": os.environ["LLMCTL_TEST_LITELLM"], "port": gateway_port, "on_demand": True,
                    "router_port": router_port},
        "supervisor": {"enabled": False},
    }))  # fmt: skip
    base = [*llmctl, "--config", str(config)]
    subprocess.run([*base, "up"], check=True, stdout=subprocess.DEVNULL)
    key = subprocess.run([*base, "gateway", "key"], check=True, capture_output=True, text=True).stdout.strip()
    gateway = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
    switches, loads, firsts, direct_firsts = [], [], [], []
    try:
        post(gateway, {"model": "a", **BODY}, key)  # LiteLLM's first request warms its client
        target = "b"
        for _ in range(ROUNDS):
            start = time.perf_counter()
            subprocess.run([*base, "switch", target, "--json"], check=True, capture_output=True)
            switches.append(time.perf_counter() - start)
            loads.append(direct_load(binary, Path(str(models[target]["source"]))))
            target = "a" if target == "b" else "b"
            firsts.append(post(gateway, {"model": target, **BODY}, key))  # not loaded: loads it
            direct_firsts.append(direct_first_request(binary, Path(str(models[target]["source"]))))
            target = "a" if target == "b" else "b"
        loaded = "a" if target == "b" else "b"  # the last first-request loaded it
        via_router = f"http://127.0.0.1:{router_port}/m/{loaded}/v1/chat/completions"
        direct = f"http://127.0.0.1:{native_port}/v1/chat/completions"
        routed, straight = [], []
        for _ in range(LATENCY_REQUESTS):
            routed.append(post(via_router, {"model": loaded, **BODY}))
            straight.append(post(direct, {"model": loaded, **BODY}))
    finally:
        subprocess.run([*base, "down"], check=True, stdout=subprocess.DEVNULL)

    def diff(a: list[float], b: list[float]) -> list[float]:
        return [x - y for x, y in zip(a, b, strict=True)]

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:8.1f} ms"

    print(f"A  llmctl switch, gateway on (whole process)   median {ms(switches)}")
    print(f"   server load-to-ready (direct)               median {ms(loads)}")
    print(f"   overhead                                    median {ms(diff(switches, loads))}")
    print(f"B  first request for an unloaded model (gw)    median {ms(firsts)}")
    print(f"   direct load-to-ready + one request          median {ms(direct_firsts)}")
    print(f"   overhead                                    median {ms(diff(firsts, direct_firsts))}")
    print(f"C  one-token request through the router       p50    {ms(routed)}")
    print(f"   the same, straight to the backend           p50    {ms(straight)}")
    added = statistics.median(routed) - statistics.median(straight)
    print(f"   added by the router                         p50    {added * 1000:8.2f} ms")
    print(f"   ({ROUNDS} rounds of A and B, {LATENCY_REQUESTS} interleaved requests for C)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
