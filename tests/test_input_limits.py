"""Every input has a limit, and going past it is the client's 4xx in the OpenAI envelope naming what is too big:
the JSON body (413), an upload (413 naming the form field), list sizes, string lengths, ``n``, and ``max_tokens``
against the model's context (``test_errors.py``) or its KV budget (also there)."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, WHISPER_MODEL, ask

MiB = 1024 * 1024


def error_of(response: requests.Response) -> dict:
    return response.json()["error"]


def test_a_json_body_over_16_mib_is_413(base_url):
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "' % CHAT_MODEL.encode()
    body += b"a" * (16 * MiB) + b'"}]}'
    answer = requests.post(
        f"{base_url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert answer.status_code == 413 and error_of(answer)["code"] == "payload_too_large", answer.text[:300]


def test_an_audio_upload_over_25_mib_is_413_naming_the_file(base_url):
    answer = requests.post(
        f"{base_url}/v1/audio/transcriptions",
        data={"model": WHISPER_MODEL},
        files={"file": ("big.wav", b"\0" * (25 * MiB + 1), "audio/wav")},
        timeout=60,
    )
    assert answer.status_code == 413, answer.text[:300]
    assert error_of(answer)["code"] == "file_too_large" and error_of(answer)["param"] == "file"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": CHAT_MODEL, "messages": ask("Hi") * 4097}, "messages"),
        ("/v1/chat/completions", {"model": "m" * 201, "messages": ask("Hi")}, "model"),
        ("/v1/chat/completions", {"model": CHAT_MODEL, "messages": ask("Hi"), "n": 17}, "n"),
        ("/v1/chat/completions", {"model": CHAT_MODEL, "messages": ask("Hi"), "user": "u" * 257}, "user"),
        ("/v1/chat/completions", {"model": CHAT_MODEL, "messages": ask("Hi"), "stop": ["a"] * 5}, "stop"),
        ("/v1/messages", {"model": CHAT_MODEL, "max_tokens": 4, "messages": ask("Hi") * 4097}, "messages"),
        ("/v1/completions", {"model": CHAT_MODEL, "prompt": ["Hi"] * 17}, "prompt"),
        ("/v1/embeddings", {"model": EMBEDDING_MODEL, "input": ["a"] * 2049}, "input"),
        ("/api/rag/query", {"query": "q", "collection": "c", "top_k": 51}, "top_k"),
    ],
)
def test_lists_strings_and_counts_past_their_limit_are_400_naming_the_field(base_url, path, body, param):
    answer = requests.post(f"{base_url}{path}", json=body, timeout=30)
    assert answer.status_code == 400, answer.text[:300]
    assert error_of(answer)["param"] == param and error_of(answer)["type"] == "invalid_request_error"
