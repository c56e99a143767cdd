"""The web UI routes on their own (Starlette's TestClient): caching, content types, and that
nothing outside the bundle can be reached."""

from __future__ import annotations

import asyncio
import re
import warnings
from pathlib import Path

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    # Starlette >= 1.x prefers the httpx2 package for its test client and warns when it falls
    # back to httpx; the fallback works the same for these tests.
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

from llamaedge.webui import CACHE_HASHED, CACHE_HTML, WEBUI_DIR, webui_routes


@pytest.fixture
def client() -> TestClient:
    return TestClient(Starlette(routes=webui_routes()))


def committed_assets() -> list[Path]:
    return sorted((WEBUI_DIR / "assets").iterdir())


def test_index_is_served_uncached_with_a_content_security_policy(client: TestClient) -> None:
    for path in ("/", "/index.html"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == CACHE_HTML
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.text == (WEBUI_DIR / "index.html").read_text()


def test_index_references_assets_that_are_served_immutable(client: TestClient) -> None:
    html = client.get("/").text
    referenced = re.findall(r'(?:src|href)="\./(assets/[^"]+)"', html)
    assert {Path(name).suffix for name in referenced} == {".js", ".css"}
    expected_type = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for name in referenced:
        response = client.get(f"/{name}")
        assert response.status_code == 200, name
        assert response.headers["cache-control"] == CACHE_HASHED
        assert response.headers["content-type"] == expected_type[Path(name).suffix]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (WEBUI_DIR / name).read_bytes()


def test_root_files_are_served_by_name(client: TestClient) -> None:
    response = client.get("/favicon.svg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert "immutable" not in response.headers["cache-control"]


def test_head_answers_without_a_body(client: TestClient) -> None:
    asset = committed_assets()[0]
    response = client.head(f"/assets/{asset.name}")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == asset.stat().st_size


def test_revalidating_the_index_with_its_etag_gives_304(client: TestClient) -> None:
    etag = client.get("/").headers["etag"]
    response = client.get("/", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["cache-control"] == CACHE_HTML
    assert client.get("/", headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/assets/missing.js",
        "/assets/",
        "/nothing-here.html",
        "/webui.py",
        "/assets/%2e%2e/index.html",
        "/assets/%2E%2E/%2E%2E/webui.py",
        "/assets/..%2f..%2fwebui.py",
        "/assets/%2e%2e%2f%2e%2e%2f__init__.py",
        "/assets/%2fetc%2fpasswd",
        "/assets//etc/passwd",
        "/assets/..%5c..%5cwebui.py",
        "/assets/x%00.js",
        "/assets/./" + "index.html",
    ],
)
def test_paths_outside_the_bundle_or_unknown_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, path
    assert "import" not in response.text  # no Python source leaked


def test_dot_segments_are_refused_even_when_the_client_sends_them_raw() -> None:
    """httpx normalises `..` in URLs before sending; a raw ASGI call shows what the routes do
    with a path that a less careful client or proxy passes through."""
    app = Starlette(routes=webui_routes())
    asset = committed_assets()[0].name
    assert _raw_get(app, f"/assets/{asset}") == 200
    for raw in (f"/assets/../assets/{asset}", "/assets/../../webui.py", "/assets/../../../../etc/passwd"):
        assert _raw_get(app, raw) == 404, raw


def _raw_get(app: Starlette, path: str) -> int:
    statuses: list[int] = []

    requested = False

    async def receive() -> dict[str, object]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # The response listens for a disconnect while it sends; the client never leaves.
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))  # type: ignore[arg-type]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    asyncio.run(app(scope, receive, send))
    return statuses[0]


def test_a_symlink_out_of_the_bundle_is_not_followed(tmp_path: Path) -> None:
    bundle = tmp_path / "webui"
    (bundle / "assets").mkdir(parents=True)
    (bundle / "index.html").write_text("<!doctype html><title>t</title>")
    secret = tmp_path / "secret.js"
    secret.write_text("secret")
    (bundle / "assets" / "leak.js").symlink_to(secret)
    (bundle / "assets" / "ok.js").write_text("ok")
    client = TestClient(Starlette(routes=webui_routes(bundle)))
    assert client.get("/assets/ok.js").text == "ok"
    assert client.get("/assets/leak.js").status_code == 404


def test_a_missing_bundle_says_how_to_build_it(tmp_path: Path) -> None:
    client = TestClient(Starlette(routes=webui_routes(tmp_path / "absent")))
    response = client.get("/")
    assert response.status_code == 500
    assert "npm --prefix ui run build" in response.text


def test_the_routes_claim_no_api_path(client: TestClient) -> None:
    for path in ("/v1/models", "/health", "/metrics", "/v1"):
        assert client.get(path).status_code == 404, path
