"""The Host and Origin guard against a real browser (Chromium), as an attacker would use one:
a DNS-rebinding page (attacker.example, resolved to 127.0.0.1 by Chromium's resolver rules)
gets 403s instead of the API, and a page of another site that POSTs to the server has its
request refused before it runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, playwright_api
from tests.conftest import ServerProcess
from tests.test_metrics import scrape, value

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Both names resolve to this machine, as a rebinding attacker's name does once rebound.
RESOLVER_RULES = "--host-resolver-rules=MAP attacker.example 127.0.0.1, MAP evil.example 127.0.0.1"


@pytest.fixture
def attacker_browser(browser: playwright_api.Browser) -> Iterator[playwright_api.BrowserContext]:
    """A second Chromium whose resolver sends attacker.example and evil.example to 127.0.0.1."""
    rebinding = browser.browser_type.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, RESOLVER_RULES])
    context = rebinding.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()
        rebinding.close()


@pytest.fixture
def evil_site() -> Iterator[int]:
    """Another site's page, on a port of its own: its port."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>evil</title><p>nothing to see"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_rebinding_page_gets_403_not_the_api(attacker_browser: playwright_api.BrowserContext,
                                               ui_server: ServerProcess) -> None:
    page = attacker_browser.new_page()
    response = page.goto(f"http://attacker.example:{ui_server.port}/")
    assert response is not None and response.status == 403
    assert "host_not_allowed" in page.content()
    # The page's scripts share its origin with the server now: what they can read is the 403.
    seen = page.evaluate("""async () => {
        const models = await fetch("/v1/models");
        const chat = await fetch("/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({model: "tiny-chat", messages: [{role: "user", content: "hi"}], max_tokens: 2})});
        return [models.status, (await models.json()).error.code, chat.status];
    }""")
    assert seen == [403, "host_not_allowed", 403]
    # The same browser on the server's own name is answered.
    ok = page.goto(f"{ui_server.base_url}/health")
    assert ok is not None and ok.status == 200


def test_another_sites_post_is_refused_before_it_runs(attacker_browser: playwright_api.BrowserContext,
                                                      ui_server: ServerProcess, evil_site: int) -> None:
    before = scrape(ui_server.base_url)
    page = attacker_browser.new_page()
    page.goto(f"http://evil.example:{evil_site}/")
    # A "simple" request: no CORS preflight, so without the guard the server would run it.
    page.evaluate("""async (url) => {
        await fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
            body: JSON.stringify({model: "tiny-chat", messages: [{role: "user", content: "hi"}], max_tokens: 2})});
    }""", f"{ui_server.base_url}/v1/chat/completions")
    after = scrape(ui_server.base_url)

    def moved(**labels: str) -> float:
        return value(after, "llamaedge_requests_total", **labels) - value(before, "llamaedge_requests_total", **labels)

    assert moved(route="unauthorized", status="403") == 1
    assert moved(route="/v1/chat/completions") == 0
