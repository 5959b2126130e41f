"""The Anthropic Messages API with the official ``anthropic`` client against the running stack."""

from __future__ import annotations

import anthropic
import jsonschema
import pytest
import requests

from tests.conftest import CHAT_MODEL

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
# The anthropic client has no sampling arguments any more; clients that want them send them in the body.


@pytest.fixture()
def claude(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)


def test_a_message_with_a_system_prompt(claude, client):
    message = claude.messages.create(
        model=CHAT_MODEL,
        max_tokens=12,
        extra_body={"temperature": 0},
        system="You answer in one short sentence.",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    [block] = message.content
    assert block.type == "text" and block.text
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens <= 12
    same = client.chat.completions.create(
        model=CHAT_MODEL,
        max_tokens=12,
        extra_body={"temperature": 0},
        messages=[
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    )
    assert block.text == same.choices[0].message.content


def test_stop_sequences_and_max_tokens_are_reported(claude):
    stopped = claude.messages.create(
        model=CHAT_MODEL,
        max_tokens=40,
        extra_body={"temperature": 0},
        stop_sequences=["."],
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "."
    cut = claude.messages.create(model=CHAT_MODEL, max_tokens=2, extra_body={"temperature": 0}, messages=QUESTION)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2


def test_streamed_text_equals_the_whole_message(claude):
    whole = claude.messages.create(model=CHAT_MODEL, max_tokens=16, extra_body={"temperature": 0}, messages=QUESTION)
    with claude.messages.stream(
        model=CHAT_MODEL, max_tokens=16, extra_body={"temperature": 0}, messages=QUESTION
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 2 and "".join(pieces) == whole.content[0].text
    assert final.content[0].text == whole.content[0].text and final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_tool_use_round_trip(claude):
    message = claude.messages.create(
        model=CHAT_MODEL,
        max_tokens=60,
        extra_body={"temperature": 0},
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=QUESTION,
    )
    assert message.stop_reason == "tool_use"
    [call] = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER["input_schema"])

    answer = claude.messages.create(
        model=CHAT_MODEL,
        max_tokens=30,
        extra_body={"temperature": 0},
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=[
            *QUESTION,
            {"role": "assistant", "content": [block.model_dump() for block in message.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "It is 31 degrees and sunny in Paris."}
                ],
            },
        ],
    )
    assert answer.content[0].type == "text" and "31" in answer.content[0].text


def test_streamed_tool_use(claude):
    with claude.messages.stream(
        model=CHAT_MODEL,
        max_tokens=60,
        extra_body={"temperature": 0},
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=QUESTION,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "input_json" in kinds
    [call] = [block for block in final.content if block.type == "tool_use"]
    assert call.name == "get_weather" and final.stop_reason == "tool_use"
    jsonschema.validate(call.input, WEATHER["input_schema"])


def test_count_tokens_matches_the_prompt_the_model_reads(claude):
    counted = claude.messages.count_tokens(model=CHAT_MODEL, messages=QUESTION)
    message = claude.messages.create(model=CHAT_MODEL, max_tokens=1, extra_body={"temperature": 0}, messages=QUESTION)
    assert counted.input_tokens == message.usage.input_tokens + message.usage.cache_read_input_tokens > 0
    with_tools = claude.messages.count_tokens(model=CHAT_MODEL, messages=QUESTION, tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens


def test_errors_come_in_an_envelope_the_client_reads(claude, base_url):
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="no-such-model", max_tokens=4, messages=QUESTION)
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=CHAT_MODEL, max_tokens=4, messages=[{"role": "system", "content": "x"}])
    assert "messages[0].role" in str(caught.value)
    response = requests.post(f"{base_url}/v1/messages", json={"model": CHAT_MODEL, "messages": QUESTION}, timeout=30)
    body = response.json()
    assert response.status_code == 400 and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "max_tokens"
    image = [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": ""}}]}]
    refused = requests.post(
        f"{base_url}/v1/messages", json={"model": CHAT_MODEL, "max_tokens": 4, "messages": image}, timeout=30
    )
    assert refused.status_code == 400 and "image" in refused.json()["error"]["message"]
    thinking = requests.post(
        f"{base_url}/v1/messages",
        json={"model": CHAT_MODEL, "max_tokens": 4, "messages": QUESTION, "thinking": {"type": "enabled"}},
        timeout=30,
    )
    assert thinking.status_code == 400 and thinking.json()["error"]["param"] == "thinking"
