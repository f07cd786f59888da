"""What the supervisor asks of a running backend, and the generic parts of asking.

Each adapter (`Adapter.liveness`, `deep_probe`, `activity`) says what its kind answers: the
cheap path that proves the server is alive, the probe that proves it still infers, and the
work counters that prove it is making progress while it is too busy to answer. This module
holds what they share: a request with its own timeout, the one-token completion, and reading
Prometheus text. The supervisor (`llmctl.supervisor.probes`) keeps only the scheduling and
the judgement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmctl.backends.http import HttpResponse, ProbeHttp

PROMPT = "Hello"


@dataclass(frozen=True)
class Check:
    """One probe's answer (liveness, startup or deep)."""

    ok: bool
    detail: str
    latency_ms: float | None = None
    loading: bool = False  # the server says it is (re)loading its model
    skipped: bool = False  # a deep probe that could not run (no model loaded, asleep, needs a key)
    timed_out: bool = False  # no answer within the timeout (not refused, not an error status)


@dataclass(frozen=True)
class Activity:
    """A server's work counters at one moment: requests in flight and token counts so far.

    `in_flight` is None when the counters could not be read (`detail` says why). `counters`
    are compared between two readings: they move while the server prefills or generates.
    """

    in_flight: int | None
    counters: tuple[int, ...] = ()
    detail: str = ""


def timed_request(
    client: ProbeHttp, method: str, url: str, timeout: float, body: dict[str, Any] | None = None
) -> tuple[HttpResponse | None, float, str, bool]:
    """(response or None, latency ms, error text, whether it timed out)."""
    from llmctl.backends.http import short_error, transport_errors  # noqa: PLC0415

    start = time.monotonic()
    try:
        response = client.request(method, url, json=body, timeout=timeout)
    except transport_errors() as exc:
        error = short_error(exc)
        latency = (time.monotonic() - start) * 1000
        if error == "timed out":
            return None, latency, f"timed out after {timeout:g} s", True
        return None, latency, error, False
    return response, (time.monotonic() - start) * 1000, "", False


def get_check(client: ProbeHttp, url: str, path: str, timeout: float) -> tuple[HttpResponse | None, Check]:
    """GET url+path: the response and a Check that is ok on 200 (callers refine other codes)."""
    response, latency, error, timed_out = timed_request(client, "GET", url + path, timeout)
    if response is None:
        return None, Check(False, f"GET {path}: {error}", latency, timed_out=timed_out)
    if response.status_code == 200:
        return response, Check(True, f"GET {path} 200", latency)
    return response, Check(False, f"GET {path} answered {response.status_code}", latency)


def json_object(response: HttpResponse) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def judge_answer(
    response: HttpResponse | None,
    latency: float,
    error: str,
    timed_out: bool,
    what: str,
    good: Callable[[dict[str, Any]], bool],
) -> Check:
    if response is None:
        return Check(False, f"the {what} failed: {error}", latency, timed_out=timed_out)
    if response.status_code in (401, 403):
        # A key llmctl does not manage: nothing to test, and no reason to restart.
        return Check(True, f"the {what} needs the API key: not tested", latency, skipped=True)
    if response.status_code != 200:
        return Check(False, f"the {what} answered {response.status_code}: {response.text[:120]}", latency)
    if not good(json_object(response)):
        return Check(False, f"the {what} answered 200 without a result", latency)
    return Check(True, f"the {what} answered in {latency:.0f} ms", latency)


def one_token_completion(client: ProbeHttp, url: str, model: str | None, timeout: float) -> Check:
    """The OpenAI-style deep probe: `/v1/completions` for one token."""
    body = {"model": model or "default", "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    response, latency, error, timed_out = timed_request(
        client, "POST", url + "/v1/completions", timeout, body
    )
    return judge_answer(
        response, latency, error, timed_out, "one-token completion", lambda d: bool(d.get("choices"))
    )


def prometheus_values(text: str, names: Iterable[str]) -> dict[str, float]:
    """The value of each named metric in Prometheus text, summed over its label sets."""
    wanted = set(names)
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, rest = line.partition(" ")
        name = head.split("{", 1)[0]
        if "{" in head and "}" not in head:
            # Label values may hold spaces: the sample's value follows the closing brace.
            labels_end = line.find("} ")
            if labels_end < 0:
                continue
            name, rest = line[: line.find("{")], line[labels_end + 2 :]
        if name not in wanted:
            continue
        try:
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        found[name] = found.get(name, 0.0) + value
    return found
