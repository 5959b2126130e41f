"""Speech to text with mlx-whisper: OpenAI's ``/v1/audio/transcriptions`` formats, long audio in 30 s windows.

mlx-whisper's ``transcribe`` walks the audio window by window and reports the
frames it has done to a ``tqdm`` bar; this handler puts its own bar in that
place, so each window reports progress (a job's fraction of the audio) and
checks for cancellation.
"""

from __future__ import annotations

import base64
import importlib
import io
import sys
import threading
import types
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_whisper.load_models import load_model
from mlx_whisper.tokenizer import LANGUAGES
from mlx_whisper.writers import WriteSRT, WriteVTT

from config.errors import ApiError
from config.model_types import LIGHT
from models.audio import SAMPLE_RATE, UnreadableAudio, decode_audio
from models.handlers.base import PROGRESS, Cancelled, Emit, RequestCancelled

whisper_transcribe = importlib.import_module("mlx_whisper.transcribe")
"""The module itself: the package's ``mlx_whisper.transcribe`` attribute is the function of that name."""

TEMPERATURE_FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Used when the client asks for temperature 0: OpenAI's meaning is "raise it until the thresholds hold"."""
SUBTITLES = {"srt": WriteSRT, "vtt": WriteVTT}

_window = threading.local()


class _WindowBar:
    """Stands in for mlx-whisper's tqdm bar: each update is a window done; it reports and checks cancellation."""

    def __init__(self, total: int, **_options: Any) -> None:
        self.total = max(total, 1)
        self.done = 0

    def __enter__(self) -> _WindowBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def update(self, frames: int) -> None:
        self.done += frames
        report = getattr(_window, "report", None)
        if report is not None:
            report(min(self.done / self.total, 1.0))


whisper_transcribe.tqdm = types.SimpleNamespace(tqdm=_WindowBar)


def _plain(value: Any) -> Any:
    """numpy scalars (mlx-whisper's word timings) as Python numbers, for JSON."""
    return value.item() if hasattr(value, "item") else value


def _segment(index: int, segment: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": index,
        "seek": int(segment["seek"]),
        "start": float(segment["start"]),
        "end": float(segment["end"]),
        "text": segment["text"],
        "tokens": [int(t) for t in segment["tokens"]],
        "temperature": float(segment["temperature"]),
        "avg_logprob": float(segment["avg_logprob"]),
        "compression_ratio": float(segment["compression_ratio"]),
        "no_speech_prob": float(segment["no_speech_prob"]),
    }


def _words(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"word": word["word"].strip(), "start": float(_plain(word["start"])), "end": float(_plain(word["end"]))}
        for segment in segments
        for word in segment.get("words", ())
    ]


def _subtitles(result: dict[str, Any], response_format: str) -> str:
    out = io.StringIO()
    SUBTITLES[response_format]("").write_result(result, file=out)
    return out.getvalue()


class WhisperHandler:
    def __init__(self, model: Any, path: Path, fp16: bool) -> None:
        self.model = model
        self.path = str(path)
        self.fp16 = fp16
        self.context_length = int(model.dims.n_text_ctx)
        whisper_transcribe.ModelHolder.model = model
        whisper_transcribe.ModelHolder.model_path = self.path

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(LANGUAGES) if self.model.is_multilingual else ("en",)

    def warmup(self) -> None:
        self.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), {"temperature": 0.0})

    def decode_one_step(self) -> None:
        """The decoder's first step over one frame of silent audio features: the model's cheapest real call (the
        health probe; a warm-up runs the encoder's whole 30 s window, 1.5 s of CPU here). Raises when its logits are
        not finite."""
        features = mx.zeros(
            (1, 1, self.model.dims.n_audio_state), dtype=self.model.decoder.token_embedding.weight.dtype
        )
        logits, _cache, _cross = self.model.decoder(mx.array([[0]]), features)
        if not mx.isfinite(logits).all().item():
            raise RuntimeError("the decoder gave non-finite logits")

    def transcribe(self, samples: Any, options: dict[str, Any]) -> dict[str, Any]:
        return whisper_transcribe.transcribe(
            samples, path_or_hf_repo=self.path, fp16=self.fp16, verbose=False, **options
        )

    def _options(self, payload: dict[str, Any]) -> dict[str, Any]:
        language = payload.get("language")
        if language and language not in self.languages:
            raise ApiError(
                400,
                f"language {language!r} is not one this model transcribes ({', '.join(self.languages[:12])}"
                f"{', ...' if len(self.languages) > 12 else ''})",
                code="invalid_value",
                param="language",
            )
        temperature = float(payload.get("temperature") or 0.0)
        return {
            "language": language or None,
            "initial_prompt": payload.get("prompt") or None,
            "temperature": TEMPERATURE_FALLBACK if temperature == 0 else temperature,
            "word_timestamps": "word" in payload.get("timestamp_granularities", ()),
        }

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == "warmup":
            self.decode_one_step() if payload.get(LIGHT) else self.warmup()
            return {"prompt_tokens": 0}
        options = self._options(payload)
        try:
            samples = decode_audio(base64.b64decode(payload["file"]))
        except UnreadableAudio as exc:
            raise ApiError(400, f"Unreadable audio file: {exc}", code="invalid_file", param="file") from None
        duration = len(samples) / SAMPLE_RATE

        def report(fraction: float) -> None:
            emit(PROGRESS)
            emit({"type": "progress_fraction", "fraction": fraction, "detail": {"audio_seconds": duration}})
            if cancelled():
                raise RequestCancelled("transcription cancelled between windows")

        _window.report = report
        try:
            result = self.transcribe(samples, options)
        finally:
            _window.report = None
        segments = result.get("segments", [])
        answer: dict[str, Any] = {
            "text": result["text"].strip(),
            "language": LANGUAGES.get(result.get("language") or "en", "english"),
            "duration": round(duration, 3),
            "segments": [_segment(i, s) for i, s in enumerate(segments)],
            "usage": {"type": "duration", "seconds": max(1, round(duration))},
        }
        if options["word_timestamps"]:
            answer["words"] = _words(segments)
        response_format = payload.get("response_format", "json")
        if response_format in SUBTITLES:
            answer["body"] = _subtitles(result, response_format)
        return answer


def load(path: Path, context_length: int | None = None, limits: object = None) -> WhisperHandler:
    fp16 = sys.platform == "darwin"
    model = load_model(str(path), dtype=mx.float16 if fp16 else mx.float32)
    return WhisperHandler(model, path, fp16)
