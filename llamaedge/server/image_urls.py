"""`serve --allow-image-urls`: http(s) image URLs in a request fetched by the host and put in
the body as data URLs before the app sees it, so the app checks them as it checks any image
(format, bytes, pixels: docs/images.md). Off by default: with it, any client can make the
server fetch any address it can reach.

Where images are, by API: OpenAI chat `messages[].content[]` parts `{"type":"image_url",
"image_url":{"url"}}` (or `"image_url":"..."`), Anthropic `messages[].content[]` blocks
`{"type":"image","source":{"type":"url","url"}}`, Responses `input[].content[]` parts
`{"type":"input_image","image_url"}`. Each fetch is bounded: IMAGE_BYTES_MAX bytes (the
Content-Length first, then what arrives), IMAGE_URL_TIMEOUT_S for the whole fetch, and a
redirect is followed only to the same scheme and host (a redirect elsewhere is refused).
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from llamaedge.limits import IMAGE_BYTES_MAX, IMAGE_URL_TIMEOUT_S

_CHUNK_BYTES = 64 * 1024
_SCHEMES = ("http", "https")


class ImageUrlError(Exception):
    """An image URL that could not be fetched, with the request's place of it (`param`)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class _Slot:
    """Where an image URL is in the body: its container, the key that holds it, and how to
    write the fetched image back."""

    holder: dict[str, Any]
    key: str
    url: str
    param: str
    anthropic: bool = False

    def put(self, data: bytes, media_type: str) -> None:
        if self.anthropic:
            self.holder[self.key] = {"type": "base64", "media_type": media_type,
                                     "data": base64.b64encode(data).decode()}
        else:
            self.holder[self.key] = f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _remote(url: object) -> TypeGuard[str]:
    return isinstance(url, str) and urlsplit(url.strip()).scheme.lower() in _SCHEMES


def _slots(body: dict[str, Any]) -> Iterator[_Slot]:
    """The http(s) image URLs of a chat, Messages or Responses body."""
    for field in ("messages", "input"):
        items = body.get(field)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            content = item.get("content") if isinstance(item, dict) else None
            if not isinstance(content, list):
                continue
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    continue
                kind = part.get("type")
                if kind == "image_url":
                    inner = part.get("image_url")
                    if isinstance(inner, dict) and _remote(inner.get("url")):
                        yield _Slot(inner, "url", inner["url"], f"{field}[{i}].content[{j}]")
                    elif _remote(inner):
                        yield _Slot(part, "image_url", inner, f"{field}[{i}].content[{j}]")
                elif kind == "input_image" and _remote(part.get("image_url")):
                    yield _Slot(part, "image_url", part["image_url"], f"{field}[{i}].content[{j}].image_url")
                elif kind == "image":
                    source = part.get("source")
                    if isinstance(source, dict) and source.get("type") == "url" and _remote(source.get("url")):
                        yield _Slot(part, "source", source["url"], f"{field}.{i}.content.{j}.source", anthropic=True)


def has_image_urls(body: bytes) -> bool:
    """Whether a JSON body may hold an http(s) image URL (a cheap look before parsing)."""
    return b"http" in body and body.lstrip().startswith(b"{")


async def inline_image_urls(body: bytes, *, bytes_max: int = IMAGE_BYTES_MAX,
                            timeout_s: float = IMAGE_URL_TIMEOUT_S) -> bytes:
    """`body` with each http(s) image URL replaced by the image it names, as a data URL (an
    Anthropic base64 source); `body` itself when it has none or is not a JSON object (the app
    answers what is wrong with it). ImageUrlError for the first URL that cannot be fetched."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not isinstance(parsed, dict):
        return body
    slots = list(_slots(parsed))
    if not slots:
        return body
    for slot in slots:
        try:
            data, media_type = await asyncio.wait_for(asyncio.to_thread(fetch, slot.url, bytes_max, timeout_s),
                                                      timeout_s)
        except TimeoutError as exc:  # the whole fetch took too long (each read has the same limit in fetch)
            raise ImageUrlError(_too_slow(slot.url, timeout_s), slot.param) from exc
        except ImageUrlError as err:
            raise ImageUrlError(str(err), slot.param) from err
        slot.put(data, media_type)
    return json.dumps(parsed).encode()


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port: a public address must not
    send the server on to another one (an internal service, say)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        old, new = urlsplit(req.full_url), urlsplit(newurl)
        if (old.scheme, old.netloc.lower()) != (new.scheme, new.netloc.lower()):
            raise ImageUrlError(f"the image URL {req.full_url} redirects to another host ({new.netloc}), "
                                "which is not followed", "")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, bytes_max: int = IMAGE_BYTES_MAX, timeout_s: float = IMAGE_URL_TIMEOUT_S) -> tuple[bytes, str]:
    """The bytes at `url` and their media type; ImageUrlError when it cannot be had within the
    limits. Blocking (call it on a thread)."""
    opener = urllib.request.build_opener(_SameHostRedirects())
    request = urllib.request.Request(url.strip(), headers={"Accept": "image/*"})
    try:
        with opener.open(request, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > bytes_max:
                raise ImageUrlError(f"the image at {url} is {declared} bytes, over the limit of {bytes_max} "
                                    "(image_bytes_max)", "")
            data = bytearray()
            while chunk := response.read(_CHUNK_BYTES):
                data += chunk
                if len(data) > bytes_max:
                    raise ImageUrlError(f"the image at {url} is over the limit of {bytes_max} bytes "
                                        "(image_bytes_max)", "")
            media_type = response.headers.get_content_type() or "application/octet-stream"
            return bytes(data), media_type
    except urllib.error.HTTPError as exc:
        raise ImageUrlError(f"the image URL {url} answered HTTP {exc.code}", "") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):  # a connect or read that waited out the limit
            raise ImageUrlError(_too_slow(url, timeout_s), "") from exc
        raise ImageUrlError(f"the image URL {url} could not be fetched: {reason}", "") from exc


def _too_slow(url: str, timeout_s: float) -> str:
    """One message for a fetch that ran out of time, whichever of its two clocks ran out first."""
    return f"the image URL {url} did not answer within {timeout_s:g}s (image_url_timeout_s)"
