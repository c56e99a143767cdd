"""A stand-in for the Hugging Face hub on 127.0.0.1, for HF_ENDPOINT.

It answers the routes huggingface_hub uses to download one file:
`HEAD|GET /OWNER/REPO/resolve/REVISION/FILE` with the hub's headers (X-Repo-Commit, ETag and
X-Linked-Etag = the LFS sha256, X-Linked-Size) and Range requests, plus the hub's error
replies (X-Error-Code RepoNotFound / EntryNotFound / GatedRepo). `GET /files/NAME` serves
plain URLs. Faults are switched on per test: cut the first body after N bytes, hold every
body at byte N until the test releases it, advertise a wrong sha256. Every request is logged
for assertions.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK_BYTES = 16 * 1024
# A held body waits at most this long for its release: a bound for a test that fails before
# releasing it, not a time any test waits for.
HOLD_MAX_S = 60


@dataclass
class HostedFile:
    data: bytes
    advertised_sha256: str | None = None  # None: the true hash; "" : a git sha1 etag, no sha256
    gets: int = 0

    @property
    def etag(self) -> str:
        if self.advertised_sha256 == "":
            return hashlib.sha1(self.data).hexdigest()
        return self.advertised_sha256 or hashlib.sha256(self.data).hexdigest()


@dataclass
class RequestRecord:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    files: dict[tuple[str, str], HostedFile] = field(default_factory=dict)
    plain_files: dict[str, bytes] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    cut_first_get_after_bytes: int | None = None
    # Bodies send the bytes before this offset of the file, then wait for `release`.
    hold_at_byte: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[RequestRecord] = field(default_factory=list)

    def add(self, repo: str, filename: str, data: bytes, *, advertised_sha256: str | None = None) -> None:
        self.files[(repo, filename)] = HostedFile(data, advertised_sha256)

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fakehub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()  # a held body ends rather than keep its thread
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def gets(self, filename: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + filename)]

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up mid-body (a cancelled download) is no error of the hub's


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # keep test output clean

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _error(self, status: int, code: str | None, message: str) -> None:
        payload = f'{{"error":"{message}"}}'.encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(payload)

    def _serve(self, body: bool) -> None:
        hub = self.fake
        path = unquote(urlsplit(self.path).path)
        hub.requests.append(RequestRecord(self.command, path, self.headers.get("Range")))
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "files":
            data = hub.plain_files.get(parts[1])
            if data is None:
                self._error(404, None, "Not Found")
                return
            self._send_body(data, body, hub_headers={}, hosted=None)
            return
        if len(parts) < 5 or parts[2] != "resolve":
            self._error(404, None, "Not Found")
            return
        repo, filename = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
        if repo in hub.gated:
            self._error(401, "GatedRepo", f"Access to model {repo} is restricted. You must be authenticated to access it.")
            return
        if not any(r == repo for r, _ in hub.files):
            self._error(401, "RepoNotFound", "Repository not found")
            return
        hosted = hub.files.get((repo, filename))
        if hosted is None:
            self._error(404, "EntryNotFound", "Entry not found")
            return
        etag = hosted.etag
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{etag}"',
            "X-Linked-Etag": f'"{etag}"',
            "X-Linked-Size": str(len(hosted.data)),
        }
        self._send_body(hosted.data, body, hub_headers=headers, hosted=hosted)

    def _send_body(self, data: bytes, body: bool, *, hub_headers: dict[str, str], hosted: HostedFile | None) -> None:
        hub = self.fake
        start = 0
        range_header = self.headers.get("Range")
        if body and range_header and range_header.startswith("bytes="):
            start = int(range_header[len("bytes="):].split("-", 1)[0] or 0)
        if start >= len(data) and start > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        for name, value in hub_headers.items():
            self.send_header(name, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        first_get = False
        if hosted is not None:
            hosted.gets += 1
            first_get = hosted.gets == 1
        payload = data[start:]
        limit = len(payload)
        cut = hub.cut_first_get_after_bytes is not None and first_get
        if cut:
            limit = min(limit, hub.cut_first_get_after_bytes or 0)
        # The bytes before the file's offset `hold_at_byte` go at once; the rest wait for `release`.
        hold = None if hub.hold_at_byte is None else max(hub.hold_at_byte - start, 0)
        sent = 0
        try:
            while sent < limit:
                if hold is not None and sent >= hold:
                    if not hub.release.wait(HOLD_MAX_S):
                        self.close_connection = True
                        return
                    hold = None
                end = min(sent + CHUNK_BYTES, limit, limit if hold is None else hold)
                self.wfile.write(payload[sent:end])
                self.wfile.flush()
                sent = end
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if cut:
            # Drop the connection mid-body, as a flaky network would.
            self.close_connection = True
            self.connection.shutdown(2)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake hub with HF_ENDPOINT pointing at it (and no token or offline flag)."""
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield fake
