"""Run by LiteLLM's own python: the settings a LiteLLM proxy config takes effect with.

Loads the config as LiteLLM 1.106's proxy does (litellm/proxy/proxy_server.py load_config):
litellm_settings set on the litellm module, router_settings that Router.__init__ takes passed
to it with the model_list. Prints what the Router ends up with, as JSON, so that a test can
compare a source config with the gateway.yaml llmctl renders from its import.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import yaml

# Imported by name: this file runs in LiteLLM's venv, and llmctl's has no litellm to type-check.
litellm: Any = importlib.import_module("litellm")

with open(sys.argv[1]) as handle:  # noqa: PTH123
    config = yaml.safe_load(handle)
for key, value in (config.get("litellm_settings") or {}).items():
    if key not in ("cache", "cache_params", "callbacks", "success_callback", "failure_callback"):
        setattr(litellm, key, value)
valid = set(litellm.Router.get_valid_args())
params = {k: v for k, v in (config.get("router_settings") or {}).items() if k in valid}
router = litellm.Router(model_list=config["model_list"], **params)
print(json.dumps({
    "models": sorted(router.get_model_names()),
    "num_retries": router.num_retries,
    "timeout": router.timeout,
    "allowed_fails": router.allowed_fails,
    "cooldown_time": router.cooldown_time,
    "routing_strategy": router.routing_strategy,
    "fallbacks": router.fallbacks,
    "retry_policy": dict(router.retry_policy or {}),
    "drop_params": litellm.drop_params,
    "json_logs": litellm.json_logs,
}, default=str))  # fmt: skip
