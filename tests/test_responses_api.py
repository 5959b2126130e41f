"""The OpenAI Responses API with the official ``openai`` client against the running stack."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import requests

from tests.conftest import CHAT_MODEL

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_a_response_with_instructions(client):
    response = client.responses.create(
        model=CHAT_MODEL,
        instructions="You answer in one short sentence.",
        input="What is the capital of France?",
        max_output_tokens=12,
        temperature=0,
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.output_text
    [item] = response.output
    assert item.type == "message" and item.role == "assistant" and item.content[0].type == "output_text"
    assert response.usage.output_tokens <= 12 and response.usage.input_tokens > 0
    same = client.chat.completions.create(
        model=CHAT_MODEL,
        max_tokens=12,
        temperature=0,
        messages=[
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    )
    assert response.output_text == same.choices[0].message.content


def test_a_cut_answer_is_incomplete(client):
    response = client.responses.create(model=CHAT_MODEL, input="Tell me a story.", max_output_tokens=3, temperature=0)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_stored_responses_continue_and_can_be_read_and_deleted(client, base_url):
    first = client.responses.create(
        model=CHAT_MODEL, input="My name is Zorbo. Remember it.", max_output_tokens=8, temperature=0
    )
    second = client.responses.create(
        model=CHAT_MODEL,
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=8,
        temperature=0,
    )
    alone = client.responses.create(model=CHAT_MODEL, input="What is my name?", max_output_tokens=8, temperature=0)
    # The second prompt holds the first turn (its input and answer) and the new question.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens > alone.usage.input_tokens
    assert second.previous_response_id == first.id

    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    gone = requests.post(
        f"{base_url}/v1/responses",
        json={"model": CHAT_MODEL, "input": "Hi", "previous_response_id": first.id},
        timeout=30,
    )
    assert gone.status_code == 404 and gone.json()["error"]["param"] == "previous_response_id"

    unstored = client.responses.create(model=CHAT_MODEL, input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_streamed_events_build_the_same_response(client):
    whole = client.responses.create(model=CHAT_MODEL, input="Say hi.", max_output_tokens=12, temperature=0)
    stream = client.responses.create(
        model=CHAT_MODEL, input="Say hi.", max_output_tokens=12, temperature=0, stream=True
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 2 and "".join(deltas) == whole.output_text
    assert events[-1].response.output_text == whole.output_text
    assert "response.output_text.done" in kinds and "response.output_item.done" in kinds


def test_function_calls_and_their_outputs(client):
    called = client.responses.create(
        model=CHAT_MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=60,
        temperature=0,
    )
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])

    answered = client.responses.create(
        model=CHAT_MODEL,
        previous_response_id=called.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": "It is 31 degrees and sunny in Paris."}
        ],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=30,
        temperature=0,
    )
    assert answered.output[0].type == "message" and "31" in answered.output_text


def test_streamed_function_call(client):
    stream = client.responses.create(
        model=CHAT_MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=60,
        temperature=0,
        stream=True,
    )
    events = list(stream)
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    jsonschema.validate(json.loads(arguments), WEATHER["parameters"])
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert done[0].type == "function_call" and done[0].arguments == arguments


def test_structured_text_format(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = client.responses.create(
        model=CHAT_MODEL,
        input="What is the capital of France?",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        max_output_tokens=30,
        temperature=0,
    )
    jsonschema.validate(json.loads(response.output_text), schema)


def test_unsupported_requests_are_refused_naming_the_field(base_url):
    cases = [
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0]"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"input": ""}, "input"),
    ]
    for extra, param in cases:
        body = {"model": CHAT_MODEL, "input": "Hi", **extra}
        response = requests.post(f"{base_url}/v1/responses", json=body, timeout=30)
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["error"]["param"] == param, (extra, response.text)
