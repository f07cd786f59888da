"""Reading the LiteLLM proxy config that `llmctl init --from-litellm` imports.

Only what LiteLLM itself would read: the YAML mapping with `model_list` and the three settings
sections. A file that is missing, not YAML, or not shaped like a LiteLLM proxy config is a
usage error (exit 2) that says which, before anything is looked at or written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmctl.errors import ExitCode, LlmctlError

# The proxy's own top-level keys (litellm/proxy/proxy_server.py reads these).
SECTIONS = ("router_settings", "litellm_settings", "general_settings")
TOP_LEVEL = ("model_list", *SECTIONS, "environment_variables")

ENV_PREFIX = "os.environ/"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Keys whose literal values are credentials: never copied into llmctl's config or its output.
_SECRET_KEY = re.compile(r"(^|_)(key|password|secret|token|credentials?)($|_)", re.IGNORECASE)

Outcome = Literal["mapped", "guessed", "unmapped"]


@dataclass(frozen=True)
class ReportEntry:
    """One thing in the source and what became of it. `why` never holds a secret's value."""

    entry: str  # where in the source: model_list[2] (gpt-4o), router_settings.retry_policy
    outcome: Outcome
    why: str
    to: str | None = None  # where it went: models.gpt-4o, gateway.fallbacks, secrets.env NAME

    def as_dict(self) -> dict[str, Any]:
        return {"entry": self.entry, "outcome": self.outcome, "why": self.why, "to": self.to}


@dataclass
class Report:
    entries: list[ReportEntry] = field(default_factory=list)

    def mapped(self, entry: str, why: str, to: str | None = None) -> None:
        self.entries.append(ReportEntry(entry, "mapped", why, to))

    def guessed(self, entry: str, why: str, to: str | None = None) -> None:
        self.entries.append(ReportEntry(entry, "guessed", why, to))

    def unmapped(self, entry: str, why: str) -> None:
        self.entries.append(ReportEntry(entry, "unmapped", why))

    def replace(self, to: str, why: str) -> None:
        """Entries that went to `to` (or under it, for a prefix ending in .) were not carried."""
        for i, e in enumerate(self.entries):
            if e.to is not None and (e.to == to or (to.endswith(".") and e.to.startswith(to))):
                self.entries[i] = ReportEntry(e.entry, "unmapped", why)


def env_reference(value: Any) -> str | None:
    """NAME for a value `os.environ/NAME` (LiteLLM reads it from the environment), else None."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return value.removeprefix(ENV_PREFIX)
    return None


def is_secret_key(name: str) -> bool:
    """api_key, master_key, redis_password, aws_secret_access_key, vertex_credentials, ..."""
    return bool(_SECRET_KEY.search(name))


def holds_secret_literal(name: str, value: Any) -> bool:
    """A value under a secret-looking key that is not an os.environ/ reference (or empty)."""
    if isinstance(value, dict):
        return any(holds_secret_literal(str(k), v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_secret_literal(name, v) for v in value)
    if not is_secret_key(name) or value is None or isinstance(value, bool):
        return False
    return env_reference(value) is None and str(value).strip() != ""


def read_source(path: Path) -> dict[str, Any]:
    """The parsed LiteLLM config, or LlmctlError (exit 2) saying why it is not one."""
    import yaml  # noqa: PLC0415

    hint = "Give the config.yaml your LiteLLM proxy runs with (litellm --config PATH)."
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlmctlError(f"{path}: no such file", hint=hint, exit_code=ExitCode.USAGE) from None
    except IsADirectoryError:
        raise LlmctlError(f"{path}: is a directory", hint=hint, exit_code=ExitCode.USAGE) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmctlError(f"cannot read {path}: {exc}", hint=hint, exit_code=ExitCode.USAGE) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise LlmctlError(
            f"{path}: not valid YAML", details=[f"{problem}{where}"], hint=hint, exit_code=ExitCode.USAGE
        ) from None
    if not isinstance(data, dict):
        raise LlmctlError(
            f"{path}: not a LiteLLM proxy config (the top level is not a mapping)",
            hint=hint,
            exit_code=ExitCode.USAGE,
        )
    if "version" in data and ("backends" in data or "models" in data):
        raise LlmctlError(
            f"{path}: this is an llmctl config, not a LiteLLM one",
            hint="llmctl --config PATH validate checks it; --from-litellm reads LiteLLM's config.yaml.",
            exit_code=ExitCode.USAGE,
        )
    models = data.get("model_list")
    if not isinstance(models, list):
        found = "model_list is not a list" if "model_list" in data else "it has no model_list"
        raise LlmctlError(
            f"{path}: not a LiteLLM proxy config ({found})",
            details=[f"top-level keys: {', '.join(map(str, data)) or 'none'}"],
            hint=hint,
            exit_code=ExitCode.USAGE,
        )
    for section in (*SECTIONS, "environment_variables"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise LlmctlError(
                f"{path}: {section} must be a mapping (got {type(data[section]).__name__})",
                hint=hint,
                exit_code=ExitCode.USAGE,
            )
    return data
