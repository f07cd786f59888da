"""wait_ready: ready as soon as the probe says so, gives up at once when the process exits."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from llmctl.errors import LlmctlError
from llmctl.readiness import wait_ready
from tests.conftest import FakeClock


def llama_server(statuses: list[int]) -> httpx.Client:
    """A llama-server that answers /health with the given statuses, then 200."""
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            status = statuses[len(seen)] if len(seen) < len(statuses) else 200
            seen.append(status)
            return httpx.Response(
                status, json={"status": "ok"} if status == 200 else {"error": {"code": 503}}
            )
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "tiny"}]})
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_ready_after_loading() -> None:
    clock = FakeClock()
    result = wait_ready(
        "llama-server",
        "http://x",
        "tiny",
        60,
        client=llama_server([503, 503, 503]),
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.attempts == 4
    assert result.probe.detail == "/health 200"
    assert clock.now < 1.0  # 50 ms, doubling: a quick server is seen quickly


def test_wrong_model_is_not_ready() -> None:
    clock = FakeClock()
    with pytest.raises(
        LlmctlError, match=r"not ready after 10 s \(last probe: serves \['tiny'\], not other\)"
    ):
        wait_ready(
            "llama-server", "http://x", "other", 10, client=llama_server([]), clock=clock, sleep=clock.sleep
        )


def test_gives_up_at_once_when_the_process_exits() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    clock = FakeClock()
    with pytest.raises(LlmctlError, match=f"the server process {dead.pid} exited before it was ready"):
        wait_ready(
            "llama-server", "http://x", "tiny", 300, pid=dead.pid, client=llama_server([503] * 100),
            clock=clock, sleep=clock.sleep,
        )  # fmt: skip
    assert clock.now < 1.0


def test_gateway_readiness() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200 if request.url.path == "/health/readiness" else 404, json={"status": "healthy"}
        )

    client = httpx.Client(transport=httpx.MockTransport(handler))
    assert wait_ready("gateway", "http://x", None, 5, client=client).probe.detail == "/health/readiness 200"


def test_unknown_kind() -> None:
    with pytest.raises(LlmctlError, match="unknown kind"):
        wait_ready("tgi", "http://x", None, 5)


def test_a_zombie_or_reaped_process_is_not_alive() -> None:
    import os  # noqa: PLC0415

    from llmctl.readiness import process_alive  # noqa: PLC0415

    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Not reaped yet: once it exits it is a zombie (state Z), which must count as gone.
    for _ in range(500):
        if not process_alive(child.pid):
            break
        import time  # noqa: PLC0415

        time.sleep(0.01)
    assert not process_alive(child.pid)
    child.wait()
    assert not process_alive(child.pid)


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llmctl", "wait-ready", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_gate_fails_with_the_cli_error_format_when_nothing_listens() -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        result = gate("--kind", "llama-server", "--url", f"http://127.0.0.1:{port}", "--timeout", "0.3")
    assert result.returncode == 1
    assert "llmctl: error: llama-server at" in result.stderr
    assert "was not ready after 0 s (last probe: connection refused)" in result.stderr


def test_the_gate_probes_without_click_httpx_psutil_or_pydantic() -> None:
    """The gate runs at every unit start; its imports are its start-up time. Checked on a real
    probe of a real (stand-in) vLLM, not just --help: httpx would pull click in on first use."""
    from tests.backends.standins import VllmStandIn  # noqa: PLC0415

    with VllmStandIn("tiny") as server:
        result = gate("--kind", "vllm", "--url", server.url, "--model", "tiny", "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ready after ")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "llmctl.readiness" in imported
    assert "llmctl.backends.http" in imported
    assert not {"click", "httpx", "psutil", "pydantic", "jinja2", "gguf", "numpy"} & imported


def test_bad_gate_arguments_are_usage_errors() -> None:
    result = gate("--kind", "llama-server")
    assert result.returncode == 2
    assert "--url" in result.stderr
    result = gate("--kind", "llama-server", "--url", "http://x", "--timeout", "-1")
    assert result.returncode == 2
    result = gate("--kind", "tgi", "--url", "http://x")
    assert result.returncode == 2
    assert "unknown kind 'tgi'" in result.stderr


def test_the_gate_looks_every_5_ms_at_first_then_backs_off_as_the_rest_does() -> None:
    from llmctl.readiness import gate_interval, poll_interval  # noqa: PLC0415

    assert gate_interval(0.0) == gate_interval(0.49) == 0.005
    assert gate_interval(0.5) == poll_interval(0.5) == 0.02
    assert gate_interval(60) == poll_interval(60) == 0.5
