"""LoRA adapters per row of one batch, in this process with the real chat model and the demo adapters trained at
set-up (``models.demo_adapters``): each row answers as the model with only its adapter loaded would, by mlx-lm's
own loader (``mlx_lm.load(path, adapter_path=...)``), and base rows as the base model, all in one batch."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from mlx_lm import load as load_lm

from config.errors import ApiError
from config.settings import Settings
from models.batch import Ticket
from models.demo_adapters import prepare_adapters
from models.handlers import load_handler
from models.handlers.base import ServingLimits
from models.handlers.lm import LanguageModelHandler
from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR
from tests.stack import ROOT

LIMITS = ServingLimits(max_sequences=8, prompt_cache_entries=0)
QUESTION = "Describe a lighthouse in one sentence."
OTHER = "What is a good name for a dog?"


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    from models.prepare import main as prepare_models

    assert prepare_models([CHAT_MODEL]) == 0
    return prepare_adapters(Settings(data_dir=ROOT / ".data"))


@pytest.fixture(scope="module")
def handler(folders: dict[str, Path]) -> Iterator[LanguageModelHandler]:
    handler = load_handler("lm", CHAT_MODEL_DIR, 2048, LIMITS)
    for name, folder in folders.items():
        handler.load_adapter({"adapter_id": name, "source": str(folder)})
    yield handler


def ticket(text: str, adapter: str | None = None) -> Ticket:
    payload = {"messages": [{"role": "user", "content": text}], "max_tokens": 8, "temperature": 0}
    if adapter is not None:
        payload["adapter"] = adapter
    return Ticket("chat", payload, lambda _e: None, lambda: False, lambda: False, Future(), "t")


def answers(handler: LanguageModelHandler, *tickets: Ticket) -> list[str]:
    for one in tickets:
        handler.batch.submit(one)
    handler.batch.step()
    assert len(handler.batch.running) == len(tickets), "every request runs in the one batch"
    while handler.batch.busy:
        handler.batch.step()
    return [one.future.result()["content"] for one in tickets]


def alone_with(folder: Path, *texts: str) -> list[str]:
    """The greedy answers of the chat model with only this adapter, loaded by mlx-lm itself (its own LoRA layers,
    the one adapter for every row)."""
    model, tokenizer = load_lm(str(CHAT_MODEL_DIR), adapter_path=str(folder))
    oracle = LanguageModelHandler(model, tokenizer, 2048, LIMITS)
    return answers(oracle, *(ticket(text) for text in texts))


def test_rows_with_different_adapters_and_none_share_one_batch(handler, folders):
    base, other_base = answers(handler, ticket(QUESTION), ticket(OTHER))
    together = answers(
        handler,
        ticket(QUESTION, "upper"),
        ticket(QUESTION),
        ticket(QUESTION, "ahoy"),
        ticket(OTHER),
        ticket(OTHER, "upper"),
    )
    assert together[1] == base and together[3] == other_base, "base rows answer as the base model"
    assert [together[0], together[4]] == alone_with(folders["upper"], QUESTION, OTHER)
    assert [together[2]] == alone_with(folders["ahoy"], QUESTION)
    assert together[0] == together[0].upper() != base, together[0]
    assert together[2].startswith("Ahoy") and not base.startswith("Ahoy"), together[2]


def test_an_unknown_adapter_is_a_404_naming_it(handler):
    one = ticket(QUESTION, "nope")
    handler.batch.submit(one)
    assert not handler.batch.busy
    with pytest.raises(ApiError) as raised:
        one.future.result(timeout=5)
    assert raised.value.status == 404 and "nope" in raised.value.message
