"""HTTP stand-ins for programs that cannot run here (no GPU, no Ollama binary): vLLM and Ollama.

Each is a real `ThreadingHTTPServer` on 127.0.0.1 (a real socket, so the adapters' real httpx
code runs) that replays the documented responses and status codes on a scripted timeline.
The facts come from shared/reference/backends.md (beside the checkout) (sections 1, 4, 8, 9) and, where noted,
from the programs' sources; each class says which behaviour it emulates.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"

    @staticmethod
    def json(status: int, value: Any) -> Reply:
        return Reply(status, json.dumps(value).encode())


class _Server(ThreadingHTTPServer):
    standin: StandIn

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the host's FQDN (DNS); the address is enough.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = Request(
            method=method,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        reply = self.server.standin.serve(request)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StandIn:
    """The socket is bound at once (the port is known and reserved) but listens only after
    `listen_after` seconds (None: when `listen()` is called): until then a connect is refused,
    which is exactly what a bound-but-not-listening socket does."""

    def __init__(self, listen_after: float | None = 0.0, *, port: int = 0) -> None:
        self._server = _Server(("127.0.0.1", port), _Handler, bind_and_activate=False)
        self._server.standin = self
        self._server.server_bind()
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._listen_after = listen_after
        self._timer: threading.Timer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self._listen_after == 0:
            self.listen()
        elif self._listen_after is not None:
            self._timer = threading.Timer(self._listen_after, self.listen)
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def listen(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._server.server_activate()
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join()
        self._server.server_close()

    def serve(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self.handle(request)

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# vLLM (`vllm serve`), reference section 4.


class VllmStandIn(StandIn):
    """Emulates:
    - start-up: the port is bound but not listening until the engine is ready, so connections
      are refused while "loading"; there is no 503 loading phase (4.2);
    - GET /health: 200 with an empty body; 503 once the engine died (`kill_engine`) (4.3);
    - GET /v1/models: {"object": "list", "data": [{"id": served name, "owned_by": "vllm", "root",
      "max_model_len", ...}]} (4.3);
    - POST /v1/completions and /v1/chat/completions: a one-token OpenAI answer (4.3);
    - auth: with an API key, /v1/* needs `Authorization: Bearer KEY`, else 401
      {"error": "Unauthorized"}; /health and the sleep endpoints never do (4.3);
    - sleep mode: POST /sleep?level=1|2, POST /wake_up, GET /is_sleeping -> {"is_sleeping": b},
      only in dev mode (VLLM_SERVER_DEV_MODE=1), FastAPI's 404 otherwise; /wake_up answers an
      empty 200 (older releases) or {"status": "awake", ...} (newer) (4.4).
    """

    def __init__(
        self,
        served_name: str,
        *,
        root: str = "/models/weights",
        max_model_len: int = 8192,
        load_time: float | None = 0.0,
        api_key: str | None = None,
        dev_mode: bool = False,
        wake_up_json: bool = False,
        port: int = 0,
    ) -> None:
        super().__init__(listen_after=load_time, port=port)
        self.served_name, self.root, self.max_model_len = served_name, root, max_model_len
        self.api_key, self.dev_mode, self.wake_up_json = api_key, dev_mode, wake_up_json
        self.engine_dead = False
        self.sleep_level = 0

    def kill_engine(self) -> None:
        self.engine_dead = True

    def handle(self, request: Request) -> Reply:
        path, method = request.path, request.method
        not_found = Reply.json(404, {"detail": "Not Found"})
        authorized = request.headers.get("authorization") == f"Bearer {self.api_key}"
        if path.startswith("/v1") and self.api_key is not None and not authorized:
            return Reply.json(401, {"error": "Unauthorized"})
        if (method, path) == ("GET", "/health"):
            return Reply(503 if self.engine_dead else 200)
        if (method, path) == ("GET", "/v1/models"):
            card = {
                "id": self.served_name,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "vllm",
                "root": self.root,
                "parent": None,
                "max_model_len": self.max_model_len,
                "permission": [],
            }
            return Reply.json(200, {"object": "list", "data": [card]})
        if (method, path) == ("POST", "/v1/completions"):
            return Reply.json(200, {"object": "text_completion", "choices": [{"index": 0, "text": "!"}]})
        if (method, path) == ("POST", "/v1/chat/completions"):
            message = {"role": "assistant", "content": "!"}
            return Reply.json(
                200, {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
            )
        if path in ("/sleep", "/wake_up", "/is_sleeping"):
            if not self.dev_mode:
                return not_found
            if (method, path) == ("POST", "/sleep"):
                self.sleep_level = int(request.query.get("level", ["1"])[0])
                return Reply(200)
            if (method, path) == ("POST", "/wake_up"):
                self.sleep_level = 0
                awake = {"status": "awake", "tags_woken": None}
                return Reply.json(200, awake) if self.wake_up_json else Reply(200)
            if (method, path) == ("GET", "/is_sleeping"):
                return Reply.json(200, {"is_sleeping": self.sleep_level > 0})
            return Reply.json(405, {"detail": "Method Not Allowed"})
        return not_found


# --------------------------------------------------------------------------------------------
# Ollama (`ollama serve`), reference section 1.


@dataclass(frozen=True)
class OnDisk:
    """A pulled model, as /api/tags lists it."""

    name: str  # with its tag, e.g. "llama3.1:8b"
    size: int = 4_920_753_328
    capabilities: tuple[str, ...] = ("completion",)  # ("embedding",) for embedding models
    family: str = "llama"
    vram_fraction: float = 1.0  # share of it on the GPU once loaded


@dataclass
class _Loaded:
    model: OnDisk
    expires_at: datetime
    gone_at: float | None = None  # monotonic time the asynchronous unload completes


_FOREVER = datetime(2318, 8, 30, tzinfo=UTC)  # where Go's maximal Duration lands
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_seconds(text: str) -> float:
    """time.ParseDuration, as Ollama applies it to a keep_alive JSON string."""
    if text in ("0", "+0", "-0"):
        return 0.0
    match = re.fullmatch(r"([-+]?)((?:[0-9]*\.?[0-9]+(?:ns|us|µs|ms|s|m|h))+)", text)
    if not match:
        raise ValueError(f'time: missing unit in duration "{text}"')
    total = sum(float(n) * _GO_UNIT[u] for n, u in re.findall(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)", text))
    return -total if match.group(1) == "-" else total


def _go_time(moment: datetime) -> str:
    # Go's RFC 3339 with nanoseconds and the local offset: 2026-08-21T10:05:00.123456789+02:00
    text = moment.astimezone().isoformat(timespec="microseconds")
    return f"{text[:-6]}789{text[-6:]}"


def _canonical(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _local_host(host_header: str) -> bool:
    host = urlsplit(f"//{host_header}").hostname or ""
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


class OllamaStandIn(StandIn):
    """Emulates:
    - answering at once, no model loaded at start (1.4, 8);
    - GET|HEAD / -> "Ollama is running"; /api/version -> {"version": ...}; /api/tags (on disk);
      /api/ps (loaded: name, model, size, size_vram, expires_at, ..., longest expiry first) (1.4);
    - POST /api/generate {"model": M, "keep_alive": K} with no prompt loads M and answers
      done_reason "load"; keep_alive 0 answers done_reason "unload" AT ONCE but M leaves
      /api/ps only `unload_delay` seconds later (asynchronous unload, 1.5, 9.6);
    - keep_alive: a JSON number is seconds (negative: forever); a JSON string goes through Go's
      time.ParseDuration, so "300" is a 400 (api/types.go Duration.UnmarshalJSON);
    - POST /api/chat (stream false) loads M as a request does and answers one message;
    - unknown model -> 404 {"error": "model 'x' not found"}; an embedding model on /api/generate
      -> 400 "\\"x\\" does not support generate", loaded instead by an empty POST /api/embeddings
      (server/routes.go GenerateHandler, EmbeddingsHandler);
    - bound to loopback, a Host header that is not local -> 403 (allowedHostsMiddleware, 1.4).
    """

    def __init__(
        self,
        models: Sequence[OnDisk],
        *,
        unload_delay: float = 0.3,
        default_keep_alive: float = 300.0,
        version: str = "0.33.0",
        clock: Callable[[], float] = time.monotonic,
        port: int = 0,
    ) -> None:
        super().__init__(listen_after=0.0, port=port)
        self.on_disk = {_canonical(m.name): m for m in models}
        self.unload_delay, self.default_keep_alive, self.version = unload_delay, default_keep_alive, version
        self.clock = clock
        self.loaded: dict[str, _Loaded] = {}

    def _still_loaded(self) -> list[_Loaded]:
        now, wall = self.clock(), datetime.now(UTC)
        return [
            entry
            for entry in self.loaded.values()
            if (entry.gone_at is None or entry.gone_at > now) and entry.expires_at > wall
        ]

    def _load(self, name: str, keep_alive: float | None) -> None:
        seconds = self.default_keep_alive if keep_alive is None else keep_alive
        expires = _FOREVER if seconds < 0 else datetime.now(UTC) + timedelta(seconds=seconds)
        self.loaded[name] = _Loaded(self.on_disk[name], expires)

    def handle(self, request: Request) -> Reply:
        if not _local_host(request.headers.get("host", "")):
            return Reply(403, content_type="text/plain")
        route = (request.method, request.path)
        if route in (("GET", "/"), ("HEAD", "/")):
            return Reply(200, b"Ollama is running", "text/plain; charset=utf-8")
        if route in (("GET", "/api/version"), ("HEAD", "/api/version")):
            return Reply.json(200, {"version": self.version})
        if route == ("GET", "/api/tags"):
            return Reply.json(200, {"models": [self._tag(m) for m in self.on_disk.values()]})
        if route == ("GET", "/api/ps"):
            entries = sorted(self._still_loaded(), key=lambda e: e.expires_at, reverse=True)
            return Reply.json(200, {"models": [self._ps(e) for e in entries]})
        if route in (("POST", "/api/generate"), ("POST", "/api/embeddings")):
            return self._generate(request)
        if route == ("POST", "/api/chat"):
            return self._chat(request)
        return Reply(404, b"404 page not found", "text/plain")

    def _chat(self, request: Request) -> Reply:
        """Non-streaming /api/chat (what LiteLLM's ollama_chat sends with stream false): loads the
        model as Ollama does on demand, answers one assistant message (docs/api.md, chat)."""
        body = request.body if isinstance(request.body, dict) else {}
        asked = str(body.get("model", ""))
        name = _canonical(asked)
        if name not in self.on_disk:
            return Reply.json(404, {"error": f"model '{asked}' not found"})
        if "completion" not in self.on_disk[name].capabilities:
            return Reply.json(400, {"error": f'"{asked}" does not support chat'})
        raw = body.get("keep_alive")
        self._load(name, float(raw) if isinstance(raw, int | float) else None)
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return Reply.json(200, {
            "model": asked, "created_at": now,
            "message": {"role": "assistant", "content": f"hello from {name}"},
            "done": True, "done_reason": "stop", "total_duration": 1_000_000, "load_duration": 500_000,
            "prompt_eval_count": len(body.get("messages") or []), "prompt_eval_duration": 100_000,
            "eval_count": 3, "eval_duration": 300_000,
        })  # fmt: skip

    def _generate(self, request: Request) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        asked = str(body.get("model", ""))
        name = _canonical(asked)
        if name not in self.on_disk:
            return Reply.json(404, {"error": f"model '{asked}' not found"})
        keep_alive: float | None = None
        raw = body.get("keep_alive")
        if isinstance(raw, int | float):
            keep_alive = float(raw)
        elif isinstance(raw, str):
            try:
                keep_alive = go_duration_seconds(raw)
            except ValueError as exc:
                return Reply.json(400, {"error": str(exc)})
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        done = {"model": asked, "created_at": now, "response": "", "done": True}
        if request.path == "/api/generate" and keep_alive == 0 and not body.get("prompt"):
            entry = self.loaded.get(name)
            if entry is not None and entry.gone_at is None:
                entry.gone_at = self.clock() + self.unload_delay  # torn down later
            return Reply.json(200, {**done, "done_reason": "unload"})
        if request.path == "/api/embeddings":
            self._load(name, keep_alive)
            return Reply.json(200, {"embedding": []})
        if "completion" not in self.on_disk[name].capabilities:
            return Reply.json(400, {"error": f'"{asked}" does not support generate'})
        self._load(name, keep_alive)
        return Reply.json(200, {**done, "done_reason": "load"})

    @staticmethod
    def _details(model: OnDisk) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": model.family,
            "families": [model.family],
            "parameter_size": "8.0B",
            "quantization_level": "Q4_K_M",
        }

    def _tag(self, model: OnDisk) -> dict[str, Any]:
        return {
            "name": _canonical(model.name),
            "model": _canonical(model.name),
            "modified_at": "2026-08-01T10:00:00.123456789+02:00",
            "size": model.size,
            "digest": "46e0c10c039e" + "0" * 52,
            "details": self._details(model),
            "capabilities": list(model.capabilities),
        }

    def _ps(self, entry: _Loaded) -> dict[str, Any]:
        model = entry.model
        in_memory = model.size + 1_073_741_824  # weights plus KV cache and graphs
        return {
            "name": _canonical(model.name),
            "model": _canonical(model.name),
            "size": in_memory,
            "digest": "46e0c10c039e" + "0" * 52,
            "details": self._details(model),
            "expires_at": _go_time(entry.expires_at),
            "size_vram": int(in_memory * model.vram_fraction),
            "context_length": 4096,
        }


@dataclass
class Recorder:
    """Collects what wait_ready reports on each probe."""

    seen: list[tuple[str, str, float]] = field(default_factory=list)

    def __call__(self, probe: Any, waited: float) -> None:
        self.seen.append((str(probe.health), probe.detail, waited))
