"""``mlxf chat MODEL``: a conversation in the terminal, each answer streamed as it is generated (``ollama run``)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from mlxf.cli.output import print_json
from mlxf.cli.session import Session, command_session

END = "/bye"


@click.command()
@click.argument("model")
@click.argument("prompt", required=False)
@click.option("--system", help="A system message before the conversation.")
@click.option("--max-tokens", type=int, help="At most this many tokens an answer.")
@click.option("--temperature", type=float)
@click.option("--seed", type=int)
@click.option("--verbose", is_flag=True, help="After each answer: tokens and tokens per second.")
@command_session
def chat(
    session: Session,
    model: str,
    prompt: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    verbose: bool,
) -> None:
    """Chat with MODEL. With PROMPT (or text on standard input), one answer; else a conversation: type a message,
    read the answer as it streams, /bye (or Ctrl-D) to end."""
    sampling = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    body: dict[str, Any] = {"model": model, **{k: v for k, v in sampling.items() if v is not None}}
    messages = [{"role": "system", "content": system}] if system else []
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if prompt is not None:
        messages.append({"role": "user", "content": prompt})
        if session.as_json:
            print_json(session.platform.post("/v1/chat/completions", {**body, "messages": messages}))
        else:
            answer(session, body, messages, verbose)
        return
    while True:
        try:
            said = click.prompt(">>>", prompt_suffix=" ")
        except (EOFError, click.Abort):
            click.echo()
            return
        if said.strip() == END:
            return
        messages.append({"role": "user", "content": said})
        messages.append({"role": "assistant", "content": answer(session, body, messages, verbose)})


def answer(session: Session, body: dict[str, Any], messages: list[dict[str, str]], verbose: bool) -> str:
    """Streams the model's answer to ``messages`` to the terminal; the answer's text."""
    started = time.monotonic()
    pieces: list[str] = []
    usage: dict[str, Any] = {}
    request = {**body, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    for chunk in session.platform.stream("/v1/chat/completions", request):
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices", []):
            piece = (choice.get("delta") or {}).get("content") or ""
            pieces.append(piece)
            click.echo(piece, nl=False)
    click.echo()
    if verbose and usage:
        seconds = time.monotonic() - started
        tokens = usage.get("completion_tokens", 0)
        click.echo(
            f"{usage.get('prompt_tokens', 0)} prompt tokens, {tokens} generated in {seconds:.2f}s"
            f" ({tokens / seconds:.1f} tokens/s)",
            err=True,
        )
    return "".join(pieces)
