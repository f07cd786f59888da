"""Runbooks (docs/runbooks/*.md), printed with the user's own unit names, ports and paths.

The Markdown files are jinja2 templates with a few variables (name, unit, host, port, kind,
config_path, ...); on GitHub they read as-is, with `{{ unit }}` where a unit name goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmctl.errors import ExitCode, LlmctlError


def runbooks_dir() -> Path:
    """Shipped in the wheel as llmctl/runbooks; in a checkout, docs/runbooks."""
    packaged = Path(__file__).resolve().parent / "runbooks"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "docs" / "runbooks"


@dataclass(frozen=True)
class Runbook:
    name: str
    title: str
    path: Path


def list_runbooks() -> list[Runbook]:
    books = []
    for path in sorted(runbooks_dir().glob("*.md")):
        first = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
        books.append(Runbook(path.stem, first.lstrip("# ").strip(), path))
    return books


# What a runbook shows when there is no config (or no backend) to take values from.
PLACEHOLDERS = {
    "name": "NAME",
    "unit": "llmctl-NAME.service",
    "host": "127.0.0.1",
    "port": "PORT",
    "kind": "KIND",
    "config_path": "~/.config/llmctl/llmctl.yaml",
    "gateway_unit": "llmctl-gateway.service",
    "gateway_port": "4000",
    "state_dir": "~/.local/state/llmctl",
    "unit_dir": "~/.config/systemd/user",
}


def render(name: str, values: dict[str, str] | None = None) -> str:
    import jinja2  # noqa: PLC0415 - only this command needs it

    known = {book.name: book for book in list_runbooks()}
    if name not in known:
        raise LlmctlError(
            f"no runbook named {name!r}",
            hint="llmctl runbook lists them: " + ", ".join(sorted(known)),
            exit_code=ExitCode.USAGE,
        )
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)  # noqa: S701 - Markdown
    template = env.from_string(known[name].path.read_text(encoding="utf-8"))
    return template.render({**PLACEHOLDERS, **(values or {})})
