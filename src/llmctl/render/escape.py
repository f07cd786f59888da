"""Quoting for systemd unit files (systemd 252 rules, checked against the real parser).

What systemd does to the text we write, per directive:
- `ExecStart=` and friends split words with shell-like quotes, decode C escapes (`\\"`, `\\\\`),
  expand specifiers (`%h`; `%%` is a literal `%`) and then, in the arguments only, variables
  (`$X`, `${X}`; `$$` is a literal `$`): in the executable's path a `$` is literal, and quotes
  or backslashes are refused outright. A quoted `";"` is an argument, an unquoted one
  separates commands.
- `Environment=` takes quoted `"K=V"` words with the same quote and specifier rules, but does
  **not** expand `$`: `$$` stays `$$` there.
- Every other value (Description=, paths) only expands specifiers.
A newline would end the directive and start another, so control characters are refused
here as well as in the config schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ExpandedVariable(str):
    """An ExecStart word that systemd must expand, e.g. ${MAINPID}; written unquoted."""

    __slots__ = ()


def _check(value: str, what: str) -> None:
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains a control character: {value!r}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_NEEDS_QUOTES = re.compile(r"""[\s"'\\;]""")


def exec_word(word: str) -> str:
    """One argv item for ExecStart=: `%` and `$` doubled, quoted when it must be."""
    if isinstance(word, ExpandedVariable):
        if not re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*\}", word):
            raise ValueError(f"not a variable reference: {word!r}")
        return str(word)
    _check(word, "argument")
    word = word.replace("%", "%%").replace("$", "$$")
    # Quoting only where needed keeps `systemctl --user cat` readable.
    return _quote(word) if not word or _NEEDS_QUOTES.search(word) else word


def exec_line(argv: Iterable[str]) -> str:
    words = list(argv)
    if not words or not words[0].startswith("/"):
        # systemd does not search $PATH; a leading -, @, +, ! or : would be read as a prefix.
        raise ValueError(f"the executable must be an absolute path, got {words[:1]!r}")
    if any(c in words[0] for c in "\\\"'"):
        # systemd refuses these in an executable's path however they are quoted.
        raise ValueError(
            f"systemd cannot run an executable whose path contains a quote or backslash: {words[0]!r}"
        )
    # The executable's path gets specifiers expanded but no variables: a `$` there is literal
    # (checked against systemd 252), so only the arguments double it.
    executable = words[0].replace("%", "%%")
    _check(executable, "executable")
    first = _quote(executable) if _NEEDS_QUOTES.search(executable) else executable
    return " ".join([first, *(exec_word(w) for w in words[1:])])


def env_assignment(name: str, value: str) -> str:
    """One `"NAME=value"` word for Environment=: quoted, `%` doubled, `$` left alone."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not a valid environment variable name: {name!r}")
    _check(value, f"value of {name}")
    return _quote(f"{name}={value}".replace("%", "%%"))


def plain_value(value: str) -> str:
    """Description=, paths: only specifiers are expanded; whitespace at the ends is dropped."""
    _check(value, "value")
    return value.replace("%", "%%").strip()


def unit_word_list(words: Iterable[str]) -> str:
    """Space-separated unit names or variable names (Wants=, After=, UnsetEnvironment=)."""
    out = []
    for word in words:
        if not re.fullmatch(r"[A-Za-z0-9_.@:-]+", word):
            raise ValueError(f"not a unit or variable name: {word!r}")
        out.append(word)
    return " ".join(out)
