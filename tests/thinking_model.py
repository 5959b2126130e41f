"""A copy of the chat model that "thinks": two unused special tokens of its vocabulary renamed ``<think>`` and
``</think>`` (so mlx-lm detects thinking, with ids the model has), and a chat template that opens the think block
at the end of the prompt unless ``enable_thinking`` is false and that reads ``reasoning_effort``. The weights are
the real SmolLM2 weights, untrained for thinking: the tests steer when the block closes with ``logit_bias``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.stack import link_tree

THINK, END_THINK = 13, 14
"""Ids of ``<jupyter_code>`` and ``<jupyter_output>`` in SmolLM2's vocabulary, renamed."""
TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if reasoning_effort is defined %}{{ 'Effort: ' + reasoning_effort + '\\n' }}{% endif %}"
    "{% if enable_thinking is not defined or enable_thinking %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)


def make_thinking_model(source: Path, target: Path) -> Path:
    link_tree(source, target, copy=("tokenizer.json", "tokenizer_config.json"))
    renames = {THINK: "<think>", END_THINK: "</think>"}
    tokenizer = json.loads((target / "tokenizer.json").read_text())
    for token in tokenizer["added_tokens"]:
        if token["id"] in renames:
            old, token["content"] = token["content"], renames[token["id"]]
            vocab = tokenizer["model"]["vocab"]
            vocab[renames[token["id"]]] = vocab.pop(old)
    (target / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = json.loads((target / "tokenizer_config.json").read_text())
    for token_id, entry in config.get("added_tokens_decoder", {}).items():
        if int(token_id) in renames:
            entry["content"] = renames[int(token_id)]
    config["chat_template"] = TEMPLATE
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    return target
