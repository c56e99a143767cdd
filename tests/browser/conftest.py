"""Playwright fixtures: Debian's Chromium, headless, against `llamaedge serve` with the tiny
model on 127.0.0.1. One server and one browser for the whole run (starting them is the slow
part); a fresh browser context per test, so each test starts with empty browser storage."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

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
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
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
