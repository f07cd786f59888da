"""`gateway.cache`: LiteLLM's response cache in a Redis that llmctl runs (llmctl-redis.service).

Its own module because schema.py is near its size budget; its types come from
`llmctl.config.base`, checked the same way as the rest of the schema.

There is no password key on purpose: llmctl generates the password once into a 0600 file
(`llmctl.secrets.ensure_redis_password`), Redis reads it through an `include` of a second 0600
file, and LiteLLM through `os.environ/LLMCTL_REDIS_PASSWORD`. A password in the config would
end up in snapshots and in `llmctl config show`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from llmctl.config.base import Duration, Executable, Port, Strict

# 6379 is a system Redis's port (Debian's redis-server.service): keep clear of it.
DEFAULT_PORT = 6380
# LiteLLM talks to Redis on every cached request: with the defaults of redis-py a Redis that
# does not answer would hold a request for seconds. On loopback an answer takes well under a
# millisecond, so half a second is a generous bound that still skips a dead cache quickly.
DEFAULT_TIMEOUT = 0.5
# Redis's own syntax for sizes: 256mb, 1gb, 100000 (bytes).
MEMORY_PATTERN = r"^[1-9][0-9]{0,12}(kb|mb|gb)?$"
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class GatewayCache(Strict):
    """LiteLLM's response cache (litellm_settings.cache) in a Redis llmctl runs on loopback as
    llmctl-redis.service: a second identical request is answered from Redis, without the model.
    Its password is generated into a 0600 file (redis.env), never written in the config."""

    type: Literal["redis"] = Field(description="The cache's kind; only redis for now.")
    command: Executable = Field(
        default="redis-server", description="The Redis server executable (Debian: redis-server)."
    )
    port: Port = Field(
        default=DEFAULT_PORT,
        description="Loopback port Redis listens on (6380: clear of a system Redis on 6379).",
    )
    ttl: Duration = Field(
        default=3600.0, description="How long an answer stays in the cache (seconds or 90s/10m/2h)."
    )
    mode: Literal["default_on", "default_off"] = Field(
        default="default_on",
        description="LiteLLM's cache mode: default_on caches every request; default_off only those "
        'that ask for it ("cache": {"use-cache": true} in the request body).',
    )
    namespace: Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN)] | None = Field(
        default=None, description="Prefix of LiteLLM's cache keys in Redis; unset: none."
    )
    maxmemory: Annotated[str, StringConstraints(pattern=MEMORY_PATTERN)] = Field(
        default="256mb",
        description="Redis's maxmemory (e.g. 256mb, 1gb); beyond it the least recently used "
        "answers are evicted (allkeys-lru).",
    )
    timeout: Annotated[float, Field(gt=0, le=30)] = Field(
        default=DEFAULT_TIMEOUT,
        description="Seconds LiteLLM waits for Redis (connect and each command) before it "
        "answers without the cache.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and ({"password", "requirepass"} & data.keys()):
            # Not echoed back: it may be a real password.
            raise ValueError(
                "takes no password: llmctl generates one into a file of mode 0600 (redis.env beside "
                "gateway.yaml) and hands it to Redis and LiteLLM itself"
            )
        return data
