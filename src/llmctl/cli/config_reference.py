"""docs/config-reference.md, generated from the config schema (llmctl.config.schema).

    python -m llmctl.cli.config_reference > docs/config-reference.md

Every key with its type, default and meaning; the meaning is the field's `description=` (a
section without one takes its class docstring). tests/cli/test_config_reference.py fails when
the checked-in file is not what this prints, and when a field has no description.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from llmctl.config import base, litellm_settings, schema, secret_refs

HEADER = """# Config reference

<!-- Generated from src/llmctl/config/schema.py by `python -m llmctl.cli.config_reference`;
     do not edit: change the schema's descriptions and regenerate. -->

Every key of the config file (schema version {version}), by section. `NAME` stands for a
backend's name, `ID` for a model id. Keys are strict: an unknown key is an error, and values
are not converted between types (a port is a number, not `"8080"`). `llmctl config show`
prints a config with every default filled in.
"""


def _aliases() -> list[tuple[Any, str]]:
    """The schema's named types, by what they mean rather than how they are checked."""
    named = [
        ("Port", "port (1 to 65535)"),
        ("Host", "IP address or host name"),
        ("Name", "name (a-z, 0-9, -; up to 32, starting with a letter or digit)"),
        ("ModelId", "model id (letters, digits, `._:/@+-`; up to 128)"),
        ("EnvName", "variable name"),
        ("Executable", "executable (absolute, ~/..., or a name on PATH)"),
        ("NonEmptySafeStr", "string (not empty, no control characters)"),
        ("SafeStr", "string (no control characters)"),
        ("Seconds", "seconds (> 0, up to 86400)"),
        ("Threshold", "count (1 to 100)"),
        ("Duration", "duration (seconds, or 90s / 10m / 2h)"),
        ("SecretRef", "`os.environ/NAME` (NAME set in secrets.env; never the secret)"),
        ("Count", "count (0 to 1000)"),
        ("PositiveSeconds", "seconds (> 0, up to 86400)"),
        ("CallbackName", "callback name (a LiteLLM callback, or module.attribute)"),
        ("Fallbacks", "list of maps of one model id to a list of model ids"),
    ]
    modules = (schema, base, litellm_settings, secret_refs)
    return [
        (getattr(module, attr), text)
        for attr, text in named
        for module in modules
        if hasattr(module, attr) and (module is schema or not hasattr(schema, attr))
    ]


def _bounds(metadata: typing.Iterable[Any]) -> list[str]:
    out: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            out += _bounds(item.metadata)
            continue
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            out.append(f"matching `{pattern}`")
    return out


SECTION_DEFAULT = "its keys' defaults"
PLAIN_DEFAULTS = (SECTION_DEFAULT, "required")  # words, not values: no code span
BASE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def type_text(tp: Any) -> str:
    """A type of the schema in words: `integer (>= 5, <= 7200) or null`, `list of port`."""
    for alias, text in _aliases():
        if tp == alias:
            return text
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        base, *metadata = args
        bounds = _bounds(metadata)
        discriminator = next((m.discriminator for m in metadata if isinstance(m, FieldInfo)), None)
        if discriminator:
            return f"one of the kinds below, by `{discriminator}`"
        return type_text(base) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return " or ".join(f"`{a.value if isinstance(a, enum.Enum) else a}`" for a in args)
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"map of {type_text(args[0])} to {type_text(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    return BASE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        return SECTION_DEFAULT if isinstance(value, BaseModel) else json.dumps(value)
    if info.default is PydanticUndefined:
        return "required"
    value = info.default.value if isinstance(info.default, enum.Enum) else info.default
    return json.dumps(value)


def meaning(info: FieldInfo, sub: type[BaseModel] | None) -> str:
    text = info.description or (_doc(sub) if sub is not None else "")
    return " ".join(text.split())


def _doc(cls: type[BaseModel]) -> str:
    doc = cls.__doc__ or ""
    return "" if doc.startswith(("Usage docs:", "!!! abstract")) else doc


Row = tuple[str, str, str, str]  # key, type, default, meaning
# What a map's keys stand for in a path.
LABELS = {"backends": "NAME", "models": "ID", "model_group_retry_policy": "ID"}


@dataclass
class Section:
    path: str  # "" for the top level
    note: str = ""
    rows: list[Row] = field(default_factory=list)


def _models_in(tp: Any) -> list[type[BaseModel]]:
    """The config sections a field's type holds (through Optional, Annotated, unions)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models_in(a)]
    return [tp] if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _map_values(tp: Any) -> Any:
    """The value type of a map field (`dict[K, V]`, also `dict[K, V] | None`), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        maps = [a for a in typing.get_args(tp) if typing.get_origin(a) is dict]
        tp = maps[0] if len(maps) == 1 else tp
    return typing.get_args(tp)[1] if typing.get_origin(tp) is dict else None


def _kind_of(cls: type[BaseModel]) -> str:
    (literal,) = typing.get_args(typing.get_type_hints(cls)["kind"])
    return str(literal.value if isinstance(literal, enum.Enum) else literal)


def _note(cls: type[BaseModel]) -> str:
    note = " ".join(_doc(cls).split())
    # gateway.litellm's sections refuse the keys llmctl owns; the reference says where they went.
    refused: dict[str, str] = getattr(cls, "REFUSED", {})
    if refused:
        by_reason: dict[str, list[str]] = {}
        for key, why in refused.items():
            by_reason.setdefault(why, []).append(f"`{key}`")
        listed = "; ".join(f"{', '.join(keys)}: {why}" for why, keys in by_reason.items())
        note += f" Refused here, as llmctl's own: {listed}."
    misplaced: dict[str, str] = getattr(cls, "MISPLACED", {})
    if misplaced:
        listed = ", ".join(f"`{key}` ({section})" for key, section in misplaced.items())
        note += f" Refused here because LiteLLM reads them from another section: {listed}."
    return note


def sections(
    cls: type[BaseModel] = schema.Config, path: str = "", only: list[str] | None = None
) -> list[Section]:
    """The config as sections, each followed by the sections below it."""
    hints = typing.get_type_hints(cls, include_extras=True)
    here = Section(path, _note(cls) if path else "")
    below: list[Section] = []
    for name in only if only is not None else list(cls.model_fields):
        info, tp = cls.model_fields[name], hints[name]
        key = f"{path}.{name}" if path else name
        mapped = _map_values(tp)
        is_map = mapped is not None
        inner = _models_in(mapped if is_map else tp)
        here.rows.append((key, type_text(tp), default_text(info), meaning(info, inner[0] if inner else None)))
        child = f"{key}.{LABELS.get(name, 'NAME')}" if is_map else key
        if len(inner) > 1:
            below += _kinds(child, inner)
        elif inner:
            below += sections(inner[0], child)
    return [here, *below]


def _kinds(path: str, models: list[type[BaseModel]]) -> list[Section]:
    """A discriminated union (the backends): the keys every kind has, then what each adds."""
    shared = [n for n in models[0].model_fields if all(n in m.model_fields for m in models)]
    common, *below = sections(models[0], path, only=shared)
    common.note = "Every kind has these keys; the sections after them list what each kind adds."
    kinds = " or ".join(f"`{_kind_of(m)}`" for m in models)
    # The discriminator first: it decides which of the sections below apply.
    common.rows = [(f"{path}.kind", kinds, "required", "Which server it is.")] + [
        row for row in common.rows if row[0] != f"{path}.kind"
    ]
    out = [common, *below]
    for model in models:
        extra = [n for n in model.model_fields if n not in shared]
        first, *rest = sections(model, path, only=extra)
        first.path = f"{path} (kind: {_kind_of(model)})"
        out += [first, *rest]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_reference() -> str:
    lines = [HEADER.format(version=schema.SCHEMA_VERSION)]
    for section in sections():
        lines += [f"## `{section.path}`" if section.path else "## Top level", ""]
        if section.note:
            lines += [section.note, ""]
        if not section.rows:
            lines += ["(no keys of its own)", ""]
            continue
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        lines += [
            f"| `{key}` | {_cell(tp)} | {_cell(default if default in PLAIN_DEFAULTS else f'`{default}`')} "
            f"| {_cell(text)} |"
            for key, tp, default, text in section.rows
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def undescribed() -> list[str]:
    """Keys whose meaning is empty: every key must say what it does."""
    return [key for section in sections() for key, _, _, text in section.rows if not text]


if __name__ == "__main__":
    print(render_reference(), end="")
