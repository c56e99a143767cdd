"""Playwright fixtures: Debian's Chromium, headless, against `llamaedge serve` with the tiny
model on 127.0.0.1. One server and one browser for the whole run (starting them is the slow
part); a fresh browser context per test, so each test starts with empty browser storage."""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, ServerProcess

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("LLAMAEDGE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
# Bounds each wait for a page state or an action (never a time a test waits for): Chromium on
# shared, busy cores can be slow.
TIMEOUT_MS = 30_000
playwright_api.expect.set_options(timeout=TIMEOUT_MS)


# Package scope, not session: Playwright's sync API keeps an event loop running on the main
# thread while it is open, and asyncio.run() refuses to start inside one, so it must be closed
# before the tests outside this folder (MCP and Agents SDK clients) run.
@pytest.fixture(scope="package")
def ui_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("browser-home")
    env = {**os.environ, "LLAMAEDGE_HOME": str(home), "HF_HOME": str(home / "hf")}
    env.pop("LLAMAEDGE_MODELS_DIR", None)
    server = ServerProcess(["--model", str(tiny_model)], env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[playwright_api.Browser]:
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set LLAMAEDGE_TEST_CHROMIUM")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


NewPage = Callable[..., playwright_api.Page]


@pytest.fixture
def new_page(browser: playwright_api.Browser, ui_server: ServerProcess) -> Iterator[NewPage]:
    """Open the chat in a fresh context; keyword arguments go to `browser.new_context`.
    Fails the test on any uncaught page error or console error."""
    contexts: list[playwright_api.BrowserContext] = []
    errors: list[str] = []

    def open_page(path: str = "/", **context_args: object) -> playwright_api.Page:
        options: dict[str, object] = {"viewport": DESKTOP, **context_args}
        context = browser.new_context(base_url=ui_server.base_url, **options)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: errors.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None,
        )
        page.goto(path)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, "\n".join(errors)


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[playwright_api.Page, str], Path]:
    def take(page: playwright_api.Page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    return take


class ScriptedStream:
    """A chat-completions endpoint on a real port that streams the SSE events the test
    releases, when it releases them, so a test can look at the page between two chunks.
    Each request's JSON body is kept in `requests`."""

    EVENT_WAIT_S = 30

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self._events: queue.Queue[str | None] = queue.Queue()
        stream = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: the body ends when the connection closes, no chunked framing needed.
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                stream.requests.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.flush()
                while (data := stream._events.get(timeout=stream.EVENT_WAIT_S)) is not None:
                    self.wfile.write(f"data: {data}\n\n".encode())
                    self.wfile.flush()

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: pytest shows the test's own output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/chat/completions"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def delta(self, **delta: object) -> None:
        """Release one chunk whose `delta` is the keyword arguments."""
        chunk = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "scripted",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        self._events.put(json.dumps(chunk))

    def finish(self, completion_tokens: int) -> None:
        """Release the finish chunk, the usage chunk and [DONE], and end the response."""
        base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1, "model": "scripted"}
        self._events.put(json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        usage = {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 5 + completion_tokens}
        self._events.put(json.dumps({**base, "choices": [], "usage": usage}))
        self._events.put("[DONE]")
        self._events.put(None)

    def close(self) -> None:
        self._events.put(None)  # lets an unfinished response end
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def scripted_stream() -> Iterator[ScriptedStream]:
    stream = ScriptedStream()
    yield stream
    stream.close()


class HeldStream:
    """A chat-completions endpoint on a real port in front of the real server: each request
    goes on to the server, and its reply's SSE events come back until `events_max` of them
    have passed; the rest wait for `allow` or `release`. So a reply of the real model is
    surely still streaming when a test stops it, and grows in the steps the test lets it."""

    # A held reply gives up after this long: a bound for a test that broke off, not a wait.
    HOLD_MAX_S = 300

    def __init__(self, upstream: str, events_max: int) -> None:
        self.events_max = events_max
        self._released = False
        self._cond = threading.Condition()
        stream = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: the body ends when the connection closes, no chunked framing needed.
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with httpx.stream("POST", upstream, content=body, timeout=60,
                                  headers={"Content-Type": "application/json"}) as reply:
                    self.send_response(reply.status_code)
                    self.send_header("Content-Type", reply.headers.get("Content-Type", "text/event-stream"))
                    self.end_headers()
                    self.wfile.flush()
                    passed, rest = 0, b""
                    try:
                        for data in reply.iter_bytes():
                            *events, rest = (rest + data).split(b"\n\n")
                            for event in events:
                                if not stream._may_pass(passed):
                                    return
                                self.wfile.write(event + b"\n\n")
                                self.wfile.flush()
                                passed += 1
                        self.wfile.write(rest)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the page stopped reading: leaving closes the server's stream too

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/chat/completions"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _may_pass(self, passed: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._released or passed < self.events_max, timeout=self.HOLD_MAX_S)

    def allow(self, events: int) -> None:
        """Let `events` more events of each reply pass."""
        with self._cond:
            self.events_max += events
            self._cond.notify_all()

    def release(self) -> None:
        """Let every reply, held or to come, pass whole."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def held_stream(ui_server: ServerProcess) -> Iterator[HeldStream]:
    """Replies of the real server that pass their first 4 SSE events, then wait for the test."""
    stream = HeldStream(f"{ui_server.base_url}/v1/chat/completions", events_max=4)
    yield stream
    stream.close()
