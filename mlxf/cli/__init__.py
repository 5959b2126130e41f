"""``mlxf``: the platform from a terminal, in Ollama's habits (``mlxf models``, ``mlxf chat MODEL``, ...).

Every command is a call of the HTTP API at ``MLXF_URL`` (default http://127.0.0.1:8000) with ``MLXF_API_KEY`` as
its bearer key; ``--json`` prints the API's answer for scripts. An API error is printed as one line naming the
field it is about, with exit status 1.
"""

from __future__ import annotations

from typing import Any

import click

from mlxf.cli import batch, chat, jobs, models, rag
from mlxf.cli.session import Session
from mlxf.client import DEFAULT_URL, Platform, PlatformError


class ApiErrors(click.Group):
    """An API error ends the command with its one-line description instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PlatformError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=ApiErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="MLXF_URL", default=DEFAULT_URL, show_default=True, help="The API (env MLXF_URL).")
@click.option("--api-key", envvar="MLXF_API_KEY", help="Sent as a bearer token (env MLXF_API_KEY).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON, for scripts.")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, as_json: bool) -> None:
    """Run, manage and query the models of an mlx-fusion platform."""
    ctx.obj = Session(Platform(url, api_key), as_json)


for command in (
    models.models,
    models.load,
    models.unload,
    models.pull,
    chat.chat,
    jobs.jobs,
    jobs.job,
    jobs.cancel,
    rag.rag,
    batch.batch,
):
    cli.add_command(command)
cli.add_command(chat.chat, name="run")  # as ``ollama run MODEL``


def main() -> None:
    cli()
