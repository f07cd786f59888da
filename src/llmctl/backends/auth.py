"""`Authorization: Bearer` for llmctl's own requests to backends started with an API key.

vLLM started with a key (`api_key: true`) answers 401 on /v1/* without it (/health and the
sleep endpoints never need it). Every probe client (`probe_client`, the supervisor's) carries
this auth: a request to a server whose key is known gets the header, any other goes as it is.
By default the keys are those of the installed units (`llmctl.secrets.installed_backend_keys`),
read at the first request and again when a server answers 401 (its unit was restarted with a
new key). The key is only ever put into a request header, never into a URL, log or message.

Imports httpx at module level: import it only where a client is built.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Mapping

import httpx

Origin = tuple[bytes, bytes, int | None]
RELOAD_INTERVAL = 1.0  # a server that keeps answering 401 does not make every request read files


def origin(url: str | httpx.URL) -> Origin:
    """Scheme, host and port: what makes two URLs the same server."""
    parsed = httpx.URL(url)
    return parsed.raw_scheme, parsed.raw_host, parsed.port


class BackendKeys(httpx.Auth):
    """Bearer keys by server: given ({base URL: key}), or loaded on first use by `load`."""

    def __init__(
        self, keys: Mapping[str, str] | None = None, *, load: Callable[[], Mapping[str, str]] | None = None
    ) -> None:
        self._load = load
        self._keys: dict[Origin, str] | None = None if keys is None else self._index(keys)
        self._lock = threading.Lock()  # the supervisor probes from several threads
        self._loaded_at = float("-inf")

    @staticmethod
    def _index(keys: Mapping[str, str]) -> dict[Origin, str]:
        return {origin(url): key for url, key in keys.items() if key}

    def _key(self, url: httpx.URL, *, reload: bool = False) -> str | None:
        with self._lock:
            now = time.monotonic()
            stale = reload and now - self._loaded_at >= RELOAD_INTERVAL
            if self._load is not None and (self._keys is None or stale):
                self._keys = self._index(self._load())
                self._loaded_at = now
            return (self._keys or {}).get(origin(url))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" in request.headers:  # the caller's own header wins
            yield request
            return
        key = self._key(request.url)
        if key is not None:
            request.headers["Authorization"] = f"Bearer {key}"
        response = yield request
        if response.status_code == 401 and self._load is not None:
            fresh = self._key(request.url, reload=True)
            if fresh is not None and fresh != key:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request


def installed_keys() -> dict[str, str]:
    """The keys of the installed backend units, for the user llmctl runs as."""
    from llmctl.paths import Paths  # noqa: PLC0415
    from llmctl.secrets import installed_backend_keys  # noqa: PLC0415

    return installed_backend_keys(Paths.from_env())
