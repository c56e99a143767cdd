"""The web chat in Chromium against `llamaedge serve` with the tiny model.

The tiny model writes random printable ASCII, so tests that need particular reply text
(Markdown rendering, sanitization) answer /v1/chat/completions with a canned SSE body through
`page.route` (a fake at the network seam); every other test talks to the real server, some
through a proxy that holds its reply where the test wants it (`HeldStream`). Tests decide by
page states and requests, never by waiting a fixed time: what a timer would end is looked at
with the page's clock paused."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, Request, Route, expect

from tests.browser.conftest import HeldStream, ScriptedStream
from tests.conftest import ServerProcess, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NewPage = Callable[..., Page]
Screenshot = Callable[[Page, str], Path]


# ---- helpers ----------------------------------------------------------------------------------


def wait_for_model(page: Page, server: ServerProcess) -> str:
    model = json.loads(page.request.get(f"{server.base_url}/v1/models").text())["data"][0]["id"]
    expect(page.locator(".model-picker select")).to_have_value(model)
    return model


def chat_settings(page: Page, *, temperature: str | None = None, max_tokens: str | None = None, system: str | None = None) -> None:
    page.get_by_role("button", name="Chat settings").click()
    dialog = page.get_by_role("dialog", name="Chat settings")
    if temperature is not None:
        dialog.get_by_label("Temperature").fill(temperature)
    if max_tokens is not None:
        dialog.get_by_label("Max tokens").fill(max_tokens)
    if system is not None:
        dialog.get_by_label("System prompt").fill(system)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()


def send(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


REPLY_TIMEOUT_MS = 30_000  # generation on shared, busy cores can take a while


def wait_for_reply(page: Page) -> None:
    expect(page.locator(".message.streaming")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Send message")).to_be_visible()


def last_reply(page: Page) -> Locator:
    return page.locator(".message.assistant").last


# Playwright pauses the page's clock at a given time, which must not have passed when the call
# lands: this far ahead of the page's time. Timers due before it fire on the way.
PAUSE_AHEAD_S = 60


@contextmanager
def timers_paused(page: Page) -> Iterator[None]:
    """The page's timers wait while inside (Playwright's clock, which the test installed): a
    state that a timer ends, a notice or a "Copied" label, stays for the test to see however
    slow the machine, until the test moves the clock on. Time flows again on leaving."""
    page.clock.pause_at(page.evaluate("Date.now()") / 1000 + PAUSE_AHEAD_S)
    try:
        yield
    finally:
        page.clock.resume()


def canned_stream(text: str, piece_chars: int = 7) -> str:
    """An OpenAI streaming body that delivers `text` in small deltas, with usage and [DONE]."""
    pieces = [text[i : i + piece_chars] for i in range(0, len(text), piece_chars)]
    base = {"id": "chatcmpl-canned", "object": "chat.completion.chunk", "created": 1, "model": "canned"}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": len(pieces), "total_tokens": 9 + len(pieces)}})
    return "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"


def answer_with(page: Page, text: str, piece_chars: int = 7) -> list[dict[str, object]]:
    """Fulfil chat completions with `text`; returns the request bodies the page sent."""
    bodies: list[dict[str, object]] = []

    def handle(route: Route) -> None:
        bodies.append(json.loads(route.request.post_data or "{}"))
        body = canned_stream(text, piece_chars)
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/v1/chat/completions", handle)
    return bodies


def answer_from(page: Page, stream: ScriptedStream | HeldStream) -> None:
    """Send chat completions to `stream`, which releases its chunks when the test says."""
    page.route("**/v1/chat/completions", lambda route: route.continue_(url=stream.url))


def thinking_block(page: Page) -> Locator:
    return last_reply(page).locator(".thinking")


# ---- real server ------------------------------------------------------------------------------


def test_send_and_watch_the_reply_stream_in(new_page: NewPage, ui_server: ServerProcess, held_stream: HeldStream,
                                            screenshot: Screenshot) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    # Greedy decoding makes the tiny model run until max_tokens: a known token count.
    chat_settings(page, temperature="0", max_tokens="120")
    answer_from(page, held_stream)
    # Record the reply's text length at every DOM change, to see it grow in steps.
    page.evaluate(
        """() => {
          window.__lengths = [];
          new MutationObserver(() => {
            const el = document.querySelector('.message.assistant .markdown');
            if (el) window.__lengths.push(el.textContent.length);
          }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    prompt = page.get_by_label("Message", exact=True)
    prompt.fill("Hello there, tiny model")
    prompt.press("Shift+Enter")  # a line break, not a send
    prompt.type("second line")
    expect(page.locator(".message")).to_have_count(0)
    prompt.press("Enter")
    expect(page.locator(".message.user .user-text")).to_have_text(["Hello there, tiny model\nsecond line"])
    expect(prompt).to_have_value("")
    expect(page.locator(".message.assistant.streaming")).to_have_count(1)
    expect(page.get_by_role("button", name="Stop generating")).to_be_visible()
    # The reply shows what has come so far: its first tokens, more once let through, then all.
    markdown = last_reply(page).locator(".markdown")
    expect(markdown).not_to_have_text("")
    first = markdown.inner_text()
    held_stream.allow(20)
    expect(markdown).not_to_have_text(first)
    held_stream.release()
    wait_for_reply(page)

    reply = last_reply(page)
    text = reply.locator(".markdown").inner_text()
    assert len(text.strip()) > 20
    lengths = [n for n in page.evaluate("window.__lengths") if n > 0]
    assert len(set(lengths)) >= 3, f"the reply did not grow in steps: {lengths}"
    stats = reply.get_by_label("Reply statistics").inner_text()
    assert re.search(r"\b120 tokens\b", stats), stats  # the usage chunk's exact count
    assert re.search(r"[\d.]+ tok/s", stats), stats
    assert re.search(r"TTFT [\d.]+ (ms|s)", stats), stats
    # The first message names the conversation.
    expect(page.locator(".history-item")).to_have_text(["Hello there, tiny model"])
    screenshot(page, "chat-light")


def is_chat_request(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/v1/chat/completions")


def test_stop_a_reply_mid_stream(new_page: NewPage, ui_server: ServerProcess, held_stream: HeldStream,
                                 screenshot: Screenshot) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    chat_settings(page, temperature="0", max_tokens="1500")
    answer_from(page, held_stream)
    send(page, "Write a very long story")
    reply = last_reply(page)
    expect(reply.locator(".markdown")).not_to_have_text("")
    # Stop closes the connection: nothing more can come in after it.
    with page.expect_event("requestfailed", is_chat_request):
        page.get_by_role("button", name="Stop generating").click()
    expect(reply.get_by_text("Stopped.")).to_be_visible()
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    shown = reply.locator(".markdown").inner_text()
    assert "1500 tokens" not in reply.get_by_label("Reply statistics").inner_text()
    screenshot(page, "stopped")

    # The server let go of the cancelled request: the next message is answered.
    held_stream.release()  # the stopped reply's rest goes to a closed connection, which ends it
    chat_settings(page, max_tokens="20")
    send(page, "Again, shorter")
    wait_for_reply(page)
    expect(page.locator(".message.assistant")).to_have_count(2)
    expect(last_reply(page).get_by_label("Reply statistics")).to_contain_text("20 tokens")
    assert page.locator(".message.assistant").first.locator(".markdown").inner_text() == shown, \
        "text kept arriving after Stop"


def test_rename_and_delete_while_a_reply_streams(new_page: NewPage, ui_server: ServerProcess, held_stream: HeldStream) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    chat_settings(page, temperature="0", max_tokens="1500")
    answer_from(page, held_stream)

    send(page, "A long one")
    expect(last_reply(page).locator(".markdown")).not_to_have_text("")
    page.get_by_role("button", name="Rename “A long one”").click()
    page.get_by_label("New title").fill("Renamed mid-stream")
    page.get_by_label("New title").press("Enter")
    page.get_by_role("button", name="Stop generating").click()
    expect(last_reply(page).get_by_text("Stopped.")).to_be_visible()
    expect(page.locator(".history-item")).to_have_text(["Renamed mid-stream"])
    expect(page.locator(".chat-title")).to_have_text("Renamed mid-stream")

    page.get_by_role("button", name="New chat").click()
    send(page, "Delete me while you talk")
    expect(last_reply(page).locator(".markdown")).not_to_have_text("")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_event("requestfailed", is_chat_request):
        page.get_by_role("button", name="Delete “Delete me while you talk”").click()
    # Send is back once the stopped reply has wound up: it has had its last say on the list.
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    expect(page.locator(".history-item")).to_have_text(["Renamed mid-stream"])
    page.reload()
    expect(page.locator(".history-item")).to_have_text(["Renamed mid-stream"])


def test_reload_and_find_the_conversation(new_page: NewPage, ui_server: ServerProcess) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    chat_settings(page, max_tokens="30", system="You are terse.")
    send(page, "Remember the llama named Edge")
    wait_for_reply(page)
    reply_text = last_reply(page).locator(".markdown").inner_text()

    page.reload()
    # The URL names the conversation, so it is open again after the reload.
    expect(page.locator(".message.user .user-text")).to_have_text(["Remember the llama named Edge"])
    expect(last_reply(page).locator(".markdown")).to_have_text(reply_text)

    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    page.get_by_role("button", name="Remember the llama named Edge", exact=True).click()
    expect(page.locator(".message.user .user-text")).to_have_text(["Remember the llama named Edge"])
    expect(last_reply(page).locator(".markdown")).to_have_text(reply_text)
    # Its settings came back with it.
    page.get_by_role("button", name="Chat settings").click()
    expect(page.get_by_label("System prompt")).to_have_value("You are terse.")
    expect(page.get_by_label("Max tokens")).to_have_value("30")


def test_regenerate_and_edit_continue_from_there(new_page: NewPage, ui_server: ServerProcess) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    chat_settings(page, max_tokens="16")
    requests: list[dict[str, object]] = []
    page.on(
        "request",
        lambda request: requests.append(json.loads(request.post_data or "{}"))
        if request.url.endswith("/v1/chat/completions")
        else None,
    )
    send(page, "First question")
    wait_for_reply(page)
    send(page, "Second question")
    wait_for_reply(page)
    expect(page.locator(".message")).to_have_count(4)

    page.get_by_role("button", name="Regenerate reply").click()
    wait_for_reply(page)
    expect(page.locator(".message")).to_have_count(4)
    sent = [m["content"] for m in requests[-1]["messages"]]  # type: ignore[index]
    assert sent[0] == "First question" and sent[-1] == "Second question" and len(sent) == 3

    page.locator(".message.user").first.get_by_role("button", name="Edit message").click()
    page.get_by_role("textbox", name="Edit message").fill("First question, edited")
    page.get_by_role("button", name="Save & send").click()
    wait_for_reply(page)
    expect(page.locator(".message")).to_have_count(2)
    expect(page.locator(".message.user .user-text")).to_have_text(["First question, edited"])
    assert [m["content"] for m in requests[-1]["messages"]] == ["First question, edited"]  # type: ignore[index]
    expect(page.locator(".history-item")).to_have_text(["First question, edited"])


def test_errors_are_plain_and_retryable(new_page: NewPage, ui_server: ServerProcess, screenshot: Screenshot) -> None:
    page = new_page()
    wait_for_model(page, ui_server)

    # Context too long: the server's message, and what to do.
    send(page, "hello world " * 3000)
    error = last_reply(page).get_by_role("alert")
    expect(error).to_contain_text("Conversation too long")
    expect(error).to_contain_text("maximum context length")

    # Server unreachable: a banner with Retry, and a failed reply with Retry.
    page.get_by_role("button", name="Settings", exact=True).click()
    page.get_by_label("Server URL").fill(f"http://127.0.0.1:{free_port()}")
    page.get_by_role("button", name="Save").click()
    banner = page.locator(".banner")
    expect(banner).to_contain_text("Server unreachable")
    expect(banner.get_by_role("button", name="Retry")).to_be_visible()
    page.get_by_role("button", name="New chat").click()
    send(page, "Anyone there?")
    expect(last_reply(page).get_by_role("alert")).to_contain_text("Server unreachable")
    screenshot(page, "unreachable")

    # Back to the real server: Retry in the reply now succeeds.
    page.get_by_role("button", name="Settings", exact=True).click()
    page.get_by_label("Server URL").fill("")
    page.get_by_role("button", name="Save").click()
    expect(banner).to_have_count(0)
    wait_for_model(page, ui_server)
    last_reply(page).get_by_role("button", name="Retry").click()
    wait_for_reply(page)
    expect(last_reply(page).get_by_role("alert")).to_have_count(0)
    expect(last_reply(page).get_by_label("Reply statistics")).to_contain_text("tokens")


def test_an_api_key_is_asked_for_and_used(
    new_page: NewPage, start_server: Callable[..., ServerProcess], tiny_model: Path
) -> None:
    server = start_server("--model", str(tiny_model), "--api-key", "sesame")
    page = new_page(f"{server.base_url}/")
    banner = page.locator(".banner")
    expect(banner).to_contain_text("API key needed")
    expect(banner).to_contain_text("Enter the server's API key in Settings")

    page.get_by_role("button", name="Settings", exact=True).click()
    page.get_by_label("API key").fill("sesame")
    page.get_by_role("button", name="Save").click()
    expect(banner).to_have_count(0)
    expect(page.locator(".model-picker select")).to_have_value(tiny_model.stem)
    chat_settings(page, max_tokens="10")
    send(page, "Open sesame")
    wait_for_reply(page)
    expect(last_reply(page).get_by_label("Reply statistics")).to_contain_text("tokens")


def test_theme_switch(new_page: NewPage, ui_server: ServerProcess, screenshot: Screenshot) -> None:
    page = new_page(color_scheme="light")
    wait_for_model(page, ui_server)
    background = lambda: page.evaluate("getComputedStyle(document.body).backgroundColor")  # noqa: E731
    assert background() == "rgb(255, 255, 255)"
    theme = page.locator(".theme-select select")

    theme.select_option("dark")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert background() == "rgb(33, 33, 33)"
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert background() == "rgb(33, 33, 33)"

    theme.select_option("light")
    assert background() == "rgb(255, 255, 255)"

    # System follows the operating system's preference, also when it changes.
    theme.select_option("system")
    page.emulate_media(color_scheme="dark")
    assert background() == "rgb(33, 33, 33)"
    page.emulate_media(color_scheme="light")
    assert background() == "rgb(255, 255, 255)"

    theme.select_option("dark")
    send(page, "Dark mode, please")
    wait_for_reply(page)
    screenshot(page, "chat-dark")


def test_phone_viewport(new_page: NewPage, ui_server: ServerProcess, screenshot: Screenshot) -> None:
    width = 390
    page = new_page(viewport={"width": width, "height": 844}, is_mobile=True, has_touch=True)
    wait_for_model(page, ui_server)
    sidebar = page.get_by_role("complementary", name="Conversations")
    expect(sidebar).not_to_be_in_viewport()
    expect(page.get_by_role("button", name="Open sidebar")).to_be_visible()

    chat_settings(page, max_tokens="40")
    send(page, "Hi from a phone")
    wait_for_reply(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    composer = page.get_by_label("Message", exact=True).bounding_box()
    assert composer is not None and composer["x"] >= 0 and composer["x"] + composer["width"] <= width
    screenshot(page, "phone")

    page.get_by_role("button", name="Open sidebar").click()
    expect(sidebar).to_be_in_viewport(ratio=1)
    screenshot(page, "phone-sidebar")
    page.get_by_role("button", name="Hi from a phone", exact=True).click()
    expect(sidebar).not_to_be_in_viewport()
    expect(page.locator(".message.user .user-text")).to_have_text(["Hi from a phone"])


def test_history_search_rename_delete_export_import(new_page: NewPage, ui_server: ServerProcess, tmp_path: Path) -> None:
    page = new_page()
    page.clock.install()  # the notices leave after a while: see them with the clock paused
    wait_for_model(page, ui_server)
    export = {
        "format": "llamaedge.conversations",
        "version": 1,
        "conversations": [
            {"id": "a", "title": "Paella recipe", "updatedAt": 2, "messages": [{"role": "user", "content": "saffron?"}]},
            {"id": "b", "title": "Rust lifetimes", "updatedAt": 1, "messages": [{"role": "user", "content": "borrowing"}]},
        ],
    }
    with timers_paused(page):
        page.locator("input[type=file]").set_input_files(
            files=[{"name": "chats.json", "mimeType": "application/json", "buffer": json.dumps(export).encode()}]
        )
        expect(page.locator(".notice")).to_contain_text("Imported 2 chats")
    expect(page.locator(".history-item")).to_have_text(["Paella recipe", "Rust lifetimes"])

    page.get_by_label("Search conversations").fill("borrow")
    expect(page.locator(".history-item")).to_have_text(["Rust lifetimes"])
    page.get_by_label("Search conversations").fill("")

    page.get_by_role("button", name="Rename “Rust lifetimes”").click()
    page.get_by_label("New title").fill("Ownership in Rust")
    page.get_by_label("New title").press("Enter")
    # Renaming does not reorder: the list is by last activity.
    expect(page.locator(".history-item")).to_have_text(["Paella recipe", "Ownership in Rust"])

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete “Paella recipe”").click()
    expect(page.locator(".history-item")).to_have_text(["Ownership in Rust"])

    with page.expect_download() as download:
        page.get_by_role("button", name="Export").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert [c["title"] for c in exported["conversations"]] == ["Ownership in Rust"]
    assert exported["conversations"][0]["messages"][0]["content"] == "borrowing"

    with timers_paused(page):
        page.locator("input[type=file]").set_input_files(
            files=[{"name": "bad.json", "mimeType": "application/json", "buffer": b"{not json"}]
        )
        expect(page.locator(".notice")).to_contain_text("Import failed: The file is not JSON.")


def test_labels_and_visible_focus(new_page: NewPage, ui_server: ServerProcess) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    send(page, "Check the labels")
    wait_for_reply(page)
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, textarea')]
          .filter((el) => !(el.getAttribute('aria-label') || el.textContent.trim() ||
                            (el.labels && el.labels.length) || el.getAttribute('title')))
          .map((el) => el.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []
    # Tabbing reaches the controls, and the focused one shows an outline or a highlighted border.
    page.locator("body").click(position={"x": 5, "y": 5})
    seen: list[str] = []
    for _ in range(8):
        page.keyboard.press("Tab")
        focus = page.evaluate(
            """() => {
              const el = document.activeElement;
              const box = el.closest('.composer') || el;
              const style = getComputedStyle(el);
              const visible = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
              return {name: el.getAttribute('aria-label') || el.textContent.trim() || el.tagName,
                      visible: visible || box !== el};
            }"""
        )
        assert focus["visible"], f"focus on {focus['name']} is not visible"
        seen.append(focus["name"])
    assert "New chat" in " ".join(seen)


# ---- canned answers at the network seam ------------------------------------------------------


def test_model_loading_is_shown_and_the_page_recovers_by_itself(new_page: NewPage, ui_server: ServerProcess) -> None:
    """The tiny model loads in milliseconds, too fast to catch the server's 503; the
    model-list requests get the answer the server gives while loading instead, until the test
    says the model has loaded."""
    page = new_page("/health")  # any page of the origin, to register the route before the app loads
    loaded = threading.Event()
    answers: list[int] = []

    def models(route: Route) -> None:
        if loaded.is_set():
            answers.append(200)
            route.continue_()
            return
        answers.append(503)
        route.fulfill(
            status=503,
            headers={"Content-Type": "application/json", "Retry-After": "1"},
            body=json.dumps(
                {
                    "error": {
                        "message": "The model is still loading; try again shortly.",
                        "type": "server_error",
                        "param": None,
                        "code": "model_not_ready",
                    }
                }
            ),
        )

    page.route("**/v1/models", models)
    page.goto("/")
    banner = page.locator(".banner")
    expect(banner).to_contain_text("Model not ready")
    expect(banner).to_contain_text("The model is still loading; try again shortly.")
    # No click: the page asks again while the model loads, and the banner stays.
    with page.expect_request("**/v1/models"):
        pass
    expect(banner).to_contain_text("Model not ready")
    loaded.set()
    expect(banner).to_have_count(0)
    wait_for_model(page, ui_server)
    assert answers.count(503) >= 2 and answers[-1] == 200


# ---- canned replies at the network seam (rendering only) -------------------------------------

MARKDOWN_REPLY = """Here is a function:

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

| Language | Typed |
|----------|-------|
| Python   | gradually |
| Rust     | yes |

- first item
- second item

Start it with `llamaedge serve` and read [the docs](https://example.com/docs).
"""


COPIED_SHOWN_MS = 1500  # how long a copy button says "Copied" (MessageView.tsx)


def test_markdown_reply_with_a_code_block(new_page: NewPage, ui_server: ServerProcess, screenshot: Screenshot) -> None:
    page = new_page(permissions=["clipboard-read", "clipboard-write"])
    page.clock.install()
    wait_for_model(page, ui_server)
    bodies = answer_with(page, MARKDOWN_REPLY)
    send(page, "Show me some Markdown")
    wait_for_reply(page)
    assert bodies[0]["stream"] is True
    assert bodies[0]["stream_options"] == {"include_usage": True}

    markdown = last_reply(page).locator(".markdown")
    code = markdown.locator(".code-block pre code.language-python")
    expect(code).to_contain_text('return f"Hello, {name}!"')
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(markdown.locator(".code-lang")).to_have_text("python")
    expect(markdown.locator("table th")).to_have_text(["Language", "Typed"])
    expect(markdown.locator("table tbody tr")).to_have_count(2)
    # The reply's styles apply: a wide table scrolls inside the reply, inline code is boxed.
    table_style = markdown.locator("table").evaluate("el => [getComputedStyle(el).display, getComputedStyle(el).borderCollapse]")
    assert table_style == ["block", "collapse"]
    assert markdown.locator("p code").evaluate("el => getComputedStyle(el).borderTopStyle") == "solid"
    expect(markdown.locator("ul > li")).to_have_text(["first item", "second item"])
    expect(markdown.locator("p code")).to_have_text("llamaedge serve")
    link = markdown.get_by_role("link", name="the docs")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", re.compile("noopener"))
    screenshot(page, "markdown")

    copy_code = markdown.get_by_role("button", name="Copy code")
    with timers_paused(page):
        copy_code.click()
        expect(copy_code).to_have_text("Copied")
        page.clock.run_for(COPIED_SHOWN_MS)
        expect(copy_code).to_have_text("Copy")
    assert page.evaluate("navigator.clipboard.readText()") == 'def greet(name: str) -> str:\n    return f"Hello, {name}!"'
    last_reply(page).get_by_role("button", name="Copy message").click()
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN_REPLY


HOSTILE_REPLY = """Watch this: <img src=x onerror="window.__pwned = 'img'">

<script>window.__pwned = 'script'</script>

<a href="javascript:window.__pwned='link'">click me</a> and [also me](javascript:window.__pwned='md')
"""


def test_html_in_a_reply_stays_inert_text(new_page: NewPage, ui_server: ServerProcess) -> None:
    # Without the page's Content-Security-Policy, so this shows the sanitizer alone holds.
    page = new_page(bypass_csp=True)
    wait_for_model(page, ui_server)
    answer_with(page, HOSTILE_REPLY)
    send(page, "Say something dangerous")
    wait_for_reply(page)
    markdown = last_reply(page).locator(".markdown")
    expect(markdown).to_contain_text('<img src=x onerror="window.__pwned = \'img\'">')
    expect(markdown).to_contain_text("<script>window.__pwned = 'script'</script>")
    assert markdown.locator("img, script, iframe, [onerror]").count() == 0
    for link in markdown.locator("a").all():
        assert not (link.get_attribute("href") or "").lower().startswith("javascript:")
    # A link without href has no default action, and a handler would run within the click.
    also_me = markdown.get_by_text("also me")
    assert also_me.get_attribute("href") is None
    also_me.click()
    assert page.evaluate("window.__pwned") is None


# ---- phone header ----------------------------------------------------------------------------

# A model id as long as real GGUF names get: the select must shrink, not push the buttons out.
LONG_MODEL_ID = "DeepSeek-R1-Distill-Qwen-14B-Q4_K_M-with-a-long-suffix"


@pytest.mark.parametrize("size", [(360, 740), (320, 640)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_header_controls_fit_and_work_on_a_phone(
    new_page: NewPage, ui_server: ServerProcess, screenshot: Screenshot, size: tuple[int, int]
) -> None:
    width, height = size
    page = new_page("/health", viewport={"width": width, "height": height}, is_mobile=True, has_touch=True)
    models = {"object": "list", "data": [{"id": LONG_MODEL_ID, "object": "model", "created": 1, "owned_by": "x"}]}
    page.route("**/v1/models", lambda route: route.fulfill(status=200, json=models))
    page.goto("/")
    expect(page.locator(".model-picker select")).to_have_value(LONG_MODEL_ID)

    controls = page.locator("header.topbar").locator("button, select, input")
    names = []
    for control in controls.all():
        if not control.is_visible():
            continue
        tag = control.evaluate("el => el.tagName")
        name = "model picker" if tag == "SELECT" else control.get_attribute("aria-label") or control.inner_text().strip()
        names.append(name)
        box = control.bounding_box()
        assert box is not None, name
        assert box["x"] >= 0 and box["y"] >= 0, f"{name} starts outside the screen: {box}"
        assert box["x"] + box["width"] <= width, f"{name} is cut off at the right edge: {box}"
        assert box["y"] + box["height"] <= height, f"{name} is below the screen: {box}"
        # Actionable where it is: visible, enabled, and nothing else on top of its centre.
        control.click(trial=True)
    assert set(names) >= {"Open sidebar", "Chat settings", "model picker"}, names
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    screenshot(page, f"phone-header-{width}")

    page.get_by_role("button", name="Chat settings").tap()
    dialog = page.get_by_role("dialog", name="Chat settings")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").tap()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Open sidebar").tap()
    expect(page.get_by_role("complementary", name="Conversations")).to_be_in_viewport(ratio=1)


# ---- thinking models -------------------------------------------------------------------------

REASONING_1 = "The user asks for 2+2. "
REASONING_2 = "Two plus two is four."
ANSWER = "The answer is **4**."


@pytest.mark.parametrize("shape", ["reasoning_content", "inline"])
def test_thinking_streams_then_folds_when_the_answer_begins(
    new_page: NewPage, ui_server: ServerProcess, scripted_stream: ScriptedStream, screenshot: Screenshot, shape: str
) -> None:
    """`reasoning_content` deltas (llama.cpp's server), or a raw <think> block in `content`
    with the tags cut across chunks (llama-server --reasoning-format none)."""
    page = new_page()
    # The page's clock is the test's to move: how long the model "thought" is set, not slept.
    page.clock.install()
    wait_for_model(page, ui_server)
    answer_from(page, scripted_stream)
    send(page, "What is 2+2?")
    block = thinking_block(page)
    toggle = block.get_by_role("button")
    body = block.locator(".thinking-body")
    answer = last_reply(page).locator(".markdown")

    if shape == "reasoning_content":
        scripted_stream.delta(role="assistant", content=None, reasoning_content=REASONING_1)
    else:
        scripted_stream.delta(role="assistant", content="<thi")
        scripted_stream.delta(content="nk>\n" + REASONING_1)
    expect(toggle).to_have_text("Thinking…")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(body).to_have_text(REASONING_1.strip())
    expect(answer).to_have_text("")
    if shape == "reasoning_content":
        scripted_stream.delta(reasoning_content=REASONING_2)
    else:
        scripted_stream.delta(content=REASONING_2 + "\n</th")
    expect(body).to_have_text(REASONING_1 + REASONING_2)
    expect(answer).to_have_text("")
    screenshot(page, f"thinking-{shape}")
    thought_s = 5.0
    page.clock.fast_forward(int(thought_s * 1000))

    if shape == "reasoning_content":
        scripted_stream.delta(content="\n\nThe answer is ")
    else:
        scripted_stream.delta(content="ink>\n\nThe answer is ")
    expect(answer).to_have_text("The answer is")
    # The answer has begun: the block folds and says how long the model thought.
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(body).to_have_count(0)
    expect(toggle).to_have_text(re.compile(r"^Thought for \d+(\.\d)? s$"))
    shown_s = float(re.findall(r"[\d.]+", toggle.inner_text())[0])
    assert shown_s >= thought_s, f"thought for at least {thought_s} s, shown {shown_s} s"
    scripted_stream.delta(content="**4**.")
    scripted_stream.finish(completion_tokens=12)
    wait_for_reply(page)
    expect(answer).to_have_text("The answer is 4.")
    expect(answer.locator("strong")).to_have_text("4")
    label = toggle.inner_text()

    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(body).to_have_text(REASONING_1 + REASONING_2)
    screenshot(page, f"thought-{shape}")

    # Kept with the conversation: after a reload it is there, folded, with the same time.
    page.reload()
    expect(answer).to_have_text("The answer is 4.")
    expect(toggle).to_have_text(label)
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(body).to_have_text(REASONING_1 + REASONING_2)

    # The next request carries the earlier answer, never its reasoning.
    page.unroute("**/v1/chat/completions")
    bodies = answer_with(page, "Six.")
    send(page, "And 3+3?")
    wait_for_reply(page)
    assert bodies[0]["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "And 3+3?"},
    ]
    assert "Two plus two" not in json.dumps(bodies[0])
    assert scripted_stream.requests[0]["messages"] == [{"role": "user", "content": "What is 2+2?"}]


@pytest.mark.parametrize(
    ("reply", "reasoning", "answer"),
    [
        # The chat template opened the block in the prompt: only the closing tag arrives.
        ("Okay, the user says hi.\n</think>\n\nHello there!", "Okay, the user says hi.", "Hello there!"),
        # The reply ended before the block closed (max_tokens, say): it stays thinking.
        ("<think>\nLet me count the letters one by one", "Let me count the letters one by one", ""),
    ],
    ids=["template-opened", "never-closed"],
)
def test_inline_think_block_shapes(
    new_page: NewPage, ui_server: ServerProcess, reply: str, reasoning: str, answer: str
) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    answer_with(page, reply, piece_chars=3)
    send(page, "Hi")
    wait_for_reply(page)
    toggle = thinking_block(page).get_by_role("button")
    expect(toggle).to_have_text(re.compile(r"^Thought for [\d.]+ s$"))
    expect(last_reply(page).locator(".markdown")).to_have_text(answer)
    toggle.click()
    expect(thinking_block(page).locator(".thinking-body")).to_have_text(reasoning)
    assert "think>" not in last_reply(page).inner_text()


def test_thinking_hidden_by_the_setting(new_page: NewPage, ui_server: ServerProcess) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    page.get_by_role("button", name="Settings", exact=True).click()
    page.get_by_label("Show thinking").uncheck()
    page.get_by_role("button", name="Save").click()
    answer_with(page, f"<think>{REASONING_2}</think>\n\n{ANSWER}", piece_chars=4)
    send(page, "What is 2+2?")
    wait_for_reply(page)
    expect(last_reply(page).locator(".markdown")).to_have_text("The answer is 4.")
    expect(last_reply(page).locator(".thinking")).to_have_count(0)
    assert "Two plus two" not in last_reply(page).inner_text()

    # The setting is kept; the reasoning was kept too, and shows when the setting is on.
    page.reload()
    expect(last_reply(page).locator(".markdown")).to_have_text("The answer is 4.")
    expect(last_reply(page).locator(".thinking")).to_have_count(0)
    page.get_by_role("button", name="Settings", exact=True).click()
    expect(page.get_by_label("Show thinking")).not_to_be_checked()
    page.get_by_label("Show thinking").check()
    page.get_by_role("button", name="Save").click()
    thinking_block(page).get_by_role("button").click()
    expect(thinking_block(page).locator(".thinking-body")).to_have_text(REASONING_2)


def test_an_ordinary_reply_from_the_server_has_no_thinking_block(new_page: NewPage, ui_server: ServerProcess) -> None:
    page = new_page()
    wait_for_model(page, ui_server)
    chat_settings(page, temperature="0", max_tokens="24")  # greedy: runs to max_tokens
    send(page, "Just answer")
    wait_for_reply(page)
    expect(last_reply(page).get_by_label("Reply statistics")).to_contain_text("24 tokens")
    assert last_reply(page).locator(".markdown").inner_text().strip() != ""
    expect(last_reply(page).locator(".thinking")).to_have_count(0)
