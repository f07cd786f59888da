"""`llmctl gateway ...`: the LiteLLM proxy in front of the backends."""

from __future__ import annotations

import click

from llmctl.cli.context import AppContext


@click.group("gateway")
def gateway_group() -> None:
    """The gateway (LiteLLM proxy)."""


@gateway_group.command("key")
@click.pass_obj
def gateway_key(app: AppContext) -> int:
    """Print the gateway's master key (clients send it as the bearer token)."""
    from llmctl.secrets import read_gateway_key  # noqa: PLC0415

    click.echo(read_gateway_key(app.paths.gateway_env_file))
    return 0


def register(group: click.Group) -> None:
    group.add_command(gateway_group)
