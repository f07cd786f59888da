"""Running the gateway so that a new config takes effect without dropping a request.

LiteLLM without its database reads its model list once, at start. A restart refuses
connections for its whole start-up (7-18 s here), so `llmctl-gateway.service` runs LiteLLM
blue/green instead (see shared/reference/gateway-reload.md for the measurements):

* `llmctl-gateway.socket` holds the listening socket for as long as the stack is up; while no
  process accepts, connections wait in its queue instead of being refused.
* The service's main process is the **supervisor** (`llmctl gateway serve`, llmctl's own
  python). It never accepts a connection itself: it runs LiteLLM as a child process, a
  *generation*, on an inherited copy of the socket, and on SIGHUP starts generation N+1 with a
  fresh snapshot of gateway.yaml, waits until it is ready, then stops N.
* The **child** (`child.py`, run by the LiteLLM venv's python, imports nothing from llmctl)
  serves LiteLLM's ASGI app with uvicorn on that socket and, when stopped, *drains*: it stops
  accepting, answers with `Connection: close`, and waits until its connections are gone.
* `llmctl gateway reload-wait` is the unit's ExecReload=: it sends SIGHUP and waits for the
  outcome in the supervisor's state file, so `systemctl --user reload` is synchronous and fails
  when the new config fails (systemd 252 has no Type=notify-reload).

The supervisor publishes which generation serves, with which config, and how the last reload
went, in ``$XDG_RUNTIME_DIR/llmctl-gateway/state.json`` (`state_file`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

RUNTIME_DIR_NAME = "llmctl-gateway"  # RuntimeDirectory= of the unit, under $XDG_RUNTIME_DIR
STATE_FILE_NAME = "state.json"
CHILD_SCRIPT = Path(__file__).resolve().parent / "child.py"
# LiteLLM's custom_auth (401 for any key but the master key); the child puts its directory on
# LiteLLM's sys.path, and gateway.yaml names it.
LITELLM_HOOKS_DIR = Path(__file__).resolve().parent / "litellm_hooks"
AUTH_HOOK = "llmctl_gateway_auth.user_api_key_auth"
# The one REDIS_* variable LiteLLM gets from llmctl (the gateway unit's Environment=, with
# gateway.cache). LiteLLM reads every REDIS_<redis-py argument> it finds (REDIS_SSL, REDIS_DB,
# REDIS_URL ...) into its Redis client: the children get no other, so a REDIS_URL meant for
# something else in the user's environment never reaches llmctl's cache.
REDIS_BREAKER_VARIABLE = "REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT"
LLMCTL_REDIS_VARIABLES = frozenset({REDIS_BREAKER_VARIABLE})
BACKLOG = 4096  # Backlog= of the socket unit; the child's listen() call keeps it

# Bounds, in seconds. A reload takes at most READY + STOP; the unit's TimeoutStartSec= (which
# systemd also applies to ExecReload=) must be longer, and TimeoutStopSec= longer than STOP.
CHILD_READY_TIMEOUT = 110  # a new generation must be ready within this (start-up is 6-23 s here)
DRAIN_TIMEOUT = 30  # a stopping child waits this long for its connections to go...
GRACEFUL_TIMEOUT = 10  # ...then uvicorn's own shutdown waits this long for requests in flight
CHILD_STOP_TIMEOUT = DRAIN_TIMEOUT + GRACEFUL_TIMEOUT + 15  # then the supervisor sends SIGKILL
RELOAD_WAIT_TIMEOUT = CHILD_READY_TIMEOUT + CHILD_STOP_TIMEOUT + 5

# Test-only switch (tests/integration/test_gateway_reload.py): "0" turns the child's drain off,
# to show that keep-alive clients then fail.
DRAIN_ENV = "LLMCTL_GATEWAY_DRAIN"


def state_file(env: Mapping[str, str] | None = None) -> Path | None:
    """Where the running gateway's supervisor publishes its state (None without XDG_RUNTIME_DIR)."""
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR", "")
    return Path(runtime) / RUNTIME_DIR_NAME / STATE_FILE_NAME if runtime.startswith("/") else None
