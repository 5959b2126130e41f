"""Audio files to Whisper's input: mono float32 samples at 16 kHz, decoded by PyAV (FFmpeg's libraries in its
wheel), so no ``ffmpeg`` program is needed. Reads what FFmpeg reads: wav, mp3, m4a, flac, ogg, webm and more."""

from __future__ import annotations

import io

import av
import numpy as np

SAMPLE_RATE = 16_000


class UnreadableAudio(ValueError):
    """The bytes are not audio that FFmpeg can decode."""


def decode_audio(data: bytes, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of ``data``, down-mixed to mono and resampled to ``sample_rate``."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise UnreadableAudio("the file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            pieces = [
                piece.to_ndarray().reshape(-1)
                for frame in container.decode(stream)
                for piece in resampler.resample(frame)
            ]
            pieces.extend(piece.to_ndarray().reshape(-1) for piece in resampler.resample(None))
    except av.FFmpegError as exc:
        raise UnreadableAudio(f"the file could not be decoded as audio: {exc}") from None
    if not pieces:
        raise UnreadableAudio("the file holds no audio samples")
    return np.concatenate(pieces).astype(np.float32, copy=False)


def encode_audio(samples: np.ndarray, container_format: str, codec: str, sample_rate: int = SAMPLE_RATE) -> bytes:
    """``samples`` (mono float32) encoded as a file of ``container_format`` with ``codec`` (tests and benchmarks
    make their inputs in every format with it)."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        frame_size = stream.codec_context.frame_size or 1024
        source = np.clip(samples, -1.0, 1.0).astype(np.float32)
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=sample_rate)
        for start in range(0, len(source), frame_size):
            frame = av.AudioFrame.from_ndarray(source[None, start : start + frame_size], format="flt", layout="mono")
            frame.sample_rate = sample_rate
            for piece in resampler.resample(frame):
                container.mux(stream.encode(piece))
        container.mux(stream.encode(None))
    return out.getvalue()
