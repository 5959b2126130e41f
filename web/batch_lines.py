"""A batch's lines as the synchronous endpoints see them: each request body checked by the endpoint's own schema
and turned into the worker payload the endpoint would send, and each recorded answer shaped into the body the
endpoint would answer (the output and error files are written on their first read)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import current_app
from marshmallow import Schema, ValidationError

from config.errors import ApiError
from tasks import batch_input, batch_store, file_store, response_store
from tasks.image_inputs import has_images
from web.chat import ChatShape, images_for
from web.completions import CompletionShape
from web.embeddings import embedding_list, embedding_payload
from web.errors import validation_error
from web.identity import current_caller
from web.responses import ResponseShape, assistant_turn, conversation_of
from web.schemas.chat import ChatCompletionRequestSchema, generation_payload
from web.schemas.completions import CompletionRequestSchema
from web.schemas.embeddings import EmbeddingRequestSchema
from web.schemas.responses import ResponsesRequestSchema, chat_options


@dataclass(frozen=True)
class Endpoint:
    schema: type[Schema]
    operation: str
    prepare: Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]
    """The validated body -> (the worker payload, what shaping the answer needs)."""
    shape: Callable[[batch_store.BatchLine], dict[str, Any]]


def _chat_payload(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    payload = generation_payload(body)
    if has_images(body["messages"]):
        payload["messages"] = images_for(body["model"], body["messages"])
    payload.pop("stream", None)
    return payload, {}


def _chat_body(line: batch_store.BatchLine) -> dict[str, Any]:
    shape = ChatShape(line.model, line.request_id)
    shape.id, shape.created = f"chatcmpl-{line.key}", line.created
    return shape.completion(line.result)


def _completion_payload(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if len(body["prompt"]) != 1:
        raise ApiError(400, "A batch line takes one prompt", code="invalid_value", param="body.prompt")
    logprobs = body.get("logprobs")
    payload = generation_payload({**body, "logprobs": logprobs is not None, "top_logprobs": logprobs or 0})
    payload.pop("stream", None)
    return {**payload, "prompt": body["prompt"][0]}, {
        "n": body.get("n") or 1,
        "echo": body["echo"],
        "prompts": body["prompt"],
    }


def _completion_body(line: batch_store.BatchLine) -> dict[str, Any]:
    given = line.shape
    shape = CompletionShape(line.model, line.request_id, given["n"], given["echo"], given["prompts"])
    shape.id, shape.created = f"cmpl-{line.key}", line.created
    return shape.completion([line.result])


def _embedding_payload(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return embedding_payload(body), {"encoding_format": body["encoding_format"]}


def _embedding_body(line: batch_store.BatchLine) -> dict[str, Any]:
    return embedding_list(line.result, line.model, line.shape["encoding_format"], line.request_id)


def _response_payload(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    payload = {"messages": conversation_of(body), **chat_options(body)}
    shape = {name: value for name, value in body.items() if name != "input"}
    if body.get("store") is not False:  # kept as the endpoint keeps it, when the output file is first read
        shape[KEPT] = {"conversation": payload["messages"], "owner": current_caller().owner}
    return payload, shape


KEPT = "_kept"
"""What storing a line's response needs (its turns and its owner), in the line's shape."""


def _response_body(line: batch_store.BatchLine) -> dict[str, Any]:
    given = dict(line.shape)
    kept = given.pop(KEPT, None)
    shape = ResponseShape(given)
    shape.id, shape.created_at, shape.message_id = f"resp_{line.key}", line.created, f"msg_{line.key}"
    shape.request_id = line.request_id
    response = shape.final(line.result)
    if kept is not None:
        turn = [*kept["conversation"], assistant_turn(line.result["choices"][0])]
        response_store.save(shape.id, line.model, turn, response, kept["owner"])
    return response


ENDPOINTS = {
    "/v1/chat/completions": Endpoint(ChatCompletionRequestSchema, "chat", _chat_payload, _chat_body),
    "/v1/completions": Endpoint(CompletionRequestSchema, "completion", _completion_payload, _completion_body),
    "/v1/embeddings": Endpoint(EmbeddingRequestSchema, "embed", _embedding_payload, _embedding_body),
    "/v1/responses": Endpoint(ResponsesRequestSchema, "chat", _response_payload, _response_body),
}


def prepare(endpoint: str, data: bytes, request_id: str) -> list[dict[str, Any]]:
    """The prepared lines of an input file for ``endpoint``: each line's model, operation and payload, or the
    error the endpoint would have answered (its line then goes to the error file)."""
    target = ENDPOINTS[endpoint]
    prepared = []
    for index, (_number, request) in enumerate(batch_input.requests_of(data)):
        line: dict[str, Any] = {
            "index": index,
            "custom_id": request["custom_id"],
            "request_id": f"{request_id}.{index}",
            "model": str(request["body"].get("model") or ""),
        }
        try:
            if request["url"] != endpoint:
                raise ApiError(
                    400,
                    f"The line's url {request['url']} is not the batch's endpoint {endpoint}",
                    code="invalid_url",
                    param="url",
                )
            try:
                body = target.schema().load(request["body"])
            except ValidationError as exc:
                raise validation_error({"json": exc.messages}) from None
            payload, shape = target.prepare(body)
            line.update(model=body["model"], operation=target.operation, payload=payload, shape=shape)
        except ApiError as exc:
            line["error"] = exc.to_dict()
        prepared.append(line)
    return prepared


def output_lines(batch: batch_store.Batch, ok: bool) -> Iterator[bytes]:
    """The lines of the batch's output file (``ok``) or error file, in input order."""
    shape = ENDPOINTS[batch.endpoint].shape
    for line in batch_store.lines(batch.batch_id, ok):
        entry: dict[str, Any] = {"id": f"batch_req_{line.key}", "custom_id": line.custom_id}
        if not ok and line.status_code == 0:  # never sent: the window expired first
            entry.update(response=None, error=dict(line.error))
        else:
            body = shape(line) if ok else dict(line.error)
            response = {"status_code": line.status_code, "request_id": line.request_id, "body": body}
            entry.update(response=response, error=None)
        yield (json.dumps(entry, separators=(",", ":")) + "\n").encode()


def rendered(stored: file_store.StoredFile) -> file_store.StoredFile:
    """``stored``, its bytes written first if it is a batch's output or error file not read before."""
    if stored.rendered:
        return stored
    batch = batch_store.get(stored.batch_id)
    if batch is None:
        raise ApiError(404, f"File '{stored.file_id}' not found", code="file_not_found", param="file_id")
    data = b"".join(output_lines(batch, stored.kind == "output"))
    file_store.write_bytes(current_app.extensions["settings"].data_dir, stored.file_id, data)
    file_store.mark_rendered(stored.file_id, len(data))
    stored.rendered, stored.size = True, len(data)
    return stored
