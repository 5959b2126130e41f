"""Tool calls found in streamed model output, per format, and the grammar that forces one (no services)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from models.tool_calls import (
    HERMES,
    LLAMA3,
    MISTRAL,
    ToolCallScanner,
    forced_call_grammar,
    format_for,
    template_messages,
    tool_use,
)

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def scan(scanner: ToolCallScanner, text: str, piece: int = 1) -> tuple[str, list[dict]]:
    """Feeds ``text`` a few characters at a time, as a stream arrives; returns the streamed content and calls."""
    content, calls = "", []
    for start in range(0, len(text), piece):
        out, found = scanner.feed(text[start : start + piece])
        content, calls = content + out, calls + found
    out, found = scanner.finish()
    return content + out, calls + found


@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_hermes_blocks_become_calls_and_never_content(piece):
    text = 'Let me look. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    text += '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>\n'
    content, calls = scan(ToolCallScanner(HERMES), text, piece)
    assert content == "Let me look. "
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert [c["index"] for c in calls] == [0, 1] and all(c["id"].startswith("call_") for c in calls)
    assert all(c["type"] == "function" and c["function"]["name"] == "get_weather" for c in calls)


def test_without_parallel_calls_only_the_first_is_kept():
    text = '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>'
    _content, calls = scan(ToolCallScanner(HERMES, parallel=False), text)
    assert [c["function"]["name"] for c in calls] == ["a"]


def test_a_block_that_is_no_call_stays_text_and_a_cut_off_one_is_dropped():
    assert scan(ToolCallScanner(HERMES), "<tool_call>not json</tool_call> ok") == (
        "<tool_call>not json</tool_call> ok",
        [],
    )
    assert scan(ToolCallScanner(HERMES), 'Hi <tool_call>{"name": "get_wea') == ("Hi ", [])


def test_text_that_only_looks_like_a_marker_start_is_released():
    assert scan(ToolCallScanner(HERMES), "a <tool and more") == ("a <tool and more", [])


def test_mistral_lists_and_llama_json():
    content, calls = scan(
        ToolCallScanner(MISTRAL), '[TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {}}]'
    )
    assert content == "" and [c["function"]["name"] for c in calls] == ["f", "g"]
    content, calls = scan(ToolCallScanner(LLAMA3, llama_json=True), '{"name": "f", "parameters": {"x": 2}}')
    assert content == "" and json.loads(calls[0]["function"]["arguments"]) == {"x": 2}
    content, calls = scan(ToolCallScanner(LLAMA3, llama_json=True), '<|python_tag|>{"name": "f", "parameters": {}}')
    assert content == "" and calls[0]["function"]["name"] == "f"
    assert scan(ToolCallScanner(LLAMA3, llama_json=True), "Plain {answer}") == ("Plain {answer}", [])


def test_the_format_comes_from_the_chat_template():
    def tokenizer(template: str, **extra):
        return SimpleNamespace(_tokenizer=SimpleNamespace(chat_template=template), has_tool_calling=False, **extra)

    assert format_for(tokenizer("{{ messages }}")) is HERMES
    assert format_for(tokenizer("{% if tools %}[TOOL_CALLS]{% endif %}")) is MISTRAL
    assert format_for(tokenizer("Environment: ipython <|python_tag|>")) is LLAMA3
    declared = format_for(
        SimpleNamespace(
            _tokenizer=SimpleNamespace(chat_template="<|tool_call_start|>"),
            has_tool_calling=True,
            tool_call_start="<|tool_call_start|>",
            tool_call_end="<|tool_call_end|>",
            tool_parser=lambda text, tools: {"name": text.strip(), "arguments": '{"q": 1}'},
        )
    )
    assert declared.rendered_by_template and not declared.json_body
    _content, calls = scan(ToolCallScanner(declared), "<|tool_call_start|>lookup<|tool_call_end|>")
    assert calls[0]["function"] == {"name": "lookup", "arguments": '{"q": 1}'}


def test_tool_choice_decides_whether_and_how_a_call_is_forced():
    options = {"whitespace_flexible": False}
    assert tool_use({"tools": [WEATHER], "tool_choice": "none"}, HERMES, options) is None
    assert tool_use({"messages": []}, HERMES, options) is None
    assert tool_use({"tools": [WEATHER]}, HERMES, options).grammar is None
    forced = tool_use({"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}, HERMES, options)
    assert forced.grammar.startswith("start: call\n") and '"const": "get_weather"' in forced.grammar
    assert forced_call_grammar(HERMES, [WEATHER], True, options).startswith("start: call+\n")
    template_format = format_for(
        SimpleNamespace(
            _tokenizer=SimpleNamespace(chat_template=""),
            has_tool_calling=True,
            tool_call_start="<f>",
            tool_call_end="</f>",
            tool_parser=lambda text, tools: {},
        )
    )
    with pytest.raises(ValueError, match="cannot be forced"):
        tool_use({"tools": [WEATHER], "tool_choice": "required"}, template_format, options)


def test_a_template_without_tools_gets_them_described_and_past_calls_in_hermes_blocks():
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 C, sunny"},
    ]
    rendered = template_messages(messages, [WEATHER], HERMES)
    assert rendered[0]["role"] == "system" and "<tools>" in rendered[0]["content"]
    assert '"name": "get_weather"' in rendered[2]["content"] and rendered[2]["content"].startswith("<tool_call>")
    assert rendered[3] == {"role": "user", "content": "<tool_response>\n18 C, sunny\n</tool_response>"}
    by_template = template_messages(messages, [WEATHER], MISTRAL)
    assert by_template[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert by_template[2]["tool_call_id"] == "c1"
