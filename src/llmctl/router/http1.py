"""Just enough HTTP/1.1 for a forwarding proxy on loopback: heads, bodies, relays.

The router sits between LiteLLM and the backends and never looks inside a body: it reads a
request (head and body, so it can wait for a model to load before sending anything), sends it
upstream with `Connection: close` (the upstream's end of the response is then its EOF, whatever
the framing), and relays the response as it arrives, chunk by chunk, so a stream reaches the
client token by token. The client's connection stays open between requests (keep-alive): the
response is re-framed only as far as needed to know where it ends.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024  # request line and headers; LiteLLM sends a few hundred bytes
MAX_BODY = 64 * 1024 * 1024  # prompts with long contexts or images, not uploads
RELAY_CHUNK = 64 * 1024
# Headers about one connection, not the message (RFC 9110 7.6.1): never passed on.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.1 we can handle; answer 400 and close."""


@dataclass
class Head:
    """A request or status line and its headers, names lower-cased, in order."""

    start: str  # "POST /v1/chat/completions HTTP/1.1" or "HTTP/1.1 200 OK"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.get("transfer-encoding") or "").lower()

    @property
    def content_length(self) -> int | None:
        value = self.get("content-length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise ProtocolError(f"bad Content-Length {value!r}")
        return int(value)

    def wants_close(self) -> bool:
        connection = (self.get("connection") or "").lower()
        return "close" in connection or (self.start.endswith("HTTP/1.0") and "keep-alive" not in connection)


@dataclass
class Request:
    method: str
    target: str
    head: Head
    body: bytes


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next head, or None at a clean EOF before any byte of one."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise ProtocolError("connection closed inside a header") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"header longer than {MAX_HEAD} bytes") from None
    lines = raw.decode("latin-1").split("\r\n")
    head = Head(start=lines[0])
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:80]!r}")
        head.headers.append((name.lower(), value.strip()))
    return head


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    head = await read_head(reader)
    if head is None:
        return None
    parts = head.start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError(f"bad request line {head.start[:80]!r}")
    if head.chunked:
        body = await _read_chunked(reader)
    else:
        length = head.content_length or 0
        if length > MAX_BODY:
            raise ProtocolError(f"body of {length} bytes is over {MAX_BODY}")
        body = await reader.readexactly(length) if length else b""
    return Request(method=parts[0], target=parts[1], head=head, body=body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers: dropped
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > MAX_BODY:
            raise ProtocolError(f"body over {MAX_BODY} bytes")


def upstream_request(request: Request, path: str, host: str, key: str | None = None) -> bytes:
    """The request as the backend gets it: its own path, its Host, one request per connection,
    and the backend's own key (`key`) instead of the router's, which is never passed on."""
    lines = [f"{request.method} {path} HTTP/1.1", f"Host: {host}"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    for name, value in request.head.headers:
        if name in HOP_BY_HOP or name in {"host", "content-length", "authorization"}:
            continue
        lines.append(f"{name}: {value}")
    lines += [f"Content-Length: {len(request.body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + request.body


def status_of(head: Head) -> int:
    parts = head.start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {head.start[:80]!r}")
    return int(parts[1])


async def relay_response(
    head: Head, upstream: asyncio.StreamReader, client: asyncio.StreamWriter, *, keep_alive: bool
) -> bool:
    """Send the upstream's response to the client as it arrives. Returns whether the client's
    connection can carry another request (it cannot when the response ends only at EOF)."""
    status = status_of(head)
    no_body = status in {204, 304} or 100 <= status < 200
    length = None if head.chunked else head.content_length
    to_eof = not no_body and not head.chunked and length is None
    keep = keep_alive and not to_eof
    out = [head.start]
    out += [f"{k}: {v}" for k, v in head.headers if k not in HOP_BY_HOP]
    if head.chunked:
        out.append("Transfer-Encoding: chunked")
    out += [f"Connection: {'keep-alive' if keep else 'close'}", "", ""]
    client.write("\r\n".join(out).encode("latin-1"))
    if no_body:
        pass
    elif head.chunked:
        await _relay_chunked(upstream, client)
    elif length is not None:
        await _relay_exactly(upstream, client, length)
    else:
        while data := await upstream.read(RELAY_CHUNK):
            client.write(data)
            await client.drain()
    await client.drain()
    return keep


async def _relay_exactly(upstream: asyncio.StreamReader, client: asyncio.StreamWriter, length: int) -> None:
    left = length
    while left:
        data = await upstream.read(min(left, RELAY_CHUNK))
        if not data:
            raise ConnectionResetError("upstream closed before the end of the body")
        client.write(data)
        left -= len(data)
        await client.drain()


async def _relay_chunked(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    """Chunk by chunk, each sent on at once: a streamed token is one small chunk."""
    while True:
        size_line = await upstream.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"upstream sent a bad chunk size {size_line[:40]!r}") from None
        client.write(size_line)
        if size == 0:
            while (line := await upstream.readuntil(b"\r\n")) != b"\r\n":
                client.write(line)
            client.write(b"\r\n")
            return
        await _relay_exactly(upstream, client, size + 2)  # the data and its CRLF


def json_response(status: int, body: object, *, keep_alive: bool = True, reason: str = "") -> bytes:
    data = json.dumps(body).encode()
    lines = [
        f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Status')}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1") + data


def openai_error(status: int, message: str, code: str) -> bytes:
    """OpenAI's error shape: LiteLLM passes the message on, and clients show it."""
    return json_response(status, {"error": {"message": message, "type": code, "param": None, "code": code}})


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable", 409: "Conflict"}
