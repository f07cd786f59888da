"""`Authorization: Bearer` for llmctl's own requests to backends started with an API key.

vLLM started with a key (`api_key: true`) answers 401 on /v1/* without it (/health and the
sleep endpoints never need it). Every probe client (`probe_client`, the supervisor's) carries
this auth (probes through `llmctl.backends.http.LoopbackClient` and its `KeyRing`, the
supervisor's httpx client through `BackendKeys`): a request to a server whose key is known
gets the header, any other goes as it is.
By default the keys are those of the installed units (`llmctl.secrets.installed_backend_keys`),
read at the first request and again when a server answers 401 (its unit was restarted with a
new key). The key is only ever put into a request header, never into a URL, log or message.

Imports httpx at module level: only the supervisor's client needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping

import httpx

from llmctl.backends.base import installed_keys
from llmctl.backends.http import KeyRing

__all__ = ["BackendKeys", "installed_keys"]


class BackendKeys(httpx.Auth):
    """The httpx form of `llmctl.backends.http.KeyRing` (the supervisor's client is httpx)."""

    def __init__(
        self, keys: Mapping[str, str] | None = None, *, load: Callable[[], Mapping[str, str]] | None = None
    ) -> None:
        self._ring = KeyRing(keys, load=load)
        self._lock = threading.Lock()  # the supervisor probes from several threads

    def _key(self, url: httpx.URL, *, reload: bool = False) -> str | None:
        with self._lock:
            return self._ring.key(str(url), reload=reload)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" in request.headers:  # the caller's own header wins
            yield request
            return
        key = self._key(request.url)
        if key is not None:
            request.headers["Authorization"] = f"Bearer {key}"
        response = yield request
        if response.status_code == 401 and self._ring.reloads:
            fresh = self._key(request.url, reload=True)
            if fresh is not None and fresh != key:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request
