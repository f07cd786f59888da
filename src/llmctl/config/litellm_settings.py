"""`gateway.litellm`: LiteLLM's own settings, passed through into gateway.yaml, checked.

People who come to llmctl often run a LiteLLM proxy they tuned by hand. This section carries
what they tuned, in LiteLLM's own shape and names, so that `llmctl init --from-litellm` can copy
it over as it is:

    gateway:
      litellm:
        router_settings: {context_window_fallbacks: [...], retry_policy: {...}, ...}
        litellm_settings: {set_verbose: false, callbacks: [...], ...}
        general_settings: {background_health_checks: true, ...}

It is an allow-list, not an open dict: every key has a type here and a line in the config
reference, and an unknown key is refused with a "did you mean" (a typo would otherwise be
ignored by LiteLLM, which only logs a warning for an unknown router setting). Values that only
LiteLLM can judge (a callback's name, say) are checked by LiteLLM itself at `llmctl validate`
(`llmctl.gateway_runtime.config_check`).

Keys llmctl owns are refused, each with the llmctl key to use instead (each section's
`REFUSED`), and so are keys that LiteLLM reads from another section than the one they are in
(`MISPLACED`: background_health_checks is a general setting, stream_timeout a router one):

* The model list, the master key, the auth hook, the database: llmctl writes them.
* Settings that llmctl's gateway keys already set (routing_strategy, fallbacks, num_retries,
  timeout / request_timeout, cooldown_time, allowed_fails, disable_cooldowns). One rule for all
  of them: **refused, use gateway.X**. Not sugar that accepts both spellings: with two places
  for one setting, a reader of the config cannot tell which wins, and gateway.fallbacks is
  filtered to what is routed now while a raw copy would not be.
* Redis and the response cache (gateway.cache) and LiteLLM's Prometheus callback
  (gateway.litellm_metrics): their own keys, rendered with what they need around them.

Two settings that llmctl writes by default may be set here and then win: litellm_settings.
drop_params (llmctl: true) and general_settings.background_health_checks (llmctl: false; true
is refused with gateway.on_demand, where every check would load every model).

Secrets never go into gateway.yaml: a key whose name says it holds one (`*_key`, `*password`,
`*token`, `*secret`, ...) takes only `os.environ/NAME`, NAME set in secrets.env (mode 0600, read
by the gateway's unit), and any value anywhere in this section that looks like a key is refused
(`llmctl.config.secret_refs`), named by its place and never echoed.

Model ids in fallback maps and per-model policies must be in `models:`, and, like
gateway.fallbacks, are filtered to the models routed now when gateway.yaml is rendered.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from llmctl.config.base import ModelId, Strict, error_at
from llmctl.config.problems import Loc, Problem, format_loc
from llmctl.config.secret_refs import SecretRef, secrets_in

METRICS_HINT = "use gateway.litellm_metrics (llmctl serves LiteLLM's /metrics with it)"
CACHE_HINT = "use gateway.cache (llmctl renders Redis and the response cache from it)"


Count = Annotated[int, Field(ge=0, le=1000)]
PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]
CallbackName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", max_length=200)
]
FallbackMap = list[dict[ModelId, list[ModelId]]]


class PassthroughSection(Strict):
    """A passthrough section: refuses the keys llmctl owns, each with what to use instead."""

    REFUSED: ClassVar[dict[str, str]] = {}  # key -> what to use instead
    MISPLACED: ClassVar[dict[str, str]] = {}  # key -> the section LiteLLM reads it from

    @model_validator(mode="before")
    @classmethod
    def _refuse_owned(cls, data: Any) -> Any:
        if isinstance(data, dict):
            owned = [(key, f"{key} is llmctl's: {cls.REFUSED[key]}") for key in data if key in cls.REFUSED]
            owned += [
                (
                    key,
                    f"{key} is read from {cls.MISPLACED[key]}: "
                    f"use gateway.litellm.{cls.MISPLACED[key]}.{key}",
                )
                for key in data
                if key in cls.MISPLACED
            ]
            if owned:
                # Reported at the first such key's line; the message names each of them.
                raise error_at((owned[0][0],), "; ".join(message for _, message in owned))
        return data


def _one_source_each(value: FallbackMap | None) -> FallbackMap | None:
    # LiteLLM's own shape: a list of one-key maps ({model: [fallbacks]}), each with one key.
    for i, item in enumerate(value or []):
        if len(item) != 1:
            raise ValueError(f"item {i} must map exactly one model to its fallbacks (has {len(item)})")
    return value


Fallbacks = Annotated[FallbackMap, AfterValidator(_one_source_each)]


class RetryPolicy(Strict):
    """Retries by the kind of error (LiteLLM's RetryPolicy); unset: num_retries."""

    BadRequestErrorRetries: Count | None = Field(default=None, description="After a 400.")
    AuthenticationErrorRetries: Count | None = Field(default=None, description="After a 401.")
    TimeoutErrorRetries: Count | None = Field(default=None, description="After a timeout.")
    RateLimitErrorRetries: Count | None = Field(default=None, description="After a 429.")
    ContentPolicyViolationErrorRetries: Count | None = Field(
        default=None, description="After a content policy refusal."
    )
    InternalServerErrorRetries: Count | None = Field(default=None, description="After a 500.")
    ServiceUnavailableErrorRetries: Count | None = Field(default=None, description="After a 503.")
    NotFoundErrorRetries: Count | None = Field(default=None, description="After a 404.")
    DefaultRetries: Count | None = Field(default=None, description="After any other error.")


class AllowedFailsPolicy(Strict):
    """Failures a minute before a cooldown, by the kind of error (LiteLLM's AllowedFailsPolicy)."""

    BadRequestErrorAllowedFails: Count | None = Field(default=None, description="400s.")
    AuthenticationErrorAllowedFails: Count | None = Field(default=None, description="401s.")
    TimeoutErrorAllowedFails: Count | None = Field(default=None, description="Timeouts.")
    RateLimitErrorAllowedFails: Count | None = Field(default=None, description="429s.")
    ContentPolicyViolationErrorAllowedFails: Count | None = Field(
        default=None, description="Content policy refusals."
    )
    InternalServerErrorAllowedFails: Count | None = Field(default=None, description="500s.")
    ServiceUnavailableErrorAllowedFails: Count | None = Field(default=None, description="503s.")
    BadGatewayErrorAllowedFails: Count | None = Field(default=None, description="502s.")
    NotFoundErrorAllowedFails: Count | None = Field(default=None, description="404s.")


class RoutingStrategyArgs(Strict):
    """Arguments of the routing strategy (latency-based-routing: all; usage-based: ttl)."""

    ttl: PositiveSeconds | None = Field(
        default=None, description="Seconds latency or usage samples are kept."
    )
    lowest_latency_buffer: Annotated[float, Field(ge=0, le=10)] | None = Field(
        default=None, description="Deployments within this share of the lowest latency count as equal."
    )
    max_latency_list_size: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        default=None, description="Latency samples kept per deployment."
    )


class RouterSettings(PassthroughSection):
    """LiteLLM's router_settings, merged into gateway.yaml beside what llmctl sets there."""

    REFUSED: ClassVar[dict[str, str]] = {
        "model_list": "models: lists them (llmctl routes only what is served now)",
        "routing_strategy": "use gateway.routing_strategy",
        "fallbacks": "use gateway.fallbacks (a map of model id to its fallbacks)",
        "num_retries": "use gateway.num_retries",
        "timeout": "use gateway.timeout",
        "cooldown_time": "use gateway.cooldown_time",
        "allowed_fails": "use gateway.allowed_fails",
        "disable_cooldowns": "llmctl sets it with gateway.on_demand, tune gateway.cooldown_time and "
        "gateway.allowed_fails",
        "redis_host": CACHE_HINT,
        "redis_port": CACHE_HINT,
        "redis_password": CACHE_HINT,
        "redis_url": CACHE_HINT,
        "redis_db": CACHE_HINT,
        "cache_responses": CACHE_HINT,
        "cache_kwargs": CACHE_HINT,
        "caching_groups": CACHE_HINT,
    }
    MISPLACED: ClassVar[dict[str, str]] = {
        "background_health_checks": "general_settings",
        "health_check_interval": "general_settings",
        "health_check_details": "general_settings",
    }

    context_window_fallbacks: Fallbacks | None = Field(
        default=None,
        description="[{model id: [ids]}]: tried when a request is too long for the model (only "
        "those routed now).",
    )
    content_policy_fallbacks: Fallbacks | None = Field(
        default=None,
        description="[{model id: [ids]}]: tried when the model refuses on content policy (only "
        "those routed now).",
    )
    default_fallbacks: list[ModelId] | None = Field(
        default=None,
        description="Ids tried for any model without fallbacks of its own (only those routed now).",
    )
    max_fallbacks: Annotated[int, Field(ge=1, le=100)] | None = Field(
        default=None, description="Fallbacks tried at most per request; LiteLLM's default: 5."
    )
    retry_policy: RetryPolicy | None = Field(default=None, description="Retries by the kind of error.")
    model_group_retry_policy: dict[ModelId, RetryPolicy] | None = Field(
        default=None, description="Model id -> retries by the kind of error, for that model."
    )
    allowed_fails_policy: AllowedFailsPolicy | None = Field(
        default=None, description="Failures before a cooldown, by the kind of error."
    )
    retry_after: Annotated[int, Field(ge=0, le=3600)] | None = Field(
        default=None, description="Seconds at least before a retry."
    )
    stream_timeout: PositiveSeconds | None = Field(
        default=None, description="Seconds a streaming request may take (gateway.timeout for the others)."
    )
    enable_pre_call_checks: bool | None = Field(
        default=None, description="Skip deployments whose context window the request does not fit."
    )
    optional_pre_call_checks: (
        list[
            Literal[
                "prompt_caching", "responses_api_deployment_check", "deployment_affinity", "session_affinity"
            ]
        ]
        | None
    ) = Field(default=None, description="LiteLLM's optional checks before picking a deployment.")
    routing_strategy_args: RoutingStrategyArgs | None = Field(
        default=None, description="Arguments of gateway.routing_strategy."
    )
    default_max_parallel_requests: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        default=None, description="Requests in flight per deployment at most."
    )
    set_verbose: bool | None = Field(default=None, description="The router's debug logging.")
    debug_level: Literal["DEBUG", "INFO"] | None = Field(default=None, description="The router's log level.")


class S3CallbackParams(Strict):
    """Where LiteLLM's s3 logging callback writes; credentials only as os.environ/NAME."""

    s3_bucket_name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$")] = Field(
        description="The bucket."
    )
    s3_region_name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,40}$")] | None = Field(
        default=None, description="The bucket's region."
    )
    s3_endpoint_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] | None = Field(
        default=None, description="An S3-compatible endpoint (MinIO, R2, ...)."
    )
    s3_path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]{1,200}$")] | None = Field(
        default=None, description="Key prefix of the logs in the bucket."
    )
    s3_aws_access_key_id: SecretRef | None = Field(default=None, description="os.environ/NAME of the key id.")
    s3_aws_secret_access_key: SecretRef | None = Field(
        default=None, description="os.environ/NAME of the key."
    )
    s3_aws_session_token: SecretRef | None = Field(default=None, description="os.environ/NAME of the token.")


class LitellmSettings(PassthroughSection):
    """LiteLLM's litellm_settings (settings of the litellm module), merged into gateway.yaml."""

    REFUSED: ClassVar[dict[str, str]] = {
        "request_timeout": "use gateway.timeout",
        "timeout": "use gateway.timeout",
        "num_retries": "use gateway.num_retries",
        "fallbacks": "use gateway.fallbacks",
        "context_window_fallbacks": "use gateway.litellm.router_settings.context_window_fallbacks",
        "content_policy_fallbacks": "use gateway.litellm.router_settings.content_policy_fallbacks",
        "default_fallbacks": "use gateway.litellm.router_settings.default_fallbacks",
        "allowed_fails": "use gateway.allowed_fails",
        "cache": CACHE_HINT,
        "cache_params": CACHE_HINT,
    }
    MISPLACED: ClassVar[dict[str, str]] = {
        "stream_timeout": "router_settings",
        "retry_policy": "router_settings",
        "allowed_fails_policy": "router_settings",
        "background_health_checks": "general_settings",
        "health_check_interval": "general_settings",
        "max_parallel_requests": "general_settings",
    }

    drop_params: bool | None = Field(
        default=None,
        description="Drop OpenAI parameters a backend does not take; llmctl's default: true (local "
        "servers refuse some).",
    )
    modify_params: bool | None = Field(
        default=None, description="Let LiteLLM adjust requests a provider would refuse."
    )
    set_verbose: bool | None = Field(default=None, description="LiteLLM's debug logging (it logs requests).")
    json_logs: bool | None = Field(default=None, description="LiteLLM logs as JSON lines.")
    turn_off_message_logging: bool | None = Field(
        default=None, description="Keep prompts and answers out of what callbacks log."
    )
    redact_user_api_key_info: bool | None = Field(
        default=None, description="Keep the caller's key details out of what callbacks log."
    )
    force_ipv4: bool | None = Field(default=None, description="Reach providers over IPv4 only.")
    num_retries_per_request: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None, description="Retries of a request in all, fallbacks included."
    )
    callbacks: list[CallbackName] | None = Field(
        default=None,
        description="LiteLLM callbacks by name (langfuse, otel, s3_v2, ...; checked by LiteLLM at "
        "validate); their keys from secrets.env. Not prometheus: gateway.litellm_metrics.",
    )
    success_callback: list[CallbackName] | None = Field(
        default=None, description="Callbacks on success only (as callbacks)."
    )
    failure_callback: list[CallbackName] | None = Field(
        default=None, description="Callbacks on failure only (as callbacks)."
    )
    s3_callback_params: S3CallbackParams | None = Field(
        default=None, description="Settings of the s3 / s3_v2 callback."
    )

    @field_validator("callbacks", "success_callback", "failure_callback")
    @classmethod
    def _not_prometheus(cls, value: list[str] | None) -> list[str] | None:
        if any("prometheus" in name.lower() for name in value or []):
            raise ValueError(f"prometheus is llmctl's: {METRICS_HINT}")
        return value


class GeneralSettings(PassthroughSection):
    """LiteLLM's general_settings (the proxy server's), merged into gateway.yaml."""

    REFUSED: ClassVar[dict[str, str]] = {
        "master_key": "llmctl generates the gateway's key (gateway.env, mode 0600; "
        "`llmctl gateway key` prints it)",
        "custom_auth": "llmctl's own auth hook answers 401 for a wrong key",
        "custom_auth_run_common_checks": "it goes with llmctl's auth hook",
        "database_url": "llmctl runs the gateway without a database",
        "database_connection_pool_limit": "llmctl runs the gateway without a database",
        "database_connection_timeout": "llmctl runs the gateway without a database",
        "store_model_in_db": "llmctl runs the gateway without a database (models: is the model list)",
        "host": "use gateway.host",
        "port": "use gateway.port",
    }
    MISPLACED: ClassVar[dict[str, str]] = {
        "stream_timeout": "router_settings",
        "set_verbose": "litellm_settings",
        "json_logs": "litellm_settings",
        "callbacks": "litellm_settings",
    }

    background_health_checks: bool | None = Field(
        default=None,
        description="LiteLLM sends a real request to every routed model each health_check_interval; "
        "llmctl's default: false (llmctl probes the backends itself). Not with gateway.on_demand.",
    )
    health_check_interval: Annotated[int, Field(ge=10, le=86_400)] | None = Field(
        default=None, description="Seconds between background health checks."
    )
    health_check_details: bool | None = Field(
        default=None, description="/health shows each model's parameters (never keys)."
    )
    max_parallel_requests: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        default=None, description="Requests in flight per key at most."
    )
    global_max_parallel_requests: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        default=None, description="Requests in flight through the gateway at most."
    )


class LiteLLMPassthrough(Strict):
    """LiteLLM's own settings, in its own shape, merged into gateway.yaml. Every key is listed
    below; keys llmctl owns are refused with the llmctl key to use instead."""

    router_settings: RouterSettings | None = Field(default=None, description="LiteLLM's router_settings.")
    litellm_settings: LitellmSettings | None = Field(default=None, description="LiteLLM's litellm_settings.")
    general_settings: GeneralSettings | None = Field(default=None, description="LiteLLM's general_settings.")

    @model_validator(mode="before")
    @classmethod
    def _no_literal_secrets(cls, data: Any) -> Any:
        # Before the sections' own checks, so that a key is refused as a key (by place, never
        # echoed), whatever else is wrong around it.
        if not isinstance(data, dict):
            return data
        # Keys llmctl owns are left to their section, which refuses them by name.
        sections: dict[str, type[PassthroughSection]] = {
            "router_settings": RouterSettings,
            "litellm_settings": LitellmSettings,
            "general_settings": GeneralSettings,
        }
        found: list[tuple[Loc, str]] = []
        for name, value in data.items():
            section = sections.get(name)
            refused = {**section.REFUSED, **section.MISPLACED} if section is not None else {}
            own = {k: v for k, v in value.items() if k not in refused} if isinstance(value, dict) else value
            found += secrets_in(own, (str(name),))
        if len(found) == 1:
            raise error_at(*found[0])
        if found:
            # At the first one's line; the message names each by its path below gateway.litellm.
            raise error_at(found[0][0], "; ".join(f"{format_loc(at)}: {message}" for at, message in found))
        return data

    def is_set(self) -> bool:
        """Whether any key is set (then `llmctl validate` has LiteLLM check the file)."""
        return any(self.sections().values())

    def set_keys(self) -> list[str]:
        """`section.key` for every key that is set, for messages."""
        return [f"{name}.{key}" for name, keys in self.sections().items() for key in keys]

    def sections(self) -> dict[str, dict[str, Any]]:
        """{section: its keys that are set}, as LiteLLM reads them."""
        return {
            name: section.model_dump(mode="json", exclude_none=True) if section is not None else {}
            for name, section in (
                ("router_settings", self.router_settings),
                ("litellm_settings", self.litellm_settings),
                ("general_settings", self.general_settings),
            )
        }


def model_references(passthrough: LiteLLMPassthrough) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(YAML path below gateway.litellm, model id) for every model id the passthrough names."""
    router = passthrough.router_settings
    if router is None:
        return
    for name in ("context_window_fallbacks", "content_policy_fallbacks"):
        for i, item in enumerate(getattr(router, name) or []):
            for source, targets in item.items():
                yield ("router_settings", name, i, source), source
                for j, target in enumerate(targets):
                    yield ("router_settings", name, i, source, j), target
    for i, target in enumerate(router.default_fallbacks or []):
        yield ("router_settings", "default_fallbacks", i), target
    for source in router.model_group_retry_policy or {}:
        yield ("router_settings", "model_group_retry_policy", source), source


def passthrough_problems(
    passthrough: LiteLLMPassthrough, models: Collection[str], *, on_demand: bool
) -> Iterator[Problem]:
    """Problems across the passthrough and the rest of the config."""
    import difflib  # noqa: PLC0415 - only when there is a passthrough to check

    base = ("gateway", "litellm")
    for loc, model_id in model_references(passthrough):
        if model_id not in models:
            close = difflib.get_close_matches(model_id, list(models), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(models)) or 'none'}"
            yield Problem((*base, *loc), f"unknown model '{model_id}' (not in models:); {hint}")
    router = passthrough.router_settings
    for name in ("context_window_fallbacks", "content_policy_fallbacks"):
        for i, item in enumerate(getattr(router, name, None) or []):
            for source, targets in item.items():
                if source in targets:
                    yield Problem(
                        (*base, "router_settings", name, i, source), "a model cannot fall back to itself"
                    )
    general = passthrough.general_settings
    if on_demand and general is not None and general.background_health_checks:
        yield Problem(
            (*base, "general_settings", "background_health_checks"),
            "with gateway.on_demand every background health check would load every model; llmctl "
            "probes the backends itself (leave it unset or false)",
        )
