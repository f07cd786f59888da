"""Reading the config file: YAML with positions, strict validation, one error listing everything.

`load_config` returns a frozen `Config` plus warnings, or raises `ConfigError` whose details
name each problem by YAML path (and line), say what is wrong, and hint at a fix.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from llmctl.config.base import AT_ERROR
from llmctl.config.checks import check_config
from llmctl.config.problems import Loc, Problem, format_loc
from llmctl.config.schema import (
    Config,
    Kind,
    backend_class,
)
from llmctl.errors import ConfigError


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path
    text: str
    warnings: list[Problem] = field(default_factory=list)


class _PositionLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _positions(text: str, source: str) -> dict[Loc, int]:
    """Map each YAML path to its 1-based line, and reject duplicate keys on the way."""
    root = yaml.compose(text, Loader=_PositionLoader)
    out: dict[Loc, int] = {}

    def walk(node: yaml.Node, loc: Loc) -> None:
        out[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(
                        f"{source}: invalid config",
                        details=[
                            f"{format_loc((*loc, key))} (line {line}): duplicate key, "
                            f"first set on line {seen[key]}"
                        ],
                        hint="Remove one of the two; YAML would silently keep only the last.",
                    )
                seen[key] = line
                walk(value_node, (*loc, key))
                out[(*loc, key)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))

    if root is not None:
        walk(root, ())
    return out


def _descend(annotation: Any, loc: Loc, i: int) -> tuple[type[BaseModel], int] | None:
    """The model that `annotation` holds at loc[i:] (dict keys and union tags consumed)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _descend(get_args(annotation)[0], loc, i)
    if origin in (Union, types.UnionType):
        members = [m for m in get_args(annotation) if m is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) == 1:
            return models[0], i
        # A discriminated union (backends by kind): pydantic puts the tag into the path.
        for model in models:
            kind = model.model_fields.get("kind")
            if kind is not None and i < len(loc) and loc[i] in get_args(kind.annotation):
                return model, i + 1
        nested = [m for m in members if get_origin(m) in (Annotated, Union, types.UnionType)]
        return _descend(nested[0], loc, i) if len(nested) == 1 else None
    if origin is dict:
        return _descend(get_args(annotation)[1], loc, i + 1) if i < len(loc) else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, i
    return None


def _fields_for(loc: Loc) -> list[str]:
    """Field names valid at `loc` (the parent of an unknown key), for "did you mean"."""
    model: type[BaseModel] = Config
    i = 0
    while i < len(loc):
        field = model.model_fields.get(str(loc[i]))
        found = _descend(field.annotation, loc, i + 1) if field is not None else None
        if found is None:
            return []
        model, i = found
    return list(model.model_fields)


def _user_loc(loc: Loc) -> Loc:
    """Drop the discriminator pydantic inserts into backend paths (backends.x.<kind>.port)."""
    if len(loc) >= 3 and loc[0] == "backends" and loc[2] in set(Kind):
        return (loc[0], loc[1], *loc[3:])
    return loc


def _kinds_with(key: str, raw_loc: Loc) -> list[str]:
    """For a key unknown to a backend's kind (backends.NAME.KIND.key): the kinds that take it."""
    if len(raw_loc) != 4 or raw_loc[0] != "backends" or raw_loc[2] not in set(Kind):
        return []
    return [k.value for k in Kind if (cls := backend_class(k)) is not None and key in cls.model_fields]


def _describe(err: Any, positions: dict[Loc, int]) -> str:
    raw_loc: Loc = tuple(err["loc"])
    loc = _user_loc(raw_loc)
    line = positions.get(loc)
    where = format_loc(loc) + (f" (line {line})" if line else "")
    kind = err["type"]
    if kind == AT_ERROR:
        loc = (*loc, *err["ctx"]["at"])
        line = positions.get(loc)
        return f"{format_loc(loc)}{f' (line {line})' if line else ''}: {err['ctx']['message']}"
    if kind == "extra_forbidden":
        key = str(raw_loc[-1])
        other_kinds = _kinds_with(key, raw_loc)
        if other_kinds:
            return f"{where}: only {' and '.join(other_kinds)} backends take {key} (this one is {raw_loc[2]})"
        allowed = _fields_for(raw_loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        return f"{where}: unknown key; {hint}"
    if kind == "missing":
        return f"{where}: required key is missing"
    if kind == "union_tag_invalid":
        return f"{where}: kind must be one of {', '.join(k.value for k in Kind)}"
    if kind == "union_tag_not_found":
        return f"{where}: missing 'kind' (one of {', '.join(k.value for k in Kind)})"
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        return f"{where}: {err['input']!r} does not match {pattern}"
    if kind == "string_type" and isinstance(err.get("input"), bool | int | float):
        return f"{where}: must be a string, got {err['input']!r} (quote it in YAML)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}"


def parse_config(text: str, source: str = "<config>") -> tuple[Config, list[Problem]]:
    """Validate config text; return the config and its warnings, or raise ConfigError."""
    try:
        positions = _positions(text, source)
        data = yaml.load(text, Loader=_PositionLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML", details=[f"{problem}{where}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: invalid config",
            details=["(top level): must be a mapping with at least 'version: 1'"],
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        details = [_describe(err, positions) for err in exc.errors()]
        raise ConfigError(
            f"{source}: invalid config ({len(details)} problem{'s' if len(details) > 1 else ''})",
            details=details,
            hint="Fix the keys above; `llmctl config show --json` prints the effective config.",
        ) from None
    problems = check_config(config)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(
            f"{source}: invalid config ({len(errors)} problem{'s' if len(errors) > 1 else ''})",
            details=[p.describe(positions) for p in errors],
        )
    return config, [p for p in problems if p.severity == "warning"]


def load_config(path: Path, *, strict: bool = False) -> LoadedConfig:
    """Read and validate the config file. With strict, warnings are errors too."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no config file at {path}",
            details=[],
            hint="Pass --config PATH, set LLMCTL_CONFIG, or create one (see config/llmctl.example.yaml).",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}", details=[]) from None
    config, warnings = parse_config(text, str(path))
    if strict and warnings:
        raise ConfigError(
            f"{path}: {len(warnings)} warning(s) are errors with --strict",
            details=[w.describe(_positions(text, str(path))) for w in warnings],
        )
    return LoadedConfig(config=config, path=path, text=text, warnings=warnings)
