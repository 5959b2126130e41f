"""Tool calling through the running stack with the official ``openai`` client and LangChain's ``ChatOpenAI``.

SmolLM2's chat template knows no tools, so the platform describes them in the system prompt (Hermes format)
and parses ``<tool_call>`` blocks; with ``tool_choice`` ``required`` or a named function, constrained decoding
makes even this 135M model produce a valid call.
"""

from __future__ import annotations

import json

import jsonschema
import requests

from tests.conftest import CHAT_MODEL, ask

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
    },
}
QUESTION = ask("What is the weather in Paris?")


def test_required_tool_choice_returns_a_valid_call(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        max_tokens=60,
        temperature=0,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    schema = {WEATHER["function"]["name"]: WEATHER, TIME["function"]["name"]: TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), schema["function"]["parameters"])


def test_a_named_function_is_the_one_called(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        max_tokens=60,
        temperature=0,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )
    [call] = answer.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    jsonschema.validate(json.loads(call.function.arguments), TIME["function"]["parameters"])


def test_streamed_calls_come_as_deltas_and_never_as_markup(client):
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        max_tokens=60,
        temperature=0,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        stream=True,
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert "<tool_call>" not in content and "get_weather" not in content
    pieces = [piece for chunk in chunks for piece in chunk.choices[0].delta.tool_calls or []]
    first, *rest = pieces
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "get_weather"
    assert rest and all(p.id is None and p.type is None and p.function.name is None for p in rest)
    arguments = json.loads((first.function.arguments or "") + "".join(p.function.arguments for p in rest))
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_results_are_taken_in_the_next_turn(client):
    first = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        max_tokens=60,
        temperature=0,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    call = first.choices[0].message.tool_calls[0]
    conversation = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "It is 31 degrees and sunny in Paris."},
    ]
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=conversation, max_tokens=30, temperature=0, tools=[WEATHER], tool_choice="none"
    )
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert "31" in choice.message.content


def test_tool_choice_none_answers_in_text(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, max_tokens=20, temperature=0, tools=[WEATHER], tool_choice="none"
    )
    choice = answer.choices[0]
    assert choice.message.content and not choice.message.tool_calls and "<tool_call>" not in choice.message.content


def test_parallel_calls_are_all_returned(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask("What is the weather in Paris, and what time is it in Tokyo?"),
        max_tokens=120,
        temperature=0,
        tools=[WEATHER, TIME],
        tool_choice="required",
    )
    calls = answer.choices[0].message.tool_calls
    assert len(calls) >= 2
    assert len({c.id for c in calls}) == len(calls)
    for call in calls:
        tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_bad_tool_requests_are_refused_naming_the_field(base_url):
    cases = [
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"messages": [*QUESTION, {"role": "tool", "content": "18 C"}]},
            "messages[1].tool_call_id",
        ),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}],
                "tool_choice": "required",
            },
            "tools",
        ),
    ]
    for extra, param in cases:
        body = {"model": CHAT_MODEL, "messages": QUESTION, "max_tokens": 8, **extra}
        response = requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["error"]["param"] == param, (extra, response.text)


def test_langchain_bind_tools(base_url):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return f"Sunny in {city}"

    model = ChatOpenAI(
        model=CHAT_MODEL, base_url=f"{base_url}/v1", api_key="not-needed", temperature=0, max_tokens=60, max_retries=0
    )
    message = model.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    [call] = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]
