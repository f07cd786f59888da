"""llmctl_gateway_auth, LiteLLM's custom_auth hook: which keys it refuses, with what, and where it lives.

LiteLLM is not installed in llmctl's venv: the hook's decisions are tested here, its calls into
LiteLLM against a stand-in of the few names it uses; tests/integration/test_gateway_e2e.py runs
it inside the real LiteLLM.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

from llmctl.config.load import parse_config
from llmctl.gateway_runtime import AUTH_HOOK, LITELLM_HOOKS_DIR
from llmctl.gateway_runtime.child import HOOKS_DIR
from llmctl.render.gateway import render_gateway_config

REPO = Path(__file__).resolve().parents[2]
MODULE_NAME, FUNCTION = AUTH_HOOK.rsplit(".", 1)
MASTER = "sk-" + "m" * 48


def load_hook() -> ModuleType:
    """The hook as LiteLLM imports it: a top-level module from the hooks directory."""
    spec = importlib.util.spec_from_file_location(MODULE_NAME, LITELLM_HOOKS_DIR / f"{MODULE_NAME}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = load_hook()


def test_gateway_yaml_names_the_hook_and_keeps_litellms_checks() -> None:
    config, _ = parse_config((REPO / "config" / "llmctl.example.yaml").read_text())
    general = yaml.safe_load(render_gateway_config(config, {}))["general_settings"]
    assert general["custom_auth"] == AUTH_HOOK
    assert general["custom_auth_run_common_checks"] is True
    assert general["master_key"] == "os.environ/LITELLM_MASTER_KEY"


def test_the_hook_is_where_the_child_puts_litellms_path_and_alone_there() -> None:
    assert HOOKS_DIR == LITELLM_HOOKS_DIR
    assert callable(getattr(hook, FUNCTION))
    # Anything else in the directory would be importable by LiteLLM, possibly over its own modules.
    files = {p.name for p in LITELLM_HOOKS_DIR.iterdir() if p.name != "__pycache__"}
    assert files == {f"{MODULE_NAME}.py"}


@pytest.mark.parametrize(
    ("api_key", "expected"),
    [
        (MASTER, None),
        (None, hook.MISSING),  # no header carries a key
        ("", hook.MALFORMED),  # `Authorization: KEY`, without `Bearer `
        ("sk-wrong", hook.WRONG),
        (MASTER[:-1], hook.WRONG),
        (MASTER + "x", hook.WRONG),
        (MASTER.upper(), hook.WRONG),
        ("sk-ключ", hook.WRONG),  # non-ASCII: refused, not a TypeError from compare_digest
    ],
)
def test_only_the_master_key_passes(api_key: str | None, expected: str | None) -> None:
    assert hook.rejection(api_key, MASTER) == expected


@pytest.mark.parametrize("master", [None, ""])
def test_without_a_master_key_every_key_is_refused(master: str | None) -> None:
    assert hook.rejection("sk-anything", master) == hook.WRONG
    assert hook.rejection("", master) == hook.MALFORMED


def test_messages_help_and_never_contain_the_key() -> None:
    for message in (hook.MISSING, hook.MALFORMED, hook.WRONG):
        assert "llmctl gateway key" in message
    assert "Bearer KEY" in hook.MISSING and "Bearer KEY" in hook.MALFORMED
    assert hook.rejection("sk-secret-guess", MASTER) == hook.WRONG
    assert "sk-secret-guess" not in hook.WRONG


def test_error_body_has_openais_shape() -> None:
    assert hook.error_body("nope") == {
        "error": {
            "message": "nope",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


# --- the calls into LiteLLM, against a stand-in of the names the hook uses ---------------------


class ProxyException(Exception):
    """LiteLLM 1.106's ProxyException, reduced to what its 401 answer reads."""

    def __init__(
        self, message: str, type: str, param: str | None, code: int, headers: dict[str, str]
    ) -> None:
        super().__init__(message)
        self.message, self.type, self.param, self.code, self.headers = (
            message,
            type,
            param,
            str(code),
            headers,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


@pytest.fixture
def litellm(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    proxy_server = SimpleNamespace(master_key=MASTER, general_settings={})
    auth = SimpleNamespace(
        get_request_route=lambda request: request.path,
        _route_requires_auth_despite_public=lambda route, general_settings: route == "/metrics",
        LiteLLMRoutes=SimpleNamespace(
            public_routes=SimpleNamespace(value={"/", "/health/liveliness", "/metrics"})
        ),
        route_in_additonal_public_routes=lambda current_route: current_route == "/extra-public",
        enterprise_custom_auth=object(),
    )
    monkeypatch.setitem(sys.modules, hook.PROXY_SERVER, proxy_server)
    monkeypatch.setitem(sys.modules, hook.LITELLM_AUTH, auth)
    monkeypatch.setitem(sys.modules, "litellm.proxy._types", SimpleNamespace(ProxyException=ProxyException))
    hook._error_class.cache_clear()
    yield SimpleNamespace(proxy_server=proxy_server, auth=auth)
    hook._error_class.cache_clear()


def call(path: str, api_key: str | None) -> Any:
    return asyncio.run(getattr(hook, FUNCTION)(SimpleNamespace(path=path), api_key))


def test_the_master_key_goes_back_to_litellm(litellm: SimpleNamespace) -> None:
    assert call("/v1/chat/completions", MASTER) == MASTER


@pytest.mark.parametrize("api_key", [None, "", "sk-wrong"])
def test_public_routes_go_back_to_litellm_with_any_key(litellm: SimpleNamespace, api_key: str | None) -> None:
    for path in ("/health/liveliness", "/extra-public"):
        assert call(path, api_key) == api_key


@pytest.mark.parametrize(
    ("api_key", "message"), [(None, "MISSING"), ("", "MALFORMED"), ("sk-wrong", "WRONG")]
)
def test_other_keys_get_a_401_in_openais_shape(
    litellm: SimpleNamespace, api_key: str | None, message: str
) -> None:
    # /metrics is public, but LiteLLM asks for a key there (require_auth_for_metrics_endpoint).
    for path in ("/v1/chat/completions", "/v1/models", "/metrics"):
        with pytest.raises(ProxyException) as caught:
            call(path, api_key)
        error = caught.value
        assert error.code == "401" and error.headers == {"WWW-Authenticate": "Bearer"}
        assert error.to_dict() == hook.error_body(getattr(hook, message))["error"]


def test_the_master_key_of_the_running_litellm_counts(litellm: SimpleNamespace) -> None:
    litellm.proxy_server.master_key = "sk-other"
    with pytest.raises(ProxyException):
        call("/v1/models", MASTER)
    assert call("/v1/models", "sk-other") == "sk-other"


def test_loading_inside_a_litellm_without_enterprise_fails(litellm: SimpleNamespace) -> None:
    hook.require_litellm_support()
    del litellm.auth.enterprise_custom_auth
    with pytest.raises(ImportError, match=r"litellm\[proxy\]"):
        hook.require_litellm_support()
    # ... and so does the import LiteLLM makes while loading its config.
    with pytest.raises(ImportError, match="enterprise_custom_auth"):
        load_hook()
