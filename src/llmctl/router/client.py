"""What the CLI asks a running router: its state (`status`) and a switch (`switch`)."""

from __future__ import annotations

from typing import Any

from llmctl.errors import LlmctlError

STATE_TIMEOUT = 2.0


def _url(port: int, what: str) -> str:
    return f"http://127.0.0.1:{port}/_llmctl/{what}"


def state(port: int) -> dict[str, Any] | None:
    """Per backend what is loaded, queued, in flight; None when no router answers."""
    from llmctl.backends.http import HttpError, LoopbackClient  # noqa: PLC0415

    with LoopbackClient(STATE_TIMEOUT) as client:
        try:
            response = client.get(_url(port, "state"))
        except HttpError:
            return None
    if response.status_code != 200:
        return None
    backends: dict[str, Any] = response.json().get("backends", {})
    return backends


def switch(port: int, model: str, timeout: float, key: str) -> dict[str, Any]:
    """Load `model` through the router's queue (draining first); raises on refusal or failure.
    `key`: the router's (router.env)."""
    from llmctl.backends.http import HttpError, KeyRing, LoopbackClient  # noqa: PLC0415

    url = _url(port, "switch")
    with LoopbackClient(timeout, keys=KeyRing({url: key})) as client:
        try:
            response = client.post(url, json={"model": model})
        except HttpError as exc:
            raise LlmctlError(
                f"llmctl-router did not answer the switch to {model}: {exc}",
                hint="systemctl --user status llmctl-router; llmctl logs router",
            ) from None
    body: dict[str, Any] = response.json()
    if response.status_code != 200:
        raise LlmctlError(
            f"switch to {model} failed: {body.get('error', response.text)}",
            hint="llmctl events shows the load and why it failed; llmctl runbook switch-rolled-back",
        )
    return body
