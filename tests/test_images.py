"""``/v1/images/generations`` and ``/v1/images/edits`` with the official client, on mflux's FLUX.2 Klein pipeline.

The model is mflux's real pipeline (text encoder, transformer, scheduler, VAE,
edit with reference images) at a tiny size with RANDOM weights, built by the
platform from mflux's own classes: no image-generation weights can be installed
here (see README). Its images are noise, so the tests check sizes, counts,
seeds, masks, formats and errors, never what a picture shows.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
import requests
from PIL import Image

from tests.conftest import EDIT_MODEL, IMAGE_MODEL, submit_job, wait_for_job


def picture(data: str | bytes) -> Image.Image:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    return Image.open(io.BytesIO(raw))


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def generate(client: openai.OpenAI, **extra):
    options = {"model": IMAGE_MODEL, "prompt": "a red cat", "size": "64x64", "extra_body": {"steps": 2}} | extra
    return client.images.generate(**options)


def test_n_images_of_the_size_asked_each_with_its_seed(client):
    answer = generate(client, n=2, extra_body={"steps": 2, "seed": 7})
    assert [d.model_extra["seed"] for d in answer.data] == [7, 8]
    first, second = (picture(d.b64_json) for d in answer.data)
    assert first.size == second.size == (64, 64) and first.format == "PNG"
    assert first.tobytes() != second.tobytes(), "two seeds, two images"


def test_a_seed_repeats_its_image_and_the_prompt_changes_it(client):
    one = generate(client, extra_body={"steps": 2, "seed": 3}).data[0].b64_json
    again = generate(client, extra_body={"steps": 2, "seed": 3}).data[0].b64_json
    other_prompt = generate(client, prompt="a blue dog", extra_body={"steps": 2, "seed": 3}).data[0].b64_json
    assert picture(one).tobytes() == picture(again).tobytes()
    assert picture(one).tobytes() != picture(other_prompt).tobytes()


def test_url_answers_are_downloadable(client):
    answer = generate(client, size="128x64", response_format="url")
    url = answer.data[0].url
    download = requests.get(url, timeout=10)
    assert download.status_code == 200 and download.headers["Content-Type"] == "image/png"
    assert picture(download.content).size == (128, 64)
    assert requests.get(url.replace(".png", "x.png"), timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("extra", "param"), [({"size": "100x100"}, "size"), ({"n": 11}, "n"), ({"style": "vivid"}, "style")]
)
def test_parameters_out_of_range_are_400(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        generate(client, **extra)
    assert caught.value.body["param"] == param


def test_an_edit_model_is_not_a_generation_model(client):
    with pytest.raises(openai.BadRequestError) as caught:
        generate(client, model=EDIT_MODEL)
    assert caught.value.body["param"] == "model"


def test_an_edit_keeps_the_size_of_the_image(client):
    source = Image.new("RGB", (96, 64), "orange")
    answer = client.images.edit(
        model=EDIT_MODEL, image=("in.png", png_bytes(source)), prompt="make it blue", extra_body={"steps": 2}
    )
    assert picture(answer.data[0].b64_json).size == (96, 64)


def test_a_mask_keeps_the_opaque_part_of_the_image(client):
    source = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (32, 0, 64, 64))  # the right half is transparent: the part to edit
    answer = client.images.edit(
        model=EDIT_MODEL,
        image=("in.png", png_bytes(source)),
        mask=("mask.png", png_bytes(mask)),
        prompt="paint the right half",
        extra_body={"steps": 2},
    )
    edited = np.asarray(picture(answer.data[0].b64_json).convert("RGB"))
    original = np.asarray(source)
    assert (edited[:, :32] == original[:, :32]).all(), "the opaque half is the original"
    assert (edited[:, 32:] != original[:, 32:]).any(), "the transparent half is generated"


def test_several_images_go_to_one_edit(client):
    images = [("a.png", png_bytes(Image.new("RGB", (64, 64), c))) for c in ("red", "blue")]
    answer = client.images.edit(model=EDIT_MODEL, image=images, prompt="mix them", extra_body={"steps": 2})
    assert picture(answer.data[0].b64_json).size == (64, 64)


def test_a_mask_without_alpha_and_a_missing_image_are_400(client, base_url):
    rgb = png_bytes(Image.new("RGB", (64, 64), "white"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(model=EDIT_MODEL, image=("in.png", rgb), mask=("m.png", rgb), prompt="x")
    assert caught.value.body["param"] == "mask"
    missing = requests.post(f"{base_url}/v1/images/edits", data={"model": EDIT_MODEL, "prompt": "x"}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "image"


def test_an_image_job_completes_with_its_images(jobs_url):
    job = submit_job(jobs_url, IMAGE_MODEL, "image_gen", {"prompt": "a cat", "size": "64x64", "n": 2, "steps": 2})
    assert job.status_code == 202, job.text
    done = wait_for_job(jobs_url, job.json()["job_id"])
    assert done["status"] == "completed", done
    assert [picture(i["b64_json"]).size for i in done["result"]["images"]] == [(64, 64), (64, 64)]
