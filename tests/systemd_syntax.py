"""A pure-Python model of how systemd 252 reads the unit-file text llmctl writes.

Used as the oracle for property tests (thousands of cases, no systemd needed); the rules were
checked against the real parser by starting units that dump their argv and environment
(tests/integration/test_unit_escaping.py does the same against a real user manager).
"""

from __future__ import annotations

from dataclasses import dataclass

_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
              "\\": "\\", '"': '"', "'": "'", "s": " "}  # fmt: skip


@dataclass(frozen=True)
class Variable:
    """An ExecStart word left for systemd to expand at exec time (${MAINPID})."""

    name: str


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every directive, in order. Comments and blanks skipped."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if line.endswith("\\"):
            raise ValueError(f"line continuation: {raw!r}")
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not a directive: {raw!r}")
        out.append((section, key.strip(), value.strip()))
    return out


def split_words(value: str) -> list[tuple[str, bool]]:
    """systemd's extract_first_word with UNQUOTE|CUNESCAPE: (word, was_quoted) pairs."""
    words: list[tuple[str, bool]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            break
        word: list[str] = []
        quoted = False
        quote: str | None = None
        while i < n:
            ch = value[i]
            if quote is None and ch in " \t":
                break
            if ch == "\\" and i + 1 < n:
                nxt = value[i + 1]
                word.append(_C_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            if quote is None and ch in "\"'":
                quote, quoted = ch, True
            elif quote is not None and ch == quote:
                quote = None
            else:
                word.append(ch)
            i += 1
        if quote is not None:
            raise ValueError(f"unterminated quote in {value!r}")
        words.append(("".join(word), quoted))
    return words


def _specifiers(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "%":
            if text[i + 1 : i + 2] != "%":
                raise ValueError(f"unexpected specifier in {text!r}")
            out.append("%")
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def exec_argv(value: str) -> list[str | Variable]:
    """argv systemd would execute for an ExecStart= value (no prefixes, one command)."""
    argv: list[str | Variable] = []
    for raw, quoted in split_words(value):
        if raw == ";" and not quoted:
            raise ValueError("command separator")
        word = _specifiers(raw)
        if not argv:
            argv.append(word)  # the executable: no variable expansion, `$` is literal
            continue
        if word.startswith("${") and word.endswith("}") and "$" not in word[2:]:
            argv.append(Variable(word[2:-1]))
            continue
        out, i = [], 0
        while i < len(word):
            if word[i] == "$":
                if word[i + 1 : i + 2] != "$":
                    raise ValueError(f"variable expansion in {word!r}")
                out.append("$")
                i += 2
            else:
                out.append(word[i])
                i += 1
        argv.append("".join(out))
    if argv and isinstance(argv[0], str) and any(c in argv[0] for c in "\\\"'"):
        # systemd 252: "Executable name contains special characters" (string_is_safe()).
        raise ValueError(f"executable name contains special characters: {argv[0]!r}")
    return argv


def environment(values: list[str]) -> dict[str, str]:
    """Variables set by Environment= lines (later ones win; no $ expansion there)."""
    env: dict[str, str] = {}
    for value in values:
        for word, _quoted in split_words(value):
            name, sep, val = _specifiers(word).partition("=")
            if not sep:
                raise ValueError(f"not an assignment: {word!r}")
            env[name] = val
    return env
