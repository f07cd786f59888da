"""A `vllm` program for the integration tests, where the real one cannot run (no GPU).

`vllm serve MODEL --host H --port P --served-model-name NAME [--enable-sleep-mode] ...`, the
command line llmctl renders, served by `tests.backends.standins.VllmStandIn` (contract-tested
against vLLM's documented behaviour in tests/backends/test_vllm_contract.py) until SIGTERM.
Dev mode (the sleep endpoints) follows VLLM_SERVER_DEV_MODE and the key VLLM_API_KEY, as in
vLLM. The tests install it as an executable with `install_fake_vllm`.

There is no GPU either, so a test may describe one in a file (`llmctl gpus --json` shape,
passed to llmctl as --gpu-inventory) and set FAKE_GPU_INVENTORY=FILE and FAKE_GPU_UNIT=UNIT in
the backend's environment: /sleep then moves that unit's process's memory to free, less
SLEEP_RESIDUAL (what a sleeping vLLM keeps), and /wake_up takes it back, as NVML would show.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from tests.integration.fake_programs import install_fake


def install_fake_vllm(directory: Path) -> Path:
    """An executable `vllm` in `directory` that runs this module with this interpreter."""
    return install_fake(directory, "vllm", "tests.integration.fake_vllm")


SLEEP_RESIDUAL = 1 << 30


def move_memory(inventory: Path, unit: str, asleep: bool, awake_bytes: dict[int, int]) -> None:
    """Rewrite the described GPUs as NVML would read them after a sleep or a wake-up
    (`awake_bytes`: what the process held awake, per GPU index, remembered at the first sleep)."""
    data = json.loads(inventory.read_text())
    for gpu in data["gpus"]:
        for proc in gpu["processes"]:
            if proc.get("unit") != unit:
                continue
            held = awake_bytes.setdefault(gpu["index"], proc["used_bytes"])
            now = SLEEP_RESIDUAL if asleep else held
            delta = proc["used_bytes"] - now
            proc["used_bytes"] = now
            gpu["free_bytes"] += delta
            gpu["used_bytes"] -= delta
    tmp = inventory.with_suffix(".fake-vllm")
    tmp.write_text(json.dumps(data))
    tmp.replace(inventory)


def main(argv: list[str]) -> int:
    from tests.backends.standins import Reply, Request, VllmStandIn  # noqa: PLC0415

    inventory = os.environ.get("FAKE_GPU_INVENTORY")
    unit = os.environ.get("FAKE_GPU_UNIT", "")

    awake_bytes: dict[int, int] = {}

    class FakeVllm(VllmStandIn):
        def handle(self, request: Request) -> Reply:
            reply = super().handle(request)
            described = inventory is not None and Path(inventory).is_file()
            if described and reply.status == 200 and request.path in ("/sleep", "/wake_up"):
                move_memory(Path(str(inventory)), unit, request.path == "/sleep", awake_bytes)
            return reply

    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--enable-sleep-mode", action="store_true")
    args, _ = parser.parse_known_args(argv)
    served = args.served_model_name or args.model
    dev_mode = args.enable_sleep_mode and os.environ.get("VLLM_SERVER_DEV_MODE") == "1"
    stop = signal.Signals.SIGTERM
    signal.pthread_sigmask(signal.SIG_BLOCK, {stop, signal.SIGINT})
    with FakeVllm(served, root=args.model, api_key=os.environ.get("VLLM_API_KEY"), dev_mode=dev_mode,
                     port=args.port):  # fmt: skip
        print(f"fake vllm: serving {served} on 127.0.0.1:{args.port} (sleep mode {dev_mode})", flush=True)
        signal.sigwait({stop, signal.SIGINT})
    print("fake vllm: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
