"""wait_ready: ready as soon as the probe says so, gives up at once when the process exits."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from llmctl.errors import LlmctlError
from llmctl.readiness import wait_ready


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


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
