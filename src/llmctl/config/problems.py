"""A problem found in a config, named by its YAML path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """backends.llama-native.port, models."qwen2.5-7b".source, gateway.fallbacks.a[0]."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        text = item if re.fullmatch(r"[A-Za-z0-9_-]+", item) else f'"{item}"'
        parts.append(("." if parts else "") + text)
    return "".join(parts) or "(top level)"


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str
    severity: Literal["error", "warning"] = "error"

    def describe(self, positions: dict[Loc, int] | None = None) -> str:
        line = (positions or {}).get(self.loc)
        return f"{format_loc(self.loc)}{f' (line {line})' if line else ''}: {self.message}"
