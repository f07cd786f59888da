"""llmctl's router: every configured local model routed at all times, loaded when asked for.

With `gateway.on_demand: true`, LiteLLM's routes never change with what is loaded: each local
model id is routed to a stable loopback address of its own, `http://127.0.0.1:PORT/m/ID/...`,
served by this router (`llmctl-router.service`, its port held by `llmctl-router.socket`, so a
connection waits in the socket's queue while the router restarts). The router knows which
model each backend has loaded, because it is the one that loads them: a request for a loaded
model is forwarded to its backend; one for a model that is not loaded waits while the router
drains and swaps (llmctl.router.scheduler); one that cannot be served gets a 503 that names the
reason (LiteLLM then tries the model's fallbacks). A model id therefore reaches only a server
that has that model loaded, by construction: nothing else changes what a backend serves while
the router runs (`llmctl switch` asks the router to do it).

Modules: `http1` (the forwarding), `scheduler` (the policy), `loader` (starting and stopping
servers through llmctl's switch), `server` (the process), `client` (what the CLI asks it).
"""

from __future__ import annotations

from urllib.parse import quote, unquote

ROUTER_UNIT = "llmctl-router.service"
ROUTER_SOCKET = "llmctl-router.socket"
ROUTER_NAME = "router"
MODEL_PREFIX = "/m/"
CONTROL_PREFIX = "/_llmctl/"


def model_path(model_id: str) -> str:
    """The path prefix of one model's address; ids may hold '/' and ':' (quoted)."""
    return MODEL_PREFIX + quote(model_id, safe="")


def split_target(target: str) -> tuple[str, str] | None:
    """'/m/ID/v1/chat/completions' -> ('ID', '/v1/chat/completions'); None if not a model path."""
    if not target.startswith(MODEL_PREFIX):
        return None
    quoted, sep, rest = target[len(MODEL_PREFIX) :].partition("/")
    if not quoted:
        return None
    return unquote(quoted), "/" + rest if sep else "/"
