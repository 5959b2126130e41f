"""The audio decoder (PyAV, no ffmpeg program): each format the transcription endpoint documents reads back as
16 kHz mono float32 of the same length; anything else is ``UnreadableAudio``."""

from __future__ import annotations

import numpy as np
import pytest

from models.audio import SAMPLE_RATE, UnreadableAudio, decode_audio, encode_audio

FORMATS = (
    ("wav", "pcm_s16le"),
    ("mp3", "libmp3lame"),
    ("flac", "flac"),
    ("ogg", "libopus"),
    ("ipod", "aac"),
    ("webm", "libopus"),
)


def tone(seconds: float = 2.0, rate: int = 44_100) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize(("container", "codec"), FORMATS)
def test_each_container_decodes_to_16khz_mono(container, codec):
    rate = 48_000 if codec == "libopus" else 44_100
    data = encode_audio(tone(rate=rate), container, codec, sample_rate=rate)
    decoded = decode_audio(data)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) / SAMPLE_RATE - 2.0) < 0.15
    middle = decoded[SAMPLE_RATE // 2 : SAMPLE_RATE * 3 // 2]
    assert 0.3 < float(np.sqrt(np.mean(middle**2))) < 0.4, "a 0.5-amplitude sine has an RMS of 0.354"


@pytest.mark.parametrize("data", [b"", b"plain text, not audio" * 10, b"RIFF\x00\x00\x00\x00WAVEfmt "])
def test_what_is_not_audio_is_unreadable(data):
    with pytest.raises(UnreadableAudio):
        decode_audio(data)
