"""The OpenAI Files API (``/v1/files``): uploads with their purpose, listed, read and deleted by their owner.

A ``batch`` file is checked as it is uploaded (``tasks.batch_input``); its bytes
go under the data folder, its record into MongoDB.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from flask.views import MethodView

from config.errors import ApiError
from config.settings import Settings
from tasks import batch_input, file_store
from web.api import Blueprint
from web.batch_lines import rendered
from web.identity import current_caller
from web.schemas.files import (
    FileDeletedSchema,
    FileListQuerySchema,
    FileListSchema,
    FileObjectSchema,
    FileUploadFormSchema,
)
from web.uploads import read_upload

blp = Blueprint("files", __name__, url_prefix="/v1", description="OpenAI files (batch input and output)")

MAX_FILE_BYTES = 512 * 1024 * 1024
"""OpenAI's limit for a file of another purpose than ``batch`` (200 MB)."""
FORM_SLACK_BYTES = 1024 * 1024


def settings() -> Settings:
    return current_app.extensions["settings"]


@blp.before_request
def _room_for_uploads() -> None:
    if request.endpoint == "files.Files" and request.method == "POST":
        request.max_content_length = MAX_FILE_BYTES + FORM_SLACK_BYTES


def find(file_id: str) -> file_store.StoredFile:
    stored = file_store.get(file_id, current_caller().sees)
    if stored is None:
        raise ApiError(404, f"File '{file_id}' not found", code="file_not_found", param="file_id")
    return rendered(stored)


def upload(purpose: str) -> file_store.StoredFile:
    """Stores the request's ``file`` for ``purpose``; a batch file is checked line by line first."""
    given = request.files.get("file")
    if given is None:
        raise ApiError(400, "Send the file in the 'file' form field", code="missing_file", param="file")
    limit = batch_input.MAX_FILE_BYTES if purpose == "batch" else MAX_FILE_BYTES
    data = read_upload(given, limit, "file", "The file")
    requests = batch_input.check(data) if purpose == "batch" else None
    name = given.filename or "upload"
    return file_store.create(settings().data_dir, data, name, purpose, current_caller().owner, requests)


@blp.route("/files")
class Files(MethodView):
    @blp.arguments(FileUploadFormSchema, location="form")
    @blp.alt_response(200, schema=FileObjectSchema, description="The stored file")
    @blp.alt_response(400, description="A batch file with a bad line (the message names its number)")
    @blp.alt_response(413, description="A file over 200 MB (batch) or 512 MB")
    def post(self, form: dict[str, Any]):
        return upload(form["purpose"]).public()

    @blp.arguments(FileListQuerySchema, location="query")
    @blp.alt_response(200, schema=FileListSchema, description="A page of the caller's files")
    def get(self, query: dict[str, Any]):
        found, more = file_store.search(
            current_caller().sees, query["purpose"], query["after"], query["limit"], query["order"]
        )
        data = [stored.public() for stored in found]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}


@blp.route("/files/<string:file_id>")
class OneFile(MethodView):
    @blp.alt_response(200, schema=FileObjectSchema, description="The file")
    @blp.alt_response(404, description="No such file")
    def get(self, file_id: str):
        return find(file_id).public()

    @blp.alt_response(200, schema=FileDeletedSchema, description="The file is deleted")
    @blp.alt_response(404, description="No such file")
    def delete(self, file_id: str):
        if not file_store.delete(settings().data_dir, file_id, current_caller().sees):
            raise ApiError(404, f"File '{file_id}' not found", code="file_not_found", param="file_id")
        return {"id": file_id, "object": "file", "deleted": True}


@blp.route("/files/<string:file_id>/content")
class FileContent(MethodView):
    @blp.alt_response(200, description="The file's bytes")
    @blp.alt_response(404, description="No such file")
    def get(self, file_id: str):
        stored = find(file_id)
        data = file_store.read(settings().data_dir, stored.file_id)
        return Response(data, mimetype="application/octet-stream")
