"""The LiteLLM child's parts that need neither uvicorn nor LiteLLM."""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path

import pytest

from llmctl.gateway_runtime import AUTH_HOOK, CHILD_SCRIPT, LITELLM_HOOKS_DIR
from llmctl.gateway_runtime.child import ConnectionClose, Message, Receive, Scope, Send

ALLOWED_IMPORTS = set(sys.stdlib_module_names) | {"__future__"}
AUTH_HOOK_FILE = LITELLM_HOOKS_DIR / (AUTH_HOOK.rsplit(".", 1)[0] + ".py")


@pytest.mark.parametrize("script", [CHILD_SCRIPT, AUTH_HOOK_FILE], ids=["child", "auth-hook"])
def test_child_and_auth_hook_import_only_the_stdlib(script: Path) -> None:
    """Both run under the LiteLLM venv's python, which has no llmctl (uvicorn/litellm: importlib)."""
    tree = ast.parse(script.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            names.add((node.module or "").split(".")[0])
    assert names and names <= ALLOWED_IMPORTS, names - ALLOWED_IMPORTS


def _respond(app: ConnectionClose, scope_type: str = "http") -> list[Message]:
    sent: list[Message] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"Connection", b"keep-alive"), (b"x", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        sent.append(message)

    app.app = inner
    asyncio.run(app({"type": scope_type}, receive, send))
    return sent


def test_connection_close_only_while_draining() -> None:
    async def unused(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError

    app = ConnectionClose(unused)
    assert _respond(app)[0]["headers"] == [(b"Connection", b"keep-alive"), (b"x", b"1")]
    app.draining = True
    start, body = _respond(app)
    assert start["headers"] == [(b"x", b"1"), (b"connection", b"close")]
    assert body == {"type": "http.response.body", "body": b"ok"}
    # Lifespan and websocket scopes pass through untouched.
    assert _respond(app, "websocket")[0]["headers"][0] == (b"Connection", b"keep-alive")
