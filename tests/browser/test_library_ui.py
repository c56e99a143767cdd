"""The web chat's model library in Chromium, against `llamaedge serve` serving a library (no
--model): two generated models in the models folder, and a catalog (LLAMAEDGE_CATALOG) whose one
entry the fake hub serves, held part way so the test sees the download under way and cancels
it. Desktop and phone width."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import CHROMIUM_ARGS, DESKTOP, TIMEOUT_MS  # noqa: F401 - the same browser setup
from tests.conftest import ServerProcess
from tests.fakehub import FakeHub
from tests.tiny_gguf import write_tiny_gguf

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO, FILE = "llamaedge-test/tiny-hub-GGUF", "tiny-hub.gguf"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeHub, bytes]]:
    data = write_tiny_gguf(tmp_path_factory.mktemp("hub") / FILE, seed=3).read_bytes()
    with FakeHub() as fake:
        fake.add(REPO, FILE, data)
        fake.hold_at_byte = len(data) // 2  # the download waits half way until the test says
        yield fake, data


@pytest.fixture(scope="module")
def library(hub: tuple[FakeHub, bytes], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    fake, data = hub
    home = tmp_path_factory.mktemp("library-home")
    models = home / "models"
    models.mkdir()
    write_tiny_gguf(models / "tiny-a.gguf", seed=1)
    write_tiny_gguf(models / "tiny-b.gguf", seed=2)
    entry = {
        "name": "tiny-hub", "description": "the tiny model on the fake hub", "kind": "chat", "capabilities": ["chat"],
        "source": "huggingface", "repo": REPO, "file": FILE, "quantization": "F32", "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "parameters": "1M", "context_length": 2048,
        "license": "apache-2.0", "prompt_template": "auto", "memory_bytes": 64 * 2**20,
    }
    catalog = home / "catalog.json"
    catalog.write_text(json.dumps({"catalog_version": 1, "models": [entry]}))
    env = {**os.environ, "LLAMAEDGE_HOME": str(home), "HF_HOME": str(home / "hf"), "HF_ENDPOINT": fake.url,
           "LLAMAEDGE_CATALOG": str(catalog), "LLAMAEDGE_MODELS_DIR": str(models)}
    server = ServerProcess(["--models-max", "1", "--ctx-size", "512"], env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_chat(browser: Browser, library: ServerProcess) -> Iterator[Callable[..., Page]]:
    contexts = []

    def open_page(**context_args: object) -> Page:
        context = browser.new_context(base_url=library.base_url, **{"viewport": DESKTOP, **context_args})  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto("/")
        return page

    yield open_page
    for context in contexts:
        context.close()


def statuses(server: ServerProcess) -> dict[str, str]:
    return {m["id"]: m["status"]["value"] for m in httpx.get(f"{server.base_url}/v1/models").json()["data"]}


def send(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def test_pick_a_model_switch_and_each_chat_remembers_its_model(
        open_chat: Callable[..., Page], library: ServerProcess, screenshot: Callable[[Page, str], Path]) -> None:
    page = open_chat()
    picker = page.locator(".model-picker select")
    # Downloaded chat models are offered; the catalog's undownloaded one is not.
    expect(picker.locator("option")).to_have_text(["tiny-a", "tiny-b"])
    picker.select_option("tiny-b")
    send(page, "hello")
    expect(page.locator(".message.streaming")).to_have_count(0, timeout=60_000)
    expect(page.locator(".message.assistant").last.locator(".error-box")).to_have_count(0)
    assert statuses(library)["tiny-b"] == "loaded"
    # Loaded models come first in the menu now.
    expect(picker.locator("optgroup").first).to_have_attribute("label", "Loaded")
    first_chat = page.url

    page.get_by_role("button", name="New chat").first.click()
    picker.select_option("tiny-a")
    send(page, "hi there")
    expect(page.locator(".message.streaming")).to_have_count(0, timeout=60_000)
    assert statuses(library)["tiny-a"] == "loaded" and statuses(library)["tiny-b"] == "unloaded"  # --models-max 1
    screenshot(page, "library-switched")
    page.goto(first_chat)
    expect(picker).to_have_value("tiny-b")


def test_the_models_dialog_downloads_with_progress_and_cancels(
        open_chat: Callable[..., Page], library: ServerProcess, hub: tuple[FakeHub, bytes],
        screenshot: Callable[[Page, str], Path]) -> None:
    fake, _ = hub
    page = open_chat()
    page.get_by_role("button", name="Models").click()
    dialog = page.get_by_role("dialog", name="Models")
    expect(dialog.get_by_role("region", name="Downloadable").get_by_label("tiny-hub")).to_be_visible()
    row = dialog.locator('[data-model="tiny-hub"]')
    expect(row.locator(".chip")).to_have_text(["chat"])
    row.get_by_role("button", name="Download").click()
    # The hub holds the file half way: the bar shows the download under way, with its size.
    bar = row.get_by_label("Downloading tiny-hub")
    expect(bar).to_be_visible()
    expect(bar).to_have_attribute("value", re.compile(r"^\d+$"))
    expect(row.locator(".library-state")).to_have_text("Downloading")
    assert statuses(library)["tiny-hub"] == "downloading"
    screenshot(page, "library-downloading")
    row.get_by_role("button", name="Cancel").click()
    # A cancel takes effect at the next bytes the download receives (docs/library.md).
    fake.release.set()
    expect(row.get_by_role("button", name="Download")).to_be_visible()
    assert statuses(library)["tiny-hub"] == "unloaded"

    # Again, in full this time (resumed): it moves to Downloaded and the chat can pick it.
    row.get_by_role("button", name="Download").click()
    expect(dialog.get_by_role("region", name="Downloaded").get_by_label("tiny-hub")).to_be_visible(timeout=60_000)
    dialog.locator('[data-model="tiny-hub"]').get_by_role("button", name="Use in this chat").click()
    expect(page.locator(".model-picker select")).to_have_value("tiny-hub")


def test_the_library_on_a_phone(open_chat: Callable[..., Page], screenshot: Callable[[Page, str], Path]) -> None:
    width = PHONE["width"]
    page = open_chat(viewport=PHONE, is_mobile=True, has_touch=True)
    expect(page.locator(".model-picker select")).not_to_have_value("")
    models_button = page.get_by_role("button", name="Models")
    box = models_button.bounding_box()
    assert box is not None and box["x"] + box["width"] <= width
    models_button.tap()
    dialog = page.get_by_role("dialog", name="Models")
    expect(dialog.locator('[data-model="tiny-a"]')).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    dialog_box = dialog.bounding_box()
    assert dialog_box is not None and dialog_box["x"] >= 0 and dialog_box["x"] + dialog_box["width"] <= width
    screenshot(page, "library-phone")
