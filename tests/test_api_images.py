"""Images through the OpenAI chat API: `serve --model tiny.gguf --mmproj tiny.mmproj.gguf`,
the openai SDK sending `image_url` parts with data URLs, usage counting the image's tokens,
the prompt cache reusing an image, and every bad image a 400 that says why; and library
members loaded on demand with the projector of their folder in the models folder."""

from __future__ import annotations

import base64
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from llamaedge.limits import IMAGE_PIXELS_MAX
from tests.conftest import ServerProcess, serving
from tests.tiny_gguf import MMPROJ_IMAGE_TOKENS, png_bytes, webp_bytes


def _data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _message(url: str, text: str = "What is in the picture?") -> list[Any]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tiny_mmproj: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("serve-home"), "--model", str(tiny_model), "--mmproj", str(tiny_mmproj),
                 "--threads", "2", "--ctx-size", "512") as server:
        yield server


@pytest.fixture(scope="module")
def text_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("serve-home"), "--model", str(tiny_model), "--threads", "2",
                 "--ctx-size", "512") as server:
        yield server


def test_vision_is_a_capability_of_a_model_served_with_its_projector(server: ServerProcess,
                                                                   text_server: ServerProcess) -> None:
    seeing = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]
    blind = httpx.get(f"{text_server.base_url}/v1/models").json()["data"][0]
    assert "vision" in seeing["capabilities"] and "vision" not in blind["capabilities"]
    assert seeing["architecture"]["input_modalities"] == ["text", "image"]
    assert blind["architecture"]["input_modalities"] == ["text"]


def test_an_image_is_read_and_counted_and_reused(client: openai.OpenAI) -> None:
    url = _data_url(png_bytes(40, 24, seed=21))
    text_only = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "What is in the picture?"}],
                                               max_tokens=4, temperature=0)
    first = client.chat.completions.create(model="tiny-chat", messages=_message(url), max_tokens=6, temperature=0)
    assert first.usage is not None and text_only.usage is not None
    assert first.usage.prompt_tokens - text_only.usage.prompt_tokens >= MMPROJ_IMAGE_TOKENS
    again = client.chat.completions.create(model="tiny-chat", messages=_message(url), max_tokens=6, temperature=0)
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens - 1
    # Streamed, with usage: the same answer.
    chunks = list(client.chat.completions.create(model="tiny-chat", messages=_message(url), max_tokens=6, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == first.usage.prompt_tokens


def _huge_png() -> bytes:
    data = bytearray(png_bytes(2, 2))
    data[16:24] = struct.pack(">II", 10_000, 10_000)
    assert 10_000 * 10_000 > IMAGE_PIXELS_MAX
    return bytes(data)


@pytest.mark.parametrize(("url", "says"), [
    ("https://example.com/cat.png", "not fetched"),
    ("data:image/png;base64,@@@", "does not decode"),
    (_data_url(b"plain text, not an image", "png"), "not an image"),
    (_data_url(b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(16), "webp"), "header cannot be read"),
    (_data_url(_huge_png()), "image_pixels_max"),
], ids=["http", "base64", "not-image", "webp-header", "pixels"])
def test_bad_images_are_400s_that_say_why(client: openai.OpenAI, url: str, says: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-chat", messages=_message(url), max_tokens=4)
    assert says in caught.value.message
    assert caught.value.param == "messages[0].content[1]"


def test_a_webp_reads_as_the_same_pixels_in_a_png(client: openai.OpenAI) -> None:
    """WebP, decoded by the host (mtmd reads it only through ffmpeg): a lossless one gives the
    answer and the count the PNG of its pixels gives; a lossy one and an animation are read."""
    answers = [client.chat.completions.create(model="tiny-chat", messages=_message(url), max_tokens=6, temperature=0)
               for url in (_data_url(webp_bytes(36, 28, seed=61), "webp"), _data_url(png_bytes(36, 28, seed=61)))]
    webp, png = answers
    assert webp.usage is not None and png.usage is not None
    assert (webp.choices[0].message.content, webp.usage.prompt_tokens) == (png.choices[0].message.content,
                                                                          png.usage.prompt_tokens)
    for data in (webp_bytes(36, 28, seed=62, lossless=False), webp_bytes(36, 28, seed=63, frames=2)):
        seen = client.chat.completions.create(model="tiny-chat", messages=_message(_data_url(data, "webp")),
                                              max_tokens=2, temperature=0)
        assert seen.usage is not None and seen.usage.prompt_tokens == png.usage.prompt_tokens


def test_an_image_to_a_model_without_vision_names_the_model(text_server: ServerProcess) -> None:
    with openai.OpenAI(base_url=f"{text_server.base_url}/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny-chat", messages=_message(_data_url(png_bytes(4, 4))), max_tokens=4)
    message = caught.value.message
    assert "tiny-chat" in message and "does not read images" in message and "chat" in message


def _anthropic_message(source: dict[str, Any]) -> list[Any]:
    return [{"role": "user", "content": [{"type": "image", "source": source},
                                         {"type": "text", "text": "What is in the picture?"}]}]


def test_anthropic_image_blocks(server: ServerProcess) -> None:
    data = base64.b64encode(png_bytes(24, 24, seed=31)).decode()
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as client:
        text_only = client.messages.create(model="tiny-chat", max_tokens=4,
                                           messages=[{"role": "user", "content": "What is in the picture?"}])
        seen = client.messages.create(model="tiny-chat", max_tokens=4, messages=_anthropic_message(
            {"type": "base64", "media_type": "image/png", "data": data}))
        assert seen.usage.input_tokens - text_only.usage.input_tokens >= MMPROJ_IMAGE_TOKENS
        counted = client.messages.count_tokens(model="tiny-chat", messages=_anthropic_message(
            {"type": "base64", "media_type": "image/png", "data": data}))
        assert counted.input_tokens == seen.usage.input_tokens
        for source, says in [({"type": "url", "url": "https://example.com/cat.png"}, "not fetched"),
                             ({"type": "base64", "media_type": "image/png", "data": base64.b64encode(b"hi!").decode()},
                              "not an image")]:
            with pytest.raises(anthropic.BadRequestError) as caught:
                client.messages.create(model="tiny-chat", max_tokens=4, messages=_anthropic_message(source))
            assert says in caught.value.message and "messages.0.content.0.source" in caught.value.message


def test_responses_input_image(client: openai.OpenAI) -> None:
    url = _data_url(png_bytes(16, 16, seed=41))
    question = {"type": "input_text", "text": "What is in the picture?"}
    text_only = client.responses.create(model="tiny-chat", max_output_tokens=4, temperature=0,
                                        input=[{"role": "user", "content": [question]}])
    seen = client.responses.create(model="tiny-chat", max_output_tokens=4, temperature=0, input=[
        {"role": "user", "content": [question, {"type": "input_image", "image_url": url, "detail": "auto"}]}])
    assert seen.usage is not None and text_only.usage is not None
    assert seen.usage.input_tokens - text_only.usage.input_tokens >= MMPROJ_IMAGE_TOKENS
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="tiny-chat", max_output_tokens=4, input=[
            {"role": "user", "content": [question, {"type": "input_image", "image_url": "https://example.com/a.png",
                                                    "detail": "auto"}]}])
    assert "not fetched" in caught.value.message and caught.value.param == "input[0].content[1].image_url"


@pytest.fixture(scope="module")
def library(tiny_model: Path, tiny_mmproj: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`serve --models-dir`: `seeing` in a folder with a projector, `blind` in one without."""
    models = tmp_path_factory.mktemp("library")
    for folder, name in (("seeing", "seeing"), ("blind", "blind")):
        (models / folder).mkdir()
        shutil.copy(tiny_model, models / folder / f"{name}.gguf")
    shutil.copy(tiny_mmproj, models / "seeing" / "mmproj-seeing-f16.gguf")
    with serving(tmp_path_factory.mktemp("serve-home"), "--models-dir", str(models), "--threads", "2",
                 "--ctx-size", "512") as server:
        yield server


def test_a_library_member_loads_with_its_folders_projector(library: ServerProcess) -> None:
    listed = {m["id"]: m for m in httpx.get(f"{library.base_url}/v1/models").json()["data"]}
    assert "vision" in listed["seeing"]["capabilities"] and "vision" not in listed["blind"]["capabilities"]
    assert listed["seeing"]["status"]["value"] == "unloaded"
    url = _data_url(png_bytes(32, 20, seed=51))
    with openai.OpenAI(base_url=f"{library.base_url}/v1", api_key="x", max_retries=0) as client:
        text_only = client.chat.completions.create(model="seeing", max_tokens=4, temperature=0,
                                                   messages=[{"role": "user", "content": "What is in the picture?"}])
        seen = client.chat.completions.create(model="seeing", messages=_message(url), max_tokens=4, temperature=0)
        assert seen.model == "seeing" and seen.usage is not None and text_only.usage is not None
        assert seen.usage.prompt_tokens - text_only.usage.prompt_tokens >= MMPROJ_IMAGE_TOKENS
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="blind", messages=_message(url), max_tokens=4)
    message = caught.value.message
    assert "blind" in message and "does not read images" in message and "chat" in message
    assert caught.value.code == "model_not_vision"
    loaded = {m["id"]: m for m in httpx.get(f"{library.base_url}/models").json()["data"]}
    assert "vision" in loaded["seeing"]["capabilities"] and loaded["seeing"]["status"]["value"] == "loaded"
    assert loaded["seeing"]["architecture"]["input_modalities"] == ["text", "image"]
