"""Vision chat with mlx-vlm: OpenAI chat messages whose parts may be images, streamed token by token.

The web layer has already fetched every ``image_url`` (data URLs decoded,
http(s) fetched within limits) and sends the images' bytes; this handler decodes
them with Pillow, renders the conversation with the processor's chat template
(each image part where the client put it) and generates with mlx-vlm's
``stream_generate``. One request at a time: mlx-vlm's batch API does not take a
new request into a running batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlx_vlm import load as load_vlm
from mlx_vlm import stream_generate
from PIL import Image

from config.errors import ApiError
from config.model_types import LIGHT
from models.handlers.base import Cancelled, Emit
from models.image_io import decode_image, encode_png
from models.stops import StopScanner

DEFAULT_MAX_TOKENS = 256
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
NOT_FOR_VISION = {
    "tools": "tool calls",
    "response_format": "structured output",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
}
"""Parameters the language-model engine applies and this handler does not: a 400 names them."""


def messages_and_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """The messages for the chat template (image parts as ``{"type": "image"}``) and the images in order."""
    rendered, images = [], []
    for m, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            rendered.append({"role": message["role"], "content": content or ""})
            continue
        parts = []
        for p, part in enumerate(content):
            if part["type"] == "image":
                images.append(decode_image(part["data"], f"messages[{m}].content[{p}]", "messages").convert("RGB"))
                parts.append({"type": "image"})
            else:
                parts.append({"type": "text", "text": part["text"]})
        rendered.append({"role": message["role"], "content": parts})
    return rendered, images


class VisionHandler:
    def __init__(self, model: Any, processor: Any, context_length: int) -> None:
        self.model = model
        self.processor = processor
        self.context_length = context_length

    def warmup(self) -> int:
        """Runs one image and a word through the model; returns the prompt's token count."""
        image = encode_png(Image.new("RGB", (32, 32), "white"))
        messages = [{"role": "user", "content": [{"type": "image", "data": image}, {"type": "text", "text": "Hi"}]}]
        result = self.chat({"messages": messages, "max_tokens": 1}, lambda _event: None, lambda: False)
        return result["usage"]["prompt_tokens"]

    def prompt(self, messages: list[dict[str, Any]]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @staticmethod
    def _check(payload: dict[str, Any]) -> None:
        for name, what in NOT_FOR_VISION.items():
            if payload.get(name):
                raise ApiError(
                    400, f"{what} are not supported on vision models", code="unsupported_parameter", param=name
                )
        if (payload.get("n") or 1) > 1:
            raise ApiError(400, "vision models answer one choice (n=1)", code="unsupported_parameter", param="n")

    def chat(self, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        self._check(payload)
        messages, images = messages_and_images(payload["messages"])
        stops = StopScanner(
            [payload["stop"]] if isinstance(payload.get("stop"), str) else list(payload.get("stop") or [])
        )
        options = {name: payload[name] for name in SAMPLING if payload.get(name) is not None}
        if payload.get("logit_bias"):
            options["logit_bias"] = {int(token): float(bias) for token, bias in payload["logit_bias"].items()}
        if payload.get("seed") is not None:
            options["seed"] = int(payload["seed"])
        options.setdefault("temperature", 1.0)
        max_tokens = int(payload.get("max_tokens") or DEFAULT_MAX_TOKENS)
        finish, prompt_tokens, generated = "length", 0, 0
        started = time.perf_counter()
        for step in stream_generate(
            self.model, self.processor, self.prompt(messages), image=images or None, max_tokens=max_tokens, **options
        ):
            prompt_tokens, generated = step.prompt_tokens, step.generation_tokens
            fresh = stops.feed(step.text)
            if fresh:
                emit({"type": "delta", "index": 0, "content": fresh})
            if stops.stopped:
                finish = "stop"
                break
            if step.finish_reason:
                finish = "stop" if step.finish_reason == "stop" else "length"
            if cancelled():
                finish = "cancelled"
                break
        tail = stops.flush()
        if tail:
            emit({"type": "delta", "index": 0, "content": tail})
        choice = {"index": 0, "content": stops.text, "finish_reason": finish}
        if stops.matched:
            choice["stop_sequence"] = stops.matched
        return {
            "content": stops.text,
            "choices": [choice],
            "finish_reason": finish,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": generated,
                "total_tokens": prompt_tokens + generated,
            },
            "images": len(images),
            "seconds": round(time.perf_counter() - started, 3),
        }

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == "warmup" and payload.get(LIGHT):  # the health probe: the language model's one token
            light = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}
            return {"prompt_tokens": self.chat(light, emit, cancelled)["usage"]["prompt_tokens"]}
        if operation == "warmup":
            return {"prompt_tokens": self.warmup()}
        return self.chat(payload, emit, cancelled)


def load(path: Path, context_length: int | None = None, limits: object = None) -> VisionHandler:
    model, processor = load_vlm(str(path))
    text = getattr(model.config, "text_config", None)
    limit = context_length or int(getattr(text, "max_position_embeddings", 0) or 4096)
    return VisionHandler(model, processor, limit)
