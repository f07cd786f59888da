"""`llmctl up NAME` of one stopped llama-server backend against RamaLama and the server alone.

Runs inside a systemd user manager (bench/run uses the private one). In the same rounds, in
turn, each of the three brings the same smoke GGUF to serving (GET /health answers 200):

  (a) llama-server alone: the provisioned binary (`$LLMCTL_TEST_LLAMA_SERVER`), started
      directly with the arguments llmctl's unit gives it;
  (b) `ramalama --nocontainer serve` of the same file (RamaLama starts that llama-server from
      PATH with its own arguments, without a container);
  (c) `llmctl up NAME` of the stopped unit.

All three are timed from the start of the process to the first 200 of a probe polled every
5 ms; (c) also as the whole command, which returns once the unit's readiness gate and llmctl's
own probe have passed (RamaLama's command is the server: it has no end to time). The overheads
over (a) are per round, then the median.
RamaLama is not a dependency: install it into a scratch venv outside the repository
(`python3 -m venv /tmp/ramalama && /tmp/ramalama/bin/pip install ramalama`) and point
`$RAMALAMA` at its `ramalama`, or have one on PATH; without it, (b) is skipped and said so.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

NAME = "solo"
CONTEXT = 256
POLL = 0.005


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/health")
        status = connection.getresponse().status
        connection.close()
    except OSError:
        return False
    return status == 200


def time_to_serving(argv: list[str], port: int, env: dict[str, str] | None = None) -> float:
    """Seconds from starting argv to /health 200 on port; the process group is ended after."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        while not healthy(port):
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode} before serving")
            if time.perf_counter() - start > 60:
                raise RuntimeError(f"{argv[0]} did not serve within 60 s")
            time.sleep(POLL)
        return time.perf_counter() - start
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def ramalama_command() -> str | None:
    return os.environ.get("RAMALAMA") or shutil.which("ramalama")


def report(times: dict[str, list[float]], rounds: int) -> None:
    print(f"to /health 200, {rounds} rounds (median, min-max):")
    for label, values in times.items():
        median, low, high = (x * 1000 for x in (statistics.median(values), min(values), max(values)))
        print(f"  {label:18} {median:7.1f} ms  ({low:.1f}-{high:.1f})")
    base_times = times["server alone"]
    print("overhead over the server alone (per round, median):")
    overheads = {}
    for label, values in times.items():
        if label != "server alone":
            overheads[label] = statistics.median(v - b for v, b in zip(values, base_times, strict=True))
            print(f"  {label:18} {overheads[label] * 1000:7.1f} ms")
    if "ramalama serve" in overheads:
        for label in (f"llmctl up {NAME}", f"llmctl up {NAME} (whole command)"):
            ratio = overheads[label] / overheads["ramalama serve"]
            print(f"{label} overhead / RamaLama's: {ratio:.2f} (target <= 1)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    llama_server = os.environ["LLMCTL_TEST_LLAMA_SERVER"]
    ramalama = ramalama_command()
    work = Path(tempfile.mkdtemp(prefix="llmctl-bench-up-"))
    model = work / "smoke.gguf"
    llmctl = [sys.executable, "-m", "llmctl"]
    subprocess.run([*llmctl, "model", "smoke", str(model)], check=True, stdout=subprocess.DEVNULL)
    unit_port, alone_port, rama_port = free_port(), free_port(), free_port()
    config = work / "llmctl.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "backends": {
                    NAME: {
                        "kind": "llama-server",
                        "command": llama_server,
                        "port": unit_port,
                        "model": "m",
                        "gpus": [],
                    }
                },
                "models": {"m": {"backend": NAME, "source": str(model), "context": CONTEXT}},
                "gateway": {"enabled": False},
                "supervisor": {"metrics": {"port": free_port()}},
            }
        )
    )
    base = [*llmctl, "--config", str(config)]
    subprocess.run([*base, "up"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*base, "down", NAME], check=True, stdout=subprocess.DEVNULL)
    alone = [llama_server, "--host", "127.0.0.1", "--port", str(alone_port), "-m", str(model)]
    alone += ["-c", str(CONTEXT), "-ngl", "0"]
    # RamaLama runs `llama-server` from PATH: the same binary as (a) and the unit.
    rama_env = os.environ | {"PATH": f"{Path(llama_server).parent}:{os.environ['PATH']}"}
    rama = [ramalama or "ramalama", "--store", str(work / "ramalama-store"), "--nocontainer", "serve"]
    rama += ["--port", str(rama_port), "--ctx-size", str(CONTEXT), "--ngl", "0", f"file://{model}"]

    whole: list[float] = []  # the same rounds' `llmctl up`, as the whole command

    def llmctl_up() -> float:
        """To the first /health 200, timed as (a) and (b) are; the command's own end is kept
        in `whole` (it returns once its readiness gate and its own probe have passed)."""
        start = time.perf_counter()
        process = subprocess.Popen([*base, "up", NAME], stdout=subprocess.DEVNULL)
        while not healthy(unit_port):
            if process.poll() is not None and not healthy(unit_port):
                raise RuntimeError(
                    f"llmctl up exited with {process.returncode}, and the backend does not serve"
                )
            time.sleep(POLL)
        served = time.perf_counter() - start
        if process.wait(timeout=60) != 0:
            raise RuntimeError(f"llmctl up exited with {process.returncode}")
        whole.append(time.perf_counter() - start)
        subprocess.run([*base, "down", NAME], check=True, stdout=subprocess.DEVNULL)
        return served

    runs: dict[str, Callable[[], float]] = {
        "server alone": lambda: time_to_serving(alone, alone_port),
        f"llmctl up {NAME}": llmctl_up,
    }
    if ramalama is not None:
        runs["ramalama serve"] = lambda: time_to_serving(rama, rama_port, rama_env)
    else:
        print("ramalama: not found ($RAMALAMA or PATH): its column is skipped")
    try:
        for run in runs.values():
            run()  # warm-up: page cache, RamaLama's store (it links the file in on first use)
        times: dict[str, list[float]] = {label: [] for label in runs}
        whole.clear()  # the warm-up's
        for round_no in range(args.rounds):
            labels = list(runs)
            for label in labels[round_no % len(labels) :] + labels[: round_no % len(labels)]:
                times[label].append(runs[label]())
    finally:
        subprocess.run([*base, "down"], check=True, stdout=subprocess.DEVNULL)
    times[f"llmctl up {NAME} (whole command)"] = whole
    report(times, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
