"""Structured output: ``response_format`` enforced by constrained decoding (llguidance's mask on the CPU), through
the official ``openai`` client and LangChain's ``ChatOpenAI`` against the running stack."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import requests
from pydantic import BaseModel

from tests.conftest import CHAT_MODEL, ask

GREETING = {
    "type": "object",
    "properties": {"greeting": {"type": "string"}, "words": {"type": "integer"}},
    "required": ["greeting", "words"],
    "additionalProperties": False,
}


def schema_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


class Person(BaseModel):
    name: str
    age: int


def test_without_a_format_the_model_answers_in_prose(client):
    """The baseline the next tests change: the same prompt, unconstrained, is not JSON."""
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=ask("Say hi."), max_tokens=16, temperature=0)
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.choices[0].message.content)


def test_a_json_schema_is_enforced_even_on_a_prompt_that_asks_for_prose(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask("Say hi."),
        max_tokens=40,
        temperature=0,
        response_format=schema_format(GREETING),
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), GREETING)


def test_parse_with_a_pydantic_model(client):
    completion = client.chat.completions.parse(
        model=CHAT_MODEL,
        messages=ask("Invent a person with a name and an age."),
        max_tokens=40,
        temperature=0,
        response_format=Person,
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and person.name


def test_json_object_mode_answers_an_object(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask("What is the capital of France? Answer in JSON."),
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_a_budget_that_cuts_the_json_is_reported_as_length(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=ask("Say hi."), max_tokens=3, temperature=0, response_format=schema_format(GREETING)
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "length" and choice.message.content.startswith('{"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content)


def test_streamed_structured_output_parses_and_validates(client):
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask("Say hi."),
        max_tokens=40,
        temperature=0,
        response_format=schema_format(GREETING),
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) > 3
    jsonschema.validate(json.loads("".join(pieces)), GREETING)


def test_every_sequence_of_n_is_constrained(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask("Say hi."),
        max_tokens=40,
        temperature=1.0,
        seed=3,
        n=3,
        response_format=schema_format(GREETING),
    )
    for choice in answer.choices:
        if choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.message.content), GREETING)
        else:
            assert choice.finish_reason == "length"
    assert any(choice.finish_reason == "stop" for choice in answer.choices)


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "yaml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"schema": GREETING}}, "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, "response_format"),
    ],
)
def test_bad_formats_are_refused_naming_the_field(base_url, response_format, param):
    response = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": ask("Hi"), "max_tokens": 4, "response_format": response_format},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_langchain_with_structured_output(base_url):
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        model=CHAT_MODEL, base_url=f"{base_url}/v1", api_key="not-needed", temperature=0, max_tokens=40, max_retries=0
    )
    person = model.with_structured_output(Person, method="json_schema").invoke("Invent a person with a name and age.")
    assert isinstance(person, Person) and person.name
    assert model.invoke("Say hi.").content


def test_openai_client_errors_are_typed(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=ask("Hi"), max_tokens=4, response_format={"type": "yaml"}
        )
    assert caught.value.status_code == 400
