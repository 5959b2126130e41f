"""Vision chat through ``/v1/chat/completions`` with the official client, on mlx-vlm's SmolVLM pipeline.

The model has SmolVLM's real architecture, loader, image processor and code
path but RANDOM weights (no vision-language weights can be installed here; see
README): its words are noise, so the tests check what the platform does with
images (each image reaches the model and changes its greedy answer, the same
image gives the same answer, streaming equals the whole answer, URLs are
fetched within limits), never what the answer says.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from PIL import Image, ImageDraw

from tests.conftest import CHAT_MODEL, VISION_MODEL, submit_job, wait_for_job


def png(color: str, size: tuple[int, int] = (96, 72)) -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((16, 8, size[0] - 16, size[1] - 8), fill=color)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def look(url: str, text: str = "What is in this picture?") -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}
    ]


def greedy(client: openai.OpenAI, messages: list[dict], **extra):
    return client.chat.completions.create(model=VISION_MODEL, messages=messages, max_tokens=8, temperature=0, **extra)


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A loopback HTTP server: /red.png, /big.png (over the test stack's 1 MB limit), /away (a redirect to a
    private address), /slow (sends its first bytes, then nothing for longer than the stack's 2 s fetch limit),
    /drip (sends a byte every 50 ms for 40 s: every read is within a socket timeout, the whole is not),
    /missing (404)."""
    red, big = png("red"), b"\x89PNG" + b"\0" * 1_200_000

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                self.wfile.write(red[:64])
                self.wfile.flush()
                time.sleep(4)
                return
            if self.path == "/drip":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                for byte in range(800):
                    self.wfile.write(bytes([byte % 256]))
                    self.wfile.flush()
                    time.sleep(0.05)
                return
            if self.path == "/away":
                self.send_response(302)
                self.send_header("Location", "http://10.255.255.1/secret.png")
                self.end_headers()
                return
            body = {"/red.png": red, "/big.png": big}.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *_args) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_image_reaches_the_model(client):
    red = greedy(client, look(data_url(png("red"))))
    again = greedy(client, look(data_url(png("red"))))
    blue = greedy(client, look(data_url(png("blue"))))
    text_only = greedy(client, [{"role": "user", "content": "What is in this picture?"}])
    assert red.choices[0].message.content == again.choices[0].message.content
    assert red.choices[0].message.content != blue.choices[0].message.content
    assert red.usage.prompt_tokens >= text_only.usage.prompt_tokens + 16, "the image's tokens are in the prompt"
    assert red.usage.completion_tokens == 8 and red.choices[0].finish_reason == "length"


def test_streaming_gives_the_same_answer(client):
    messages = look(data_url(png("green")))
    whole = greedy(client, messages).choices[0].message.content
    stream = greedy(client, messages, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == whole


def test_http_image_urls_are_fetched(client, image_server):
    fetched = greedy(client, look(f"{image_server}/red.png"))
    inline = greedy(client, look(data_url(png("red"))))
    assert fetched.choices[0].message.content == inline.choices[0].message.content


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/big.png", "image_too_large"),
        ("/away", "invalid_image_url"),
        ("/missing", "invalid_image_url"),
        ("/slow", "invalid_image_url"),
    ],
)
def test_image_urls_outside_the_limits_are_400(client, image_server, path, code):
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(client, look(f"{image_server}{path}"))
    assert caught.value.body["code"] == code and caught.value.body["param"] == "messages"


def test_an_image_that_drips_in_is_refused_at_the_fetch_deadline(client, image_server):
    """The stack's fetch limit is 2 s for the whole image; a server that drips bytes within every socket timeout
    held the request until it closed (40 s here)."""
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(client.with_options(timeout=15), look(f"{image_server}/drip"))
    assert caught.value.body["code"] == "invalid_image_url" and "took" in caught.value.body["message"]


def test_a_chat_job_with_images_gets_the_interactive_answer(client, jobs_url, image_server):
    for url in (data_url(png("red")), f"{image_server}/red.png"):
        submitted = submit_job(
            jobs_url, VISION_MODEL, "chat", {"messages": look(url), "max_tokens": 8, "temperature": 0}
        )
        assert submitted.status_code == 202, submitted.text
        job = wait_for_job(jobs_url, submitted.json()["job_id"])
        assert job["status"] == "completed", job
        assert job["result"]["content"] == greedy(client, look(url)).choices[0].message.content


def test_private_addresses_are_never_fetched(client):
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(client, look("http://10.255.255.1/secret.png"))
    assert "may not be fetched" in caught.value.body["message"]


def test_what_is_not_an_image_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(client, look(data_url(b"plain text, not a picture")))
    assert caught.value.body["code"] == "invalid_image"
    assert "messages[0].content[1]" in caught.value.body["message"]


def test_a_chat_model_does_not_take_images(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=look(data_url(png("red"))), max_tokens=4)
    assert caught.value.body["code"] == "unsupported_content"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_options_vision_models_cannot_apply_are_400(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(client, look(data_url(png("red"))), **extra)
    assert caught.value.body["param"] == param
