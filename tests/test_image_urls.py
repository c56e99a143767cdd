"""`serve --allow-image-urls`: http(s) image URLs fetched by the host, from a local HTTP
server on 127.0.0.1, within the byte and time limits, redirects followed to the same host
only; through the openai and anthropic SDKs on a real server, and the fetcher on its own."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from llamaedge.server.image_urls import ImageUrlError, fetch, inline_image_urls
from tests.conftest import ServerProcess, serving
from tests.tiny_gguf import MMPROJ_IMAGE_TOKENS, png_bytes

PICTURE = png_bytes(24, 16, seed=71)


class ImageHost:
    """An HTTP server on 127.0.0.1 with a picture, a large file, redirects, and a path that
    answers only once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/cat.png":
                    self._send(PICTURE, "image/png")
                elif self.path == "/big.png":
                    self._send(bytes(2000), "image/png")
                elif self.path == "/big-unsized.png":  # no Content-Length: the bytes that arrive count
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(bytes(2000))
                elif self.path == "/here":
                    self._redirect("/cat.png")
                elif self.path == "/elsewhere":  # the same server under another name: another host
                    self._redirect(f"http://localhost:{self.server.server_address[1]}/cat.png")
                elif self.path == "/stalled":
                    host.release.wait()
                    self._send(PICTURE, "image/png")
                else:
                    self.send_error(404)

            def _send(self, data: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _redirect(self, to: str) -> None:
                self.send_response(302)
                self.send_header("Location", to)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def images() -> Iterator[ImageHost]:
    host = ImageHost()
    yield host
    host.close()


def test_fetch_within_the_limits(images: ImageHost) -> None:
    assert fetch(f"{images.url}/cat.png") == (PICTURE, "image/png")
    assert fetch(f"{images.url}/here") == (PICTURE, "image/png")  # a redirect on the same host
    for path, says in [("/big.png", "2000 bytes, over the limit of 1000"),
                       ("/big-unsized.png", "over the limit of 1000 bytes"),
                       ("/elsewhere", "redirects to another host"),
                       ("/missing.png", "answered HTTP 404")]:
        with pytest.raises(ImageUrlError, match=says):
            fetch(images.url + path, bytes_max=1000)
    # The socket's own timeout (no event loop's clock here) says what the loop's says.
    with pytest.raises(ImageUrlError, match="did not answer within 0.2s"):
        fetch(f"{images.url}/stalled", timeout_s=0.2)


def test_the_body_gets_data_urls_and_a_stalled_fetch_ends_at_the_time_limit(images: ImageHost) -> None:
    body = {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": f"{images.url}/cat.png"}},
                                     {"type": "image_url", "image_url": "data:image/png;base64,AAAA"}]},
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": f"{images.url}/here"}}]}]}
    out = json.loads(asyncio.run(inline_image_urls(json.dumps(body).encode())))
    data_url = "data:image/png;base64," + base64.b64encode(PICTURE).decode()
    assert out["messages"][0]["content"][1]["image_url"]["url"] == data_url
    assert out["messages"][0]["content"][2]["image_url"] == "data:image/png;base64,AAAA"  # left as it was
    assert out["messages"][1]["content"][0]["source"] == {
        "type": "base64", "media_type": "image/png", "data": base64.b64encode(PICTURE).decode()}
    responses = {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": f"{images.url}/cat.png"}]}]}
    assert json.loads(asyncio.run(inline_image_urls(json.dumps(responses).encode())))["input"][0]["content"][0][
        "image_url"] == data_url
    plain = b'{"messages": [{"role": "user", "content": "see http://example.com"}]}'
    assert asyncio.run(inline_image_urls(plain)) == plain  # no image part: the body as it came
    stalled = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"{images.url}/stalled"}}]}]}
    with pytest.raises(ImageUrlError, match="did not answer within 0.2s") as caught:
        asyncio.run(inline_image_urls(json.dumps(stalled).encode(), timeout_s=0.2))
    assert caught.value.param == "messages[0].content[0]"


@pytest.fixture(scope="module")
def server(tiny_model: Path, tiny_mmproj: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("serve-home"), "--model", str(tiny_model), "--mmproj", str(tiny_mmproj),
                 "--threads", "2", "--ctx-size", "512", "--allow-image-urls") as server:
        yield server


def _message(url: str) -> list[Any]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def test_image_urls_are_fetched_when_allowed(server: ServerProcess, images: ImageHost) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PICTURE).decode()
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0) as client:
        fetched = client.chat.completions.create(model="tiny-chat", messages=_message(f"{images.url}/cat.png"),
                                                 max_tokens=4, temperature=0)
        inline = client.chat.completions.create(model="tiny-chat", messages=_message(data_url), max_tokens=4,
                                                temperature=0)
        assert fetched.usage is not None and inline.usage is not None
        assert fetched.usage.prompt_tokens == inline.usage.prompt_tokens
        assert fetched.choices[0].message.content == inline.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny-chat", messages=_message(f"{images.url}/elsewhere"),
                                           max_tokens=4)
        assert "redirects to another host" in caught.value.message and caught.value.param == "messages[0].content[1]"
        assert caught.value.code == "image_url_not_fetched"
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as claude:
        text_only = claude.messages.create(model="tiny-chat", max_tokens=2,
                                           messages=[{"role": "user", "content": "What is in the picture?"}])
        seen = claude.messages.create(model="tiny-chat", max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": f"{images.url}/cat.png"}},
            {"type": "text", "text": "What is in the picture?"}]}])
        assert seen.usage.input_tokens - text_only.usage.input_tokens >= MMPROJ_IMAGE_TOKENS
        with pytest.raises(anthropic.BadRequestError) as refused:
            claude.messages.create(model="tiny-chat", max_tokens=2, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": f"{images.url}/missing.png"}}]}])
        assert "HTTP 404" in refused.value.message and "messages.0.content.0.source" in refused.value.message
