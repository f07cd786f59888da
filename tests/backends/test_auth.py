"""Bearer keys on llmctl's own requests: only to the server the key belongs to, read lazily."""

from __future__ import annotations

import httpx
import pytest

from llmctl.backends import base, http
from llmctl.backends.auth import BackendKeys
from llmctl.backends.base import probe_client


def recording(guarded: dict[str, int] | None = None) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport that records requests; host H of `guarded` answers 401 without `Bearer sk-N`."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        # A copy: a retry sends the same request object with another header.
        seen.append(httpx.Request(request.method, request.url, headers=request.headers.copy()))
        wanted = (guarded or {}).get(request.url.host)
        if wanted is not None and request.headers.get("authorization") != f"Bearer sk-{wanted}":
            return httpx.Response(401, json={"error": "Unauthorized"})
        return httpx.Response(200, json={"data": []})

    return seen, httpx.MockTransport(handle)


def test_the_key_goes_only_to_its_own_server() -> None:
    seen, transport = recording()
    keys = BackendKeys({"http://127.0.0.1:8001": "sk-a"})
    with httpx.Client(transport=transport, auth=keys) as client:
        client.get("http://127.0.0.1:8001/v1/models")
        client.post("http://127.0.0.1:8001/v1/completions", json={})
        client.get("http://127.0.0.1:8002/v1/models")  # another port: another server
        client.get("http://localhost:8001/v1/models")  # another host name: not assumed the same
        client.get("http://127.0.0.1:8001/v1/models", headers={"Authorization": "Bearer mine"})
    assert [r.headers.get("authorization") for r in seen] == [
        "Bearer sk-a",
        "Bearer sk-a",
        None,
        None,
        "Bearer mine",
    ]


def test_installed_keys_are_read_at_the_first_request_only() -> None:
    calls = []

    def load() -> dict[str, str]:
        calls.append(1)
        return {"http://a:1": "sk-1"}

    keys = BackendKeys(load=load)
    assert calls == [], "nothing is read before a request"
    seen, transport = recording({"a": 1})
    with httpx.Client(transport=transport, auth=keys) as client:
        assert client.get("http://a:1/health").status_code == 200
        assert client.get("http://a:1/v1/models").status_code == 200
    assert len(calls) == 1
    assert [r.headers["authorization"] for r in seen] == ["Bearer sk-1", "Bearer sk-1"]


def test_a_retry_with_the_reloaded_key_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "RELOAD_INTERVAL", 0.0)
    current = {"key": "sk-1"}
    seen, transport = recording({"a": 2})
    with httpx.Client(
        transport=transport, auth=BackendKeys(load=lambda: {"http://a:1": current["key"]})
    ) as client:
        assert client.get("http://a:1/v1/models").status_code == 401  # the file still says sk-1
        current["key"] = "sk-2"  # `up` wrote a new key and restarted the server
        assert client.get("http://a:1/v1/models").status_code == 200
    # The first 401 rereads the file (same key: no retry); the second gets the new key, retried.
    assert [r.headers["authorization"] for r in seen] == ["Bearer sk-1", "Bearer sk-1", "Bearer sk-2"]


def test_reloads_after_401_are_throttled() -> None:
    calls = []

    def load() -> dict[str, str]:
        calls.append(1)
        return {}

    seen, transport = recording({"a": 9})
    with httpx.Client(transport=transport, auth=BackendKeys(load=load)) as client:
        for _ in range(5):
            assert client.get("http://a:1/v1/models").status_code == 401
    assert len(calls) == 1 and len(seen) == 5, (
        "a server that keeps refusing does not make every probe read files"
    )


def test_probe_client_reads_installed_keys_unless_given_some(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def installed() -> dict[str, str]:
        calls.append(1)
        return {}

    monkeypatch.setattr(base, "installed_keys", installed)
    with probe_client(1.0, api_keys={}) as client, pytest.raises(http.ConnectFailed):
        client.get("http://127.0.0.1:9/v1/models")  # nothing listens on the discard port
    assert calls == []
    with probe_client(1.0) as client, pytest.raises(http.ConnectFailed):
        client.get("http://127.0.0.1:9/v1/models")
    assert calls == [1]
