"""The prompt cache's disk tier outlives its worker: a long prompt's K/V, written to the session's disk-tier folder,
serves the same prompt after the worker was killed with SIGKILL and started again by the supervisor.

A copy of the chat model of its own (context 4,096) is loaded for it, so the kill costs no other test its model.
The prompt is about 1,500 tokens: computing it once, cold, is most of this test's time (and the point). That cold
answer is asked as a job, whose deadline a busy machine cannot pass (an interactive request's is 120 s here).
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    CHAT_MODEL_DIR,
    load_model,
    submit_job,
    unload_model,
    wait_for_job,
    worker_is_live,
    worker_pid,
)
from tests.stack import wait_until
from tests.test_metrics import scrape, value

DISK_MODEL = "test/disk-tier-chat"


@pytest.fixture()
def disk_chat(base_url: str) -> str:
    loaded = load_model(base_url, str(CHAT_MODEL_DIR), DISK_MODEL, context_length=4096)
    assert loaded.status_code == 200, loaded.text
    yield DISK_MODEL
    unload_model(base_url, DISK_MODEL, force=True)


def long_prompt() -> list[dict[str, str]]:
    """About 1,500 tokens of facts, unique to the run, and a question about them: past the disk tier's 1,024 tokens
    (``PROMPT_CACHE_DISK_MIN_TOKENS``), and short enough that its cold prefill is not most of the test."""
    facts = " ".join(f"Item {i}: the {('red', 'blue', 'green')[i % 3]} box holds {i * 7} marbles." for i in range(96))
    return [
        {"role": "system", "content": f"Inventory {uuid.uuid4().hex}. {facts}"},
        {"role": "user", "content": "How many marbles are in item 3?"},
    ]


def test_a_long_prefix_survives_a_killed_worker_and_answers_the_same(
    base_url, jobs_url, client, redis_client, stack, disk_chat
):
    messages = long_prompt()
    job = submit_job(jobs_url, disk_chat, "chat", {"messages": messages, "max_tokens": 6, "temperature": 0})
    assert job.status_code == 202, job.text
    cold = wait_for_job(jobs_url, job.json()["job_id"], timeout=600)
    assert cold["status"] == "completed", cold
    usage = cold["result"]["usage"]
    assert usage["prompt_tokens"] >= 1400
    assert usage["prompt_tokens_details"]["cached_tokens"] < 16  # at most the chat template's opening tokens
    folder = Path(stack.env["PROMPT_CACHE_DISK_DIR"]) / "test--disk-tier-chat"

    def written() -> bool:
        return any(not path.name.startswith(".") for path in folder.glob("*/*.safetensors"))  # not a write under way

    wait_until(written, 120, "the prompt's cache on disk")

    killed = worker_pid(redis_client, disk_chat)
    os.kill(killed, signal.SIGKILL)

    def restarted() -> bool:
        status = requests.get(f"{base_url}/v1/models/{disk_chat}", timeout=10).json()["status"]
        live = worker_is_live(redis_client, disk_chat)
        return status == "loaded" and live and worker_pid(redis_client, disk_chat) != killed

    wait_until(restarted, 300, "the supervisor to start the killed worker again")
    before = scrape(base_url)
    warm = client.chat.completions.create(model=disk_chat, messages=messages, max_tokens=6, temperature=0)
    after = scrape(base_url)
    assert warm.usage.prompt_tokens_details.cached_tokens >= usage["prompt_tokens"] - 100
    assert warm.choices[0].message.content == cold["result"]["content"]
    disk = {"model": disk_chat, "tier": "disk"}
    assert value(after, "mlx_prompt_cache_tier_hits_total", **disk) == (
        value(before, "mlx_prompt_cache_tier_hits_total", **disk) + 1
    )
    assert value(after, "mlx_prompt_cache_tier_tokens_total", **disk) - value(
        before, "mlx_prompt_cache_tier_tokens_total", **disk
    ) == (warm.usage.prompt_tokens_details.cached_tokens)
