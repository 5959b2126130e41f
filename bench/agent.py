"""Section: an agent's conversation, 12 turns whose context grows to about 6,000 tokens (tool calls and results
included, as an agent re-sends them every turn), on the platform and ``mlx_lm.server``; then the same conversation
with the server restarted after turn 6 (the platform's worker killed and started again by its supervisor: its
prompt cache's disk tier serves; ``mlx_lm.server`` stopped and started: cold).

The requests offer no tool definitions: a streamed tool call arrives whole, so its first chunk would time the answer,
not the prompt. An answer without text counts its stream's end as its first token (an upper bound).
"""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import progress
from bench.client import TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, CHAT_MODEL_DIR, openblas_library
from bench.report import SectionResult, Table
from bench.servers import start_mlx_lm_server
from models.catalog import slug
from models.liveness import Liveness
from tests.stack import wait_until

NAME = "agent"
TITLE = "Agent conversations: 12 turns growing to about 6,000 tokens, and a restart at turn 6"
TURNS = 12
RESTART_AFTER = 6
MAX_TOKENS = 16
SYSTEM = (
    "You are a coding agent working in a Python repository. Use the tools to read files and run tests, one call at "
    "a time, then explain the fix. Keep answers short. Never invent file contents: read them first. "
)


def tool_output(turn: int, lines: int) -> str:
    """What a tool sends back: about ``lines`` lines of a made-up module (numbered, so no two turns repeat)."""
    return "\n".join(
        f"{turn:02d}.{n:03d}  def handler_{turn}_{n}(request): return request.get('field_{n}', {n * turn})"
        for n in range(lines)
    )


def conversation(nonce: str, lines: int) -> list[list[dict[str, Any]]]:
    """The messages the agent sends at each turn: the whole history, then a tool result (a user task at turn 1)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"Session {nonce}. {SYSTEM}"},
        {"role": "user", "content": "The tests of the request handlers fail since yesterday. Find out why and fix it."},
    ]
    turns = [list(messages)]
    for turn in range(2, TURNS + 1):
        tool = ("read_file", "run_tests", "list_folder")[turn % 3]
        call_id = f"call_{turn}"
        arguments = json.dumps({"path": f"src/handlers_{turn}.py"})
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": tool, "arguments": arguments}}],
            }
        )
        messages.append({"role": "tool", "tool_call_id": call_id, "content": tool_output(turn, lines)})
        turns.append(list(messages))
    return turns


class Server:
    """One server under test that can be restarted between two turns."""

    def __init__(self, label: str, base_url: str, model: str, restart: Callable[[], str]) -> None:
        self.label, self.base_url, self.model, self._restart = label, base_url, model, restart

    def restart(self) -> None:
        self.base_url = self._restart()


def platform_server(context: BenchContext) -> Server:
    platform = context.platform()
    folder = Path(platform.env["DATA_DIR"]) / "prompt-cache" / slug(CHAT_MODEL)

    def restart() -> str:
        assert platform.redis is not None
        # The last turn's cache is written off the engine thread after its answer: wait for the file (a real
        # restart can come at any time; here it is the disk tier that is measured, not a race with its writer).
        since = time.time() - 1

        def written() -> bool:
            files = [p for p in folder.glob("*/*.safetensors") if not p.name.startswith(".")]
            return any(p.stat().st_mtime >= since - 120 for p in files) and not any(folder.glob("*/.tmp-*"))

        wait_until(written, 120, "the last turn's prompt cache on disk")
        killed = Liveness(platform.redis, 6).workers(CHAT_MODEL)[0]["pid"]
        os.kill(killed, signal.SIGKILL)
        wait_until(
            lambda: any(w["pid"] != killed for w in Liveness(platform.redis, 6).workers(CHAT_MODEL)),
            300,
            "the supervisor to start the killed worker again",
        )
        return platform.base_url

    return Server("platform (1 worker, SIGKILL at the restart)", platform.base_url, CHAT_MODEL, restart)


def run_conversation(server: Server, turns: list[list[dict[str, Any]]], restart_after: int | None) -> list[dict]:
    counter = TokenCounter()
    rows = []
    for index, messages in enumerate(turns, start=1):
        client = make_client(server.base_url)
        with progress.ticking(f"{server.label}: turn {index} of {len(turns)}"):
            timing = stream_chat(client, server.model, messages, MAX_TOKENS, counter)
        empty = not timing.ok and timing.error == "the stream carried no text"
        if not timing.ok and not empty:
            raise RuntimeError(f"turn {index}: {timing.error}")
        # An answer without text (the model ended at once): its first token came no later than the stream's end.
        ttft = timing.total_s if empty else timing.ttft_s
        rows.append({"turn": index, "ttft_s": ttft, "total_s": timing.total_s, "cached": timing.cached_tokens})
        if restart_after == index:
            progress.say(f"{server.label}: restarting after turn {index}")
            server.restart()
    return rows


def run(context: BenchContext) -> SectionResult:
    options = context.options
    result = SectionResult(NAME, TITLE)
    lines = 8 if options.quick else 17
    counter = TokenCounter()
    measured: dict[str, dict[str, list[dict]]] = {}
    prompt_tokens: list[int] = []
    for name in ("platform", "mlx-lm"):
        try:
            if name == "platform":
                server = platform_server(context)
                measured[server.label] = {
                    run_name: run_conversation(server, conversation(uuid.uuid4().hex[:8], lines), restart)
                    for run_name, restart in (("straight", None), ("restart", RESTART_AFTER))
                }
            else:
                measured.update(mlx_lm_runs(context, lines))
        except Exception as exc:  # noqa: BLE001 - one server failing must not lose the other's figures
            traceback.print_exc()
            result.notes.append(f"{name}: failed ({type(exc).__name__}: {exc})")
    sample = conversation("00000000", lines)
    prompt_tokens = [sum(counter.count(str(m.get("content") or "")) for m in turn) for turn in sample]
    labels = list(measured)
    columns = ["turn", "context tokens (about)"]
    for label in labels:
        columns += [f"{label}: TTFT s", f"{label}: after restart TTFT s", f"{label}: cached (after restart)"]
    table = Table(f"greedy, {MAX_TOKENS} tokens a turn; restart after turn {RESTART_AFTER}", columns)
    for index in range(TURNS):
        row: list[Any] = [index + 1, prompt_tokens[index]]
        for label in labels:
            straight, restarted = measured[label]["straight"][index], measured[label]["restart"][index]
            cached = restarted["cached"]
            row += [straight["ttft_s"], restarted["ttft_s"], "–" if cached is None else cached]
        table.rows.append(row)
    totals: list[Any] = ["total", ""]
    for label in labels:
        totals += [sum(r["total_s"] for r in measured[label]["straight"])]
        totals += [sum(r["total_s"] for r in measured[label]["restart"]), ""]
    table.rows.append(totals)
    result.tables.append(table)
    result.raw = {"turns": measured, "context_tokens": prompt_tokens}
    after = RESTART_AFTER  # the index of the turn after the restart in a 0-based list
    firsts = {label: measured[label]["restart"][after]["ttft_s"] for label in labels}
    if len(firsts) == 2:
        platform_label, peer_label = labels
        ratio = firsts[peer_label] / firsts[platform_label]
        result.notes.append(
            f"turn {after + 1}, the first after the restart: {platform_label} {firsts[platform_label]:.2f} s, "
            f"{peer_label} {firsts[peer_label]:.2f} s ({ratio:.1f}x; goal 10x)"
        )
    result.notes.append(
        "context tokens: the messages' own text retokenized (the chat template and the tool definitions add more)"
    )
    return result


def mlx_lm_runs(context: BenchContext, lines: int) -> dict[str, dict[str, list[dict]]]:
    """The two conversations on ``mlx_lm.server``, restarted (stopped, started: cold) at the restart."""
    progress.say(f"starting mlx_lm.server on {CHAT_MODEL_DIR.name}")
    holder = {"server": start_mlx_lm_server(CHAT_MODEL_DIR, context.log_dir, openblas_library())}

    def restart() -> str:
        holder["server"].stop()
        holder["server"] = start_mlx_lm_server(CHAT_MODEL_DIR, context.log_dir, openblas_library())
        return holder["server"].base_url

    label = "mlx_lm.server (restarted: stop, start)"
    try:
        server = Server(label, holder["server"].base_url, "default_model", restart)
        return {
            label: {
                run_name: run_conversation(server, conversation(uuid.uuid4().hex[:8], lines), restart_at)
                for run_name, restart_at in (("straight", None), ("restart", RESTART_AFTER))
            }
        }
    finally:
        holder["server"].stop()
