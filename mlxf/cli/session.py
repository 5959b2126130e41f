"""What every command is given (the API client, JSON or not), and the ``--json`` option each command takes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from mlxf.client import Platform


class Session:
    def __init__(self, platform: Platform, as_json: bool) -> None:
        self.platform = platform
        self.as_json = as_json


def command_session(command: Callable[..., Any]) -> Callable[..., Any]:
    """Gives ``command`` the ``Session`` as its first argument, and a ``--json`` option of its own
    (``mlxf models --json`` as well as ``mlxf --json models``)."""

    @click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON, for scripts.")
    @functools.wraps(command)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        session = click.get_current_context().find_object(Session)
        session.as_json = session.as_json or as_json
        return command(session, *args, **kwargs)

    return wrapper
