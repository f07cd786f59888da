"""gateway.litellm_metrics: what LiteLLM's prometheus callback costs a request, side by side.

Two LiteLLM 1.106 proxies on the gateway.yaml llmctl renders, identical but for
`gateway.litellm_metrics` (A: on, B: off), with llmctl's auth hook, in front of one llama-server
on a smoke model. Requests alternate A B A B, one at a time (max_tokens 1, so the backend's
share is small and the same for both). Reports the medians, their ratio A/B and the median of
the per-pair differences, each proxy's RSS after the run, and what scrapes of A's
/metrics/ take. Needs scripts/provision (provision.env); no user manager.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

# Run as a script (bench/run): this directory is on sys.path.
from switch_overhead import free_port

from llmctl.config.load import parse_config
from llmctl.render.gateway import render_gateway_config

HOOKS = Path(__file__).parents[1] / "src" / "llmctl" / "gateway_runtime" / "litellm_hooks"
WARMUP = 20
REQUESTS = 200
SCRAPES = 6
KEY = "bench-key"


def post(port: int, timeout: float = 120) -> float:
    body = {"model": "smoke", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        response.read()
        assert response.status == 200
    return time.perf_counter() - start


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url}: the server exited {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def gateway_yaml(work: Path, llama_port: int, model: Path, metrics: bool) -> Path:
    config, _ = parse_config(
        json.dumps({
            "version": 1,
            "backends": {"native": {"kind": "llama-server", "command": "/bin/true", "port": llama_port,
                                    "model": "smoke", "gpus": []}},
            "models": {"smoke": {"backend": "native", "source": str(model), "context": 256}},
            "gateway": {"command": "/bin/true", "port": 4000, "litellm_metrics": metrics},
        })
    )  # fmt: skip
    path = work / f"gateway-{'on' if metrics else 'off'}.yaml"
    path.write_text(render_gateway_config(config, {"native": "smoke"}))
    return path


def main() -> int:
    env_file = Path(os.environ.get("LLMCTL_DEV_CACHE", Path.home() / ".cache/llmctl-dev")) / "provision.env"
    llama_server = os.environ["LLMCTL_TEST_LLAMA_SERVER"]
    litellm = os.environ["LLMCTL_TEST_LITELLM"]
    work = Path(tempfile.mkdtemp(prefix="llmctl-bench-metrics-"))
    model = work / "smoke.gguf"
    subprocess.run(
        [sys.executable, "-m", "llmctl", "model", "smoke", str(model)], check=True, stdout=subprocess.DEVNULL
    )
    llama_port, port_a, port_b = free_port(), free_port(), free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": KEY, "PYTHONPATH": str(HOOKS)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [
        subprocess.Popen(
            [llama_server, "--host", "127.0.0.1", "--port", str(llama_port), "--model", str(model),
             "--ctx-size", "256", "--n-gpu-layers", "0"],
            **quiet,
        )
    ]  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{llama_port}/health", processes[0])
        for port, metrics in ((port_a, True), (port_b, False)):
            config = gateway_yaml(work, llama_port, model, metrics)
            processes.append(
                subprocess.Popen(
                    [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    **quiet,
                )
            )
            wait_ready(f"http://127.0.0.1:{port}/health/liveliness", processes[-1])
        for _ in range(WARMUP):
            post(port_a)
            post(port_b)
        a_times, b_times = [], []
        for _ in range(REQUESTS):
            a_times.append(post(port_a))
            b_times.append(post(port_b))
        scrape = urllib.request.Request(
            f"http://127.0.0.1:{port_a}/metrics/", headers={"Authorization": f"Bearer {KEY}"}
        )
        scrapes = []
        for _ in range(SCRAPES):  # the first one pays for imports; Prometheus pays the rest
            start = time.perf_counter()
            with urllib.request.urlopen(scrape, timeout=30) as response:  # noqa: S310
                size = len(response.read())
            scrapes.append(time.perf_counter() - start)
        rss = [psutil.Process(p.pid).memory_info().rss for p in processes[1:]]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    a50, b50 = statistics.median(a_times), statistics.median(b_times)
    diffs = [a - b for a, b in zip(a_times, b_times, strict=True)]

    def p90(times: list[float]) -> float:
        return statistics.quantiles(times, n=10)[-1] * 1000

    print(f"provision.env: {env_file}")
    print(f"A (litellm_metrics on):  p50 {a50 * 1000:.2f} ms, p90 {p90(a_times):.2f} ms")
    print(f"B (litellm_metrics off): p50 {b50 * 1000:.2f} ms, p90 {p90(b_times):.2f} ms")
    diff = statistics.median(diffs) * 1000
    print(f"A/B p50: {a50 / b50:.3f}; per-pair A-B median {diff:+.2f} ms, {REQUESTS} pairs")
    print(f"RSS after the run: A {rss[0] / 2**20:.0f} MiB, B {rss[1] / 2**20:.0f} MiB")
    later = statistics.median(scrapes[1:]) * 1000
    print(
        f"A's /metrics/ ({size} bytes): first scrape {scrapes[0] * 1000:.0f} ms, then median {later:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
