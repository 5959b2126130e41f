"""``POST /v1/audio/transcriptions``: OpenAI's form fields and its JSON answers (``json`` and ``verbose_json``)."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from web.schemas.fields import MODEL_ID

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")


class TranscriptionFormSchema(Schema):
    """The form fields; the audio comes as the ``file`` part."""

    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    language = fields.String(validate=validate.Length(min=2, max=8))
    prompt = fields.String(validate=validate.Length(max=4000))
    response_format = fields.String(load_default="json", validate=validate.OneOf(RESPONSE_FORMATS))
    temperature = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=1))
    timestamp_granularities = fields.List(
        fields.String(validate=validate.OneOf(GRANULARITIES)),
        data_key="timestamp_granularities[]",
        load_default=list,
    )
    stream = fields.Boolean(load_default=False)
    chunking_strategy = fields.String()
    include = fields.List(fields.String(), data_key="include[]")

    @validates_schema
    def _what_whisper_does(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data["stream"]:
            raise ValidationError(
                "Whisper models answer when the whole file is transcribed; stream is not supported.", "stream"
            )
        if "chunking_strategy" in data:
            raise ValidationError(
                "Not supported: the audio is always transcribed in 30 s windows.", "chunking_strategy"
            )
        if data.get("include"):
            raise ValidationError(
                "Not supported for Whisper models (logprobs come with verbose_json segments).", "include[]"
            )
        if data["timestamp_granularities"] and data["response_format"] != "verbose_json":
            raise ValidationError(
                "Timestamp granularities need response_format verbose_json.", "timestamp_granularities[]"
            )


class TranscriptionWordSchema(Schema):
    word = fields.String()
    start = fields.Float()
    end = fields.Float()


class TranscriptionSegmentSchema(Schema):
    id = fields.Integer()
    seek = fields.Integer()
    start = fields.Float()
    end = fields.Float()
    text = fields.String()
    tokens = fields.List(fields.Integer())
    temperature = fields.Float()
    avg_logprob = fields.Float()
    compression_ratio = fields.Float()
    no_speech_prob = fields.Float()


class TranscriptionUsageSchema(Schema):
    type = fields.String()
    seconds = fields.Integer()


class TranscriptionSchema(Schema):
    """``json`` has ``text`` (and ``usage``); ``verbose_json`` adds the language, duration, segments and words."""

    text = fields.String()
    task = fields.String()
    language = fields.String()
    duration = fields.Float()
    segments = fields.List(fields.Nested(TranscriptionSegmentSchema))
    words = fields.List(fields.Nested(TranscriptionWordSchema))
    usage = fields.Nested(TranscriptionUsageSchema)
    request_id = fields.String()
