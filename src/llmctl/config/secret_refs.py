"""Secrets in what llmctl writes for LiteLLM: references to them, and values that look like one.

gateway.yaml is a file anyone with the config's permissions reads, and llmctl copies it into
snapshots: a secret goes there only as `os.environ/NAME`, NAME a variable of secrets.env (mode
0600, read by the gateway's unit through EnvironmentFile=). LiteLLM resolves such references
anywhere in its config when it loads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints

from llmctl.config.problems import Loc
from llmctl.secrets import BACKEND_KEY_PREFIX, KEY_VARIABLE

ENV_REFERENCE = re.compile(r"^os\.environ/(?P<name>[A-Za-z_][A-Za-z0-9_]{0,127})$")
SECRET_NAME = re.compile(r"(key|password|passwd|token|secret|credentials?)$|secret|password|access_key", re.I)
# Shapes of real keys (OpenAI/Anthropic sk-..., Slack, GitHub, AWS, Google, Hugging Face) ...
_KEY_PREFIXES = re.compile(
    r"^(sk|pk|rk)[-_][A-Za-z0-9_-]{12,}$|^(xox[abprs]-|ghp_|gho_|github_pat_|AKIA|ASIA|AIza|hf_)[A-Za-z0-9_-]{12,}$"
)
# ... and of a long random token: model ids are long too, but made of short words.
_TOKEN = re.compile(r"^[A-Za-z0-9+/=_-]{32,}$")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=]{24,}")


def secret_reference_problem(value: str) -> str | None:
    """Why `value` cannot name a secret in gateway.yaml, or None for os.environ/NAME."""
    match = ENV_REFERENCE.match(value)
    if match is None:
        return (
            "would write a secret into gateway.yaml; put it in secrets.env (mode 0600) as NAME=... "
            "and write os.environ/NAME here"
        )
    name = match["name"]
    if name == KEY_VARIABLE:
        return (
            f"{name} is the gateway's master key, llmctl's own: give this setting its own key in secrets.env"
        )
    if name.startswith(BACKEND_KEY_PREFIX):
        return f"{BACKEND_KEY_PREFIX}* are the keys llmctl generates for backends: use a name of your own"
    return None


def _secret_reference(value: str) -> str:
    problem = secret_reference_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def looks_like_a_key(value: str) -> bool:
    if _KEY_PREFIXES.match(value):
        return True
    if not _TOKEN.match(value):
        return False
    run = _TOKEN_RUN.search(value)
    return run is not None and any(c.isdigit() for c in run[0]) and any(c.isalpha() for c in run[0])


def secrets_in(value: Any, path: Loc = ()) -> Iterator[tuple[Loc, str]]:
    """(place, why) of each literal secret in raw settings: named by place, never by value."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and looks_like_a_key(key):
                yield path, "a key of this map looks like a key, which would be written into gateway.yaml"
                continue
            where = (*path, str(key))
            if isinstance(item, str) and SECRET_NAME.search(str(key)):
                problem = secret_reference_problem(item)
                if problem:
                    yield where, problem
                    continue
            yield from secrets_in(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from secrets_in(item, (*path, i))
    elif isinstance(value, str) and not ENV_REFERENCE.match(value) and looks_like_a_key(value):
        yield (
            path,
            (
                "looks like a key, which would be written into gateway.yaml; put it in secrets.env "
                "(mode 0600) and write os.environ/NAME"
            ),
        )


SecretRef = Annotated[str, StringConstraints(pattern=r"^os\.environ/"), AfterValidator(_secret_reference)]
