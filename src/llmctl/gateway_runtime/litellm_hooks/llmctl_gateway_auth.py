"""LiteLLM's `custom_auth` for llmctl's gateway: any key but the master key gets 401.

LiteLLM 1.106 without a database rejects a key badly: a wrong key gets **400** "No connected
db." (it looks the key up in a database that is not there), and no key or a header without
``Bearer `` gets **500** (its error handler imports ``prisma``, which is not installed). OpenAI
clients then raise BadRequestError or InternalServerError instead of AuthenticationError.

gateway.yaml names this hook (``general_settings.custom_auth``). LiteLLM calls it, through
``litellm_enterprise``'s ``enterprise_custom_auth`` (part of ``litellm[proxy]``), with the key it
took from the request's headers, before any check of its own. The hook

* returns the key for the master key: a string returned hands the request back to LiteLLM's
  own checks, so the master key gets exactly what it got without the hook (gateway.yaml also
  sets ``custom_auth_run_common_checks``, which LiteLLM skips for custom auth otherwise);
* returns the key on the routes LiteLLM itself leaves public (``/health/liveliness``, ``/``);
* raises LiteLLM's ProxyException otherwise, which LiteLLM answers as HTTP 401 in OpenAI's
  error shape, the body ``code`` being OpenAI's ``invalid_api_key``.

The gateway's child (child.py) puts this directory on LiteLLM's ``sys.path``; the directory
holds nothing else, so nothing of LiteLLM's can be shadowed. Like child.py this file runs under
the LiteLLM venv's python, which has no llmctl: the standard library only, LiteLLM through
importlib. The master key is read from LiteLLM (``master_key``, from LITELLM_MASTER_KEY); it is
never logged nor put in a message.

Its cost, measured in LiteLLM 1.106.2's python on the 2-core test machine: 0.5 µs a call for
the master key, 2.7 µs for a refused one; a GET /v1/models through the gateway takes 5-8 ms.
"""

from __future__ import annotations

import functools
import importlib
import secrets
import sys
from collections.abc import Callable
from typing import Any

STATUS = 401
TYPE = "invalid_request_error"  # what OpenAI itself answers for a bad key
CODE = "invalid_api_key"
HINT = "`llmctl gateway key` prints the gateway's key."
MISSING = f"No API key provided: send the gateway's key as 'Authorization: Bearer KEY'. {HINT}"
MALFORMED = f"Malformed API key: the Authorization header must read 'Bearer KEY'. {HINT}"
WRONG = f"Incorrect API key provided: the gateway accepts only its own key. {HINT}"
PROXY_SERVER = "litellm.proxy.proxy_server"
LITELLM_AUTH = "litellm.proxy.auth.user_api_key_auth"


def rejection(api_key: object, master_key: object) -> str | None:
    """None for the master key, else why the key is refused (the 401's message).

    LiteLLM passes None when no header carries a key, and "" when the Authorization header does
    not start with ``Bearer ``. No master key at all refuses every key: the gateway is never
    open, whatever its environment lacks.
    """
    if api_key is None:
        return MISSING
    if not isinstance(api_key, str) or not api_key:
        return MALFORMED
    # Constant time, as LiteLLM's own check; bytes, as a str with non-ASCII would raise.
    if (
        isinstance(master_key, str)
        and master_key
        and secrets.compare_digest(api_key.encode(), master_key.encode())
    ):
        return None
    return WRONG


def error_body(message: str) -> dict[str, Any]:
    """OpenAI's error shape, as the body of the 401."""
    return {"error": {"message": message, "type": TYPE, "param": None, "code": CODE}}


@functools.cache
def _error_class() -> Callable[..., Exception]:
    """A ProxyException (LiteLLM's handler answers it with its status) whose body has OpenAI's code.

    ProxyException puts the HTTP status ("401") in the body's ``code``; OpenAI puts
    ``invalid_api_key`` there. Built on first use: LiteLLM is not importable in llmctl's venv.
    """
    base = importlib.import_module("litellm.proxy._types").ProxyException

    def to_dict(self: Any) -> dict[str, Any]:
        return {**base.to_dict(self), "code": CODE}

    cls: Callable[..., Exception] = type("LlmctlInvalidApiKey", (base,), {"to_dict": to_dict})
    return cls


def invalid_api_key(message: str) -> Exception:
    body = error_body(message)["error"]
    # RFC 9110: a 401 says how to authenticate.
    return _error_class()(
        message=body["message"],
        type=body["type"],
        param=body["param"],
        code=STATUS,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _is_public_route(request: Any) -> bool:
    """LiteLLM's own test, in the order its user_api_key_auth applies it."""
    auth = sys.modules[LITELLM_AUTH]
    route = auth.get_request_route(request=request)
    general_settings = sys.modules[PROXY_SERVER].general_settings
    if auth._route_requires_auth_despite_public(route=route, general_settings=general_settings):
        return False
    return bool(
        route in auth.LiteLLMRoutes.public_routes.value
        or auth.route_in_additonal_public_routes(current_route=route)
    )


async def user_api_key_auth(request: Any, api_key: str | None) -> str | None:
    """The hook: the key back to LiteLLM for the master key and public routes, else 401."""
    message = rejection(api_key, sys.modules[PROXY_SERVER].master_key)
    if message is None or _is_public_route(request):
        return api_key
    raise invalid_api_key(message)


def require_litellm_support() -> None:
    """Refuse to load where LiteLLM would not take the key back from this hook.

    Without litellm_enterprise LiteLLM validates the hook's answer as its own auth object, and
    a string fails that: every request, the master key's too, would be refused. Failing the
    config load instead fails the new generation's start, and the gateway says why.
    """
    auth = importlib.import_module(LITELLM_AUTH)
    if getattr(auth, "enterprise_custom_auth", None) is None:
        raise ImportError(
            "llmctl_gateway_auth needs litellm_enterprise's enterprise_custom_auth "
            "(installed with litellm[proxy]); reinstall LiteLLM with the [proxy] extra"
        )


# LiteLLM imports this module while it loads its config (and then its proxy server is loaded):
# check there, at start, rather than on the first request. llmctl's own tests import it without
# LiteLLM.
if PROXY_SERVER in sys.modules:
    require_litellm_support()
