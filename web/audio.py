"""``POST /v1/audio/transcriptions``: an audio file to text on a Whisper model's queue, in OpenAI's formats.

The file travels to the worker as it came (base64 in the task); the worker
decodes it (PyAV), so an unreadable file is the worker's 400 naming ``file``.
"""

from __future__ import annotations

import base64
from typing import Any

from flask import Response, current_app, g, request
from flask.views import MethodView

from config.errors import ApiError
from web.api import Blueprint, dispatcher
from web.schemas.audio import TranscriptionFormSchema, TranscriptionSchema
from web.uploads import read_upload

blp = Blueprint("audio", __name__, url_prefix="/v1/audio", description="OpenAI audio: speech to text (Whisper)")

FORM_SLACK_BYTES = 64 * 1024
RAW_BODIES = {
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def _limit() -> int:
    return current_app.extensions["settings"].audio_max_file_bytes


@blp.before_request
def _room_for_audio() -> None:
    request.max_content_length = _limit() + FORM_SLACK_BYTES


def uploaded_audio() -> bytes:
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "Send the audio as the 'file' form field", code="missing_file", param="file")
    return read_upload(upload, _limit(), "file", "The audio file")


@blp.route("/transcriptions")
class Transcriptions(MethodView):
    @blp.arguments(TranscriptionFormSchema, location="form")
    @blp.response(200, TranscriptionSchema)
    @blp.alt_response(400, description="Unreadable audio, or a parameter the model cannot apply (named)")
    @blp.alt_response(413, description="An audio file over the size limit (25 MiB by default)")
    def post(self, form: dict[str, Any]):
        audio = uploaded_audio()
        payload = {
            "file": base64.b64encode(audio).decode(),
            "language": form.get("language"),
            "prompt": form.get("prompt"),
            "temperature": form["temperature"],
            "timestamp_granularities": form["timestamp_granularities"],
            "response_format": form["response_format"],
        }
        result = dispatcher().result(dispatcher().start(form["model"], "transcribe", payload, g.request_id))
        response_format = form["response_format"]
        if response_format in RAW_BODIES:
            body = result["text"] + "\n" if response_format == "text" else result["body"]
            return Response(body, mimetype=None, content_type=RAW_BODIES[response_format])
        if response_format == "json":
            return {"text": result["text"], "usage": result["usage"], "request_id": g.request_id}
        verbose = {key: result[key] for key in ("text", "language", "duration", "segments", "usage")}
        if "words" in result:
            verbose["words"] = result["words"]
        return {"task": "transcribe", **verbose, "request_id": g.request_id}
