"""Starts Flower (the Celery dashboard) on the stack's broker: ``python -m tasks.flower_app [--port N]``.

With ``API_KEYS`` set, Flower is behind HTTP basic auth: user ``mlx`` (or
``FLOWER_USER``), password the first API key, unless ``FLOWER_BASIC_AUTH``
(``user:password``) says otherwise. It listens on loopback unless told.
"""

from __future__ import annotations

import argparse
import os
import sys

from config.settings import Settings


def basic_auth(settings: Settings, environ: dict[str, str]) -> str | None:
    """``user:password`` for Flower, or None when the API is open (no keys)."""
    if environ.get("FLOWER_BASIC_AUTH"):
        return environ["FLOWER_BASIC_AUTH"]
    keys = settings.api_key_list
    if not keys:
        return None
    return f"{environ.get('FLOWER_USER', 'mlx')}:{keys[0]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    auth = basic_auth(Settings.from_env(), env)
    if auth:
        env["FLOWER_BASIC_AUTH"] = auth  # through the environment, so the key is never on a command line
    celery = os.path.join(os.path.dirname(sys.executable), "celery")
    command = [celery, "-A", "tasks.control_app", "flower", f"--port={args.port}", f"--address={args.address}"]
    os.execve(celery, command, env)


if __name__ == "__main__":
    main()
