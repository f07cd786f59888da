"""The settings `llmctl init --from-litellm` carries: router_settings, litellm_settings,
general_settings and the fallbacks, from a LiteLLM proxy config into the llmctl gateway.

Where each goes:

* Settings llmctl has its own key for (routing_strategy, num_retries, timeout/request_timeout,
  cooldown_time, allowed_fails, fallbacks) go to that key: `gateway.X`. LiteLLM takes some in
  two sections; llmctl sets one value, so router_settings' wins and a different value in
  litellm_settings is reported as not carried.
* Redis and the response cache go to `gateway.cache`, LiteLLM's prometheus callback to
  `gateway.litellm_metrics`, when this llmctl has those keys; else they are reported as not
  carried yet.
* The master key, the database and the auth hook are llmctl's: not carried, with why.
* Everything else goes to the `gateway.litellm` passthrough in LiteLLM's own shape and names,
  when this llmctl has it. The passthrough is an allow-list that refuses keys llmctl owns:
  whatever the strict schema refuses is taken out again and reported with the schema's reason
  (`drop_refused`), so the written config always loads.

Model ids in fallbacks and fallback-like maps are kept only for mapped models (each dropped
one reported); a fallback that would close a cycle, which llmctl refuses, is dropped too.
"""

from __future__ import annotations

import copy
from typing import Any

from llmctl.init.litellm_source import SECTIONS, Report, holds_secret_literal

# (section, key) -> the llmctl gateway key that sets it.
OWNED = {
    ("router_settings", "routing_strategy"): "routing_strategy",
    ("router_settings", "num_retries"): "num_retries",
    ("litellm_settings", "num_retries"): "num_retries",
    ("router_settings", "timeout"): "timeout",
    ("litellm_settings", "request_timeout"): "timeout",
    ("router_settings", "cooldown_time"): "cooldown_time",
    ("router_settings", "allowed_fails"): "allowed_fails",
}
# What LiteLLM 1.106.2's proxy uses for them when its config says nothing (litellm/router.py:
# num_retries openai.DEFAULT_MAX_RETRIES, allowed_fails litellm.allowed_fails, cooldown_time
# DEFAULT_COOLDOWN_TIME_SECONDS, timeout litellm.request_timeout = DEFAULT_REQUEST_TIMEOUT_SECONDS).
# Where llmctl's default differs, the import writes LiteLLM's, so that behaviour is unchanged.
LITELLM_DEFAULTS = {
    "routing_strategy": "simple-shuffle",
    "num_retries": 2,
    "timeout": 6000,
    "cooldown_time": 5,
    "allowed_fails": 3,
}
FALLBACKS = (("router_settings", "fallbacks"), ("litellm_settings", "fallbacks"))
# Lists of {model: [models]} (or of models) that the passthrough carries, filtered to mapped ids.
MODEL_MAPS = ("context_window_fallbacks", "content_policy_fallbacks")
MODEL_LISTS = ("default_fallbacks",)
NO_DATABASE = "llmctl's gateway runs without a database"
NOT_CARRIED = {
    ("general_settings", "master_key"): "llmctl generates the gateway's master key (`llmctl gateway key` "
    "prints it): give clients that key",
    ("general_settings", "custom_auth"): "llmctl's gateway has its own auth hook",
    ("general_settings", "database_url"): NO_DATABASE,
    ("general_settings", "database_connection_pool_limit"): NO_DATABASE,
    ("general_settings", "store_model_in_db"): NO_DATABASE,
    ("general_settings", "disable_spend_logs"): NO_DATABASE,
}
CACHE_KEYS = {
    ("litellm_settings", "cache"),
    ("litellm_settings", "cache_params"),
    *(("router_settings", k) for k in ("redis_host", "redis_port", "redis_password", "redis_url")),
}
CALLBACK_KEYS = ("callbacks", "success_callback", "failure_callback")
# cache_params keys gateway.cache takes under the same name.
CACHE_PARAMS = ("ttl", "mode", "namespace")


def _whole(value: Any) -> Any:
    """30.0 -> 30: YAML floats for settings llmctl keeps as whole numbers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check_owned(key: str, value: Any) -> str | None:
    """Why llmctl's gateway.KEY cannot take `value`, or None."""
    from pydantic import ValidationError  # noqa: PLC0415

    from llmctl.config.schema import Gateway  # noqa: PLC0415

    try:
        Gateway.model_validate({key: value})
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ") + "; not carried"
    return None


class _Settings:
    def __init__(self, data: dict[str, Any], mapped: set[str], report: Report) -> None:
        self.data = data
        self.mapped = mapped
        self.report = report
        self.gateway: dict[str, Any] = {}
        self.set_by: dict[str, str] = {}  # gateway key -> the source entry that set it
        self.passthrough: dict[str, dict[str, Any]] = {}

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    def owned(self, section: str, key: str, value: Any) -> None:
        target = OWNED[(section, key)]
        label = f"{section}.{key}"
        value = _whole(value)
        if target in self.set_by:
            if self.gateway[target] == value:
                self.report.mapped(label, f"the same as {self.set_by[target]}", f"gateway.{target}")
            else:
                self.report.unmapped(
                    label,
                    f"{self.set_by[target]} ({self.gateway[target]!r}) is carried; "
                    "llmctl sets one value for both",
                )
            return
        problem = _check_owned(target, value)
        if problem is not None:
            self.report.unmapped(label, problem)
            return
        self.gateway[target] = value
        self.set_by[target] = label
        self.report.mapped(label, f"{value!r}", f"gateway.{target}")

    def fallbacks(self) -> None:
        chains: dict[str, list[str]] = {}
        for section, key in FALLBACKS:
            value = self.section(section).get(key)
            if value is None:
                continue
            for label, source, targets in self.pairs(f"{section}.{key}", value):
                kept = []
                for target in targets:
                    why = self.refuse_fallback(chains, source, target)
                    if why:
                        self.report.unmapped(f"{label} -> {target}", why)
                    elif target not in kept and target not in chains.get(source, []):
                        kept.append(target)
                if kept:
                    chains.setdefault(source, []).extend(kept)
                    self.report.mapped(label, f"{source} -> {', '.join(kept)}", f"gateway.fallbacks.{source}")
        if chains:
            self.gateway["fallbacks"] = chains

    def pairs(self, where: str, value: Any) -> list[tuple[str, str, list[str]]]:
        """(label, source, targets) of a LiteLLM fallback list [{model: [models]}, ...]; entries
        it cannot read, or whose source was not mapped, are reported here."""
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                self.report.unmapped(f"{where}[{i}]", "not a {model: [fallbacks]} mapping")
                continue
            for source, targets in item.items():
                label = f"{where}[{i}] ({source})"
                names = [targets] if isinstance(targets, str) else targets
                if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
                    self.report.unmapped(label, "its fallbacks are not a list of model names")
                elif str(source) not in self.mapped:
                    self.report.unmapped(label, f"{source} was not mapped (see its model_list entry)")
                else:
                    out.append((label, str(source), names))
        return out

    def refuse_fallback(self, chains: dict[str, list[str]], source: str, target: str) -> str | None:
        if target not in self.mapped:
            return f"{target} was not mapped"
        if target == source:
            return "a model cannot fall back to itself (llmctl refuses it)"
        # Would source be reachable from target? Then source -> target closes a cycle.
        seen, todo = set(), [target]
        while todo:
            node = todo.pop()
            if node == source:
                return f"{source} -> {target} would close a fallback cycle, which llmctl refuses"
            if node not in seen:
                seen.add(node)
                todo.extend(chains.get(node, []))
        return None

    def model_map(self, section: str, key: str, value: Any) -> Any:
        """A fallback-like map with only mapped ids, or None when nothing is left."""
        label = f"{section}.{key}"
        if key in MODEL_LISTS:
            items = value if isinstance(value, list) else [value]
            kept = [m for m in items if m in self.mapped]
            for m in items:
                if m not in self.mapped:
                    self.report.unmapped(f"{label} -> {m}", f"{m} was not mapped")
            return kept or None
        out = []
        for item_label, source, targets in self.pairs(label, value):
            kept = [t for t in targets if t in self.mapped and t != source]
            for t in targets:
                if t not in kept:
                    self.report.unmapped(f"{item_label} -> {t}", f"{t} was not mapped")
            if kept:
                out.append({source: kept})
        return out or None

    def carry(self, section: str, key: str, value: Any) -> None:
        label = f"{section}.{key}"
        if holds_secret_literal(key, value):
            self.report.unmapped(
                label,
                "holds a secret written into the file; not copied (put it in secrets.env and refer to it "
                "as os.environ/NAME in gateway.litellm)",
            )
            return
        if key in MODEL_MAPS or key in MODEL_LISTS:
            value = self.model_map(section, key, value)
            if value is None:
                return
        self.passthrough.setdefault(section, {})[key] = value
        self.report.mapped(
            label, "passed through as LiteLLM's own setting", f"gateway.litellm.{section}.{key}"
        )

    def cache(self) -> None:
        found = [(s, k) for s, k in sorted(CACHE_KEYS) if k in self.section(s)]
        if not found:
            return
        labels = [f"{s}.{k}" for s, k in found]
        litellm = self.section("litellm_settings")
        raw = litellm.get("cache_params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        enabled = litellm.get("cache") is True
        kind = params.get("type", "redis" if enabled else None)
        if not enabled or kind != "redis":
            for label in labels:
                self.report.unmapped(label, f"gateway.cache takes a Redis cache; this is {kind or 'off'}")
            return
        cache: dict[str, Any] = {"type": "redis"}
        carried = [k for k in CACHE_PARAMS if k in params]
        cache |= {k: _whole(params[k]) for k in carried}
        unused = sorted(set(params) - {"type", *carried})
        self.gateway["cache"] = cache
        why = "a Redis response cache: llmctl runs its own Redis (llmctl-redis.service, its own password)"
        if carried:
            why += f"; carried: {', '.join(carried)}"
        if unused:
            why += f"; not used: {', '.join(unused)}"
        for label in labels:
            if label.endswith(("cache", "cache_params")):
                self.report.mapped(label, why, "gateway.cache")
            else:
                self.report.unmapped(label, "llmctl runs its own Redis for gateway.cache; not carried")

    def callbacks(self, key: str, value: Any) -> None:
        label = f"litellm_settings.{key}"
        names = value if isinstance(value, list) else [value]
        others = [n for n in names if n != "prometheus"]
        if "prometheus" in names:
            self.gateway["litellm_metrics"] = True
            self.report.mapped(label + " (prometheus)", "LiteLLM's metrics", "gateway.litellm_metrics")
        if others:
            self.carry("litellm_settings", key, others if isinstance(value, list) else others[0])

    def defaults(self) -> None:
        """For what the source leaves unset, LiteLLM's default where llmctl's differs."""
        from llmctl.config.schema import Gateway  # noqa: PLC0415

        for key, litellm_default in LITELLM_DEFAULTS.items():
            ours = Gateway.model_fields[key].default
            if key in self.gateway or ours == litellm_default:
                continue
            self.gateway[key] = litellm_default
            self.report.mapped(
                f"router_settings.{key} (not set)",
                f"LiteLLM's default {litellm_default!r} kept (llmctl's own default is {ours!r})",
                f"gateway.{key}",
            )

    def drop_params_default(self) -> None:
        """llmctl's gateway.yaml says drop_params: true; LiteLLM's default is false."""
        if "drop_params" in self.section("litellm_settings"):
            return
        label = "litellm_settings.drop_params (not set)"
        self.passthrough.setdefault("litellm_settings", {})["drop_params"] = False
        self.report.mapped(
            label,
            "LiteLLM's default false kept (llmctl's own gateway.yaml says true: unsupported "
            "parameters dropped instead of refused)",
            "gateway.litellm.litellm_settings.drop_params",
        )

    def run(self) -> dict[str, Any]:
        for section in SECTIONS:
            for raw, value in self.section(section).items():
                key = str(raw)
                if (section, key) in OWNED:
                    self.owned(section, key, value)
                elif (section, key) in FALLBACKS or (section, key) in CACHE_KEYS:
                    continue  # below, together
                elif (section, key) in NOT_CARRIED:
                    self.report.unmapped(f"{section}.{key}", NOT_CARRIED[(section, key)])
                elif section == "litellm_settings" and key in CALLBACK_KEYS:
                    self.callbacks(key, value)
                elif (section, key) == ("litellm_settings", "drop_params") and value is True:
                    self.report.mapped(f"{section}.{key}", "llmctl's gateway sets drop_params: true itself")
                else:
                    self.carry(section, key, value)
        self.fallbacks()
        self.cache()
        self.defaults()
        self.drop_params_default()
        if self.passthrough:
            self.gateway["litellm"] = self.passthrough
        return self.gateway


def import_settings(data: dict[str, Any], mapped: set[str], report: Report) -> dict[str, Any]:
    """The gateway keys for the source's settings (model ids limited to `mapped`)."""
    return _Settings(data, mapped, report).run()


def drop_refused(config: dict[str, Any], report: Report) -> dict[str, Any]:
    """Take out of gateway.litellm / gateway.cache what the strict schema refuses, reporting
    the schema's reason in place of "mapped", until the config loads (or nothing is left to take
    out: then the caller's validation says what is wrong).

    Each passthrough key is tried alone first: a refusal the schema words for its section (a key
    LiteLLM reads from another one, say) then takes out that key only, not the section."""
    passthrough = config["gateway"].get("litellm") or {}
    for section, keys in list(passthrough.items()):
        for key in list(keys):
            alone = copy.deepcopy(config)
            alone["gateway"]["litellm"] = {section: {key: keys[key]}}
            problem = _first_problem(alone, ("gateway", "litellm"))
            if problem is not None:
                _remove(config, report, ("gateway", "litellm", section, key), problem[1])
    for _ in range(100):
        problem = _first_problem(config, ("gateway", "litellm"), ("gateway", "cache"))
        if problem is None:
            return config
        _remove(config, report, *problem)
    return config


def _first_problem(config: dict[str, Any], *under: tuple[str, str]) -> tuple[tuple[Any, ...], str] | None:
    """The first (loc, reason) the strict schema or the cross-field checks find under `under`."""
    from pydantic import ValidationError  # noqa: PLC0415

    from llmctl.config.checks import check_config  # noqa: PLC0415
    from llmctl.config.schema import Config  # noqa: PLC0415

    try:
        checked = Config.model_validate(config)
    except ValidationError as exc:
        found = [(tuple(e["loc"]), _reason(e)) for e in exc.errors()]
    else:
        found = [(p.loc, p.message) for p in check_config(checked) if p.severity == "error"]
    ours = [(loc, msg) for loc, msg in found if len(loc) >= 2 and tuple(loc[:2]) in under]
    return ours[0] if ours else None


def _reason(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "not a key it accepts"
    return str(error["msg"]).removeprefix("Value error, ")


def _remove(config: dict[str, Any], report: Report, loc: tuple[Any, ...], msg: str) -> None:
    gateway = config["gateway"]
    if loc[1] == "cache":
        cache = gateway.get("cache", {})
        if len(loc) >= 3 and loc[2] != "type" and loc[2] in cache:
            cache.pop(loc[2])
            report.unmapped(f"litellm_settings.cache_params.{loc[2]}", f"gateway.cache refuses it: {msg}")
        else:
            gateway.pop("cache", None)
            report.replace("gateway.cache", f"gateway.cache refused it: {msg}")
        return
    section = gateway.get("litellm", {}).get(loc[2]) if len(loc) >= 3 else None
    if len(loc) < 4 or not isinstance(section, dict):
        gateway.pop("litellm", None)
        report.replace("gateway.litellm.", f"gateway.litellm refused it: {msg}")
        return
    key = loc[3]
    section.pop(key, None)
    if not section:
        gateway["litellm"].pop(loc[2])
    if not gateway["litellm"]:
        gateway.pop("litellm")
    report.replace(f"gateway.litellm.{loc[2]}.{key}", f"gateway.litellm refuses it: {msg}")
