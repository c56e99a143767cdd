"""The web chat with a vision model (`serve --mmproj`): attach by button, drop and paste,
thumbnails in the composer and in the message, the images sent with the request; no attach
control for a model without vision. Desktop and phone width."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DESKTOP, TIMEOUT_MS
from tests.conftest import ServerProcess
from tests.tiny_gguf import png_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
REPLY_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def vision_server(tiny_model: Path, tiny_mmproj: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("browser-vision-home")
    env = {**os.environ, "LLAMAEDGE_HOME": str(home), "HF_HOME": str(home / "hf")}
    env.pop("LLAMAEDGE_MODELS_DIR", None)
    server = ServerProcess(["--model", str(tiny_model), "--mmproj", str(tiny_mmproj), "--ctx-size", "1024"], env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _open(browser: Browser, server: ServerProcess, viewport: dict[str, int]) -> Page:
    context = browser.new_context(base_url=server.base_url, viewport=viewport,  # type: ignore[arg-type]
                                  is_mobile=viewport == PHONE, has_touch=viewport == PHONE)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    page.goto("/")
    model = json.loads(page.request.get(f"{server.base_url}/v1/models").text())["data"][0]["id"]
    expect(page.locator(".model-picker select")).to_have_value(model)
    return page


def _hand_over(page: Page, event: str, data: bytes) -> None:
    """A drop on the composer, or a paste into the message box, of one PNG file."""
    target = "form.composer" if event == "drop" else "#prompt"
    page.evaluate(
        """([target, event, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "picture.png", { type: "image/png" }));
            const init = { bubbles: true, cancelable: true };
            const e = event === "drop" ? new DragEvent("drop", { ...init, dataTransfer: transfer })
                                       : new ClipboardEvent("paste", { ...init, clipboardData: transfer });
            document.querySelector(target).dispatchEvent(e);
        }""",
        [target, event, base64.b64encode(data).decode()],
    )


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_attach_send_and_see_the_images(browser: Browser, vision_server: ServerProcess, tmp_path: Path,
                                        viewport: dict[str, int]) -> None:
    page = _open(browser, vision_server, viewport)
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes(30, 20, seed=1))
    expect(page.get_by_role("button", name="Attach images")).to_be_visible()
    page.get_by_label("Image files").set_input_files(str(picture))
    _hand_over(page, "drop", png_bytes(12, 12, seed=2))
    _hand_over(page, "paste", png_bytes(16, 8, seed=3))
    thumbnails = page.locator(".composer .thumbnail")
    expect(thumbnails).to_have_count(3)
    page.get_by_role("button", name="Remove image 2").click()
    expect(thumbnails).to_have_count(2)

    with page.expect_request("**/v1/chat/completions") as sent:
        page.get_by_label("Message", exact=True).fill("What is in these pictures?")
        page.get_by_label("Message", exact=True).press("Enter")
    parts = sent.value.post_data_json["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    expect(page.locator(".message.user .thumbnail")).to_have_count(2)
    expect(thumbnails).to_have_count(0)
    # Shown, not blocked (the page's Content-Security-Policy allows data: images).
    assert page.locator(".message.user .thumbnail").first.evaluate("img => img.naturalWidth") == 30
    expect(page.locator(".message.streaming")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)
    expect(page.locator(".message.assistant .error-box")).to_have_count(0)

    # The next turn sends the earlier images again (the server reuses their cache).
    with page.expect_request("**/v1/chat/completions") as again:
        page.get_by_label("Message", exact=True).fill("And now?")
        page.get_by_label("Message", exact=True).press("Enter")
    first_turn = again.value.post_data_json["messages"][0]["content"]
    assert [p["type"] for p in first_turn] == ["text", "image_url", "image_url"]
    expect(page.locator(".message.streaming")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)

    # Past the bound, the page says that only the latest images are sent.
    expect(page.locator(".images-bound")).to_have_count(0)
    page.get_by_label("Image files").set_input_files([str(picture)] * 3)
    expect(page.locator(".images-bound")).to_contain_text("Only the latest 4 images")
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


def test_no_attach_control_for_a_model_without_vision(browser: Browser, ui_server: ServerProcess) -> None:
    page = _open(browser, ui_server, DESKTOP)
    expect(page.get_by_label("Message", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Attach images")).to_have_count(0)
    _hand_over(page, "drop", png_bytes(12, 12, seed=2))
    expect(page.locator(".composer .thumbnail")).to_have_count(0)
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()
