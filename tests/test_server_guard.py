"""The Host and Origin guard on the real server (real uvicorn on a real port, the real chat app
on the tiny model, a mounted WAT app, the web chat): a request that names another Host, as a
DNS-rebinding page's do, is refused on every route, while the names of this machine work;
a cross-site POST is refused; /health keeps the load error for those with the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamaedge.mount import Mount
from llamaedge.runtime import AppPolicy
from llamaedge.server import HIDDEN_LOAD_ERROR, ServerState, default_app_path, mounted_app_routes, webui_routes_or_none
from tests.test_server_http import config_for, running
from tests.wat_apps import write_app, writes_app

CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
MESSAGES = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
# Every kind of route: the app's API (OpenAI's and Anthropic's), the mounted apps and their
# list, the web chat, and the host's own.
ROUTES: list[tuple[str, str, dict[str, object] | None]] = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/messages", MESSAGES),
    ("GET", "/apps", None),
    ("GET", "/hello", None),
    ("POST", "/hello/deeper", {}),
    ("GET", "/", None),
    ("GET", "/health", None),
    ("GET", "/metrics", None),
]
APP_ORIGIN = "http://app.example"  # the --cors-origin of the guarded server


@pytest.fixture(scope="module")
def guarded(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The server, bound to 127.0.0.1 with --allowed-host llm.example and --cors-origin
    http://app.example: its URL and port."""
    hello = write_app(tmp_path_factory.mktemp("apps"), "hello.wasm",
                      writes_app(["Content-Type: text/plain\n\n", "hello"]))
    config = config_for(tiny_model, default_app_path(), allowed_hosts=["llm.example"], cors_origins=[APP_ORIGIN],
                        mounts=[Mount("/hello", hello, AppPolicy())])
    state = ServerState(config)
    with running(state, extra_routes=[*mounted_app_routes(state), *webui_routes_or_none()]) as url:
        yield url, config.port


def send(url: str, method: str, path: str, body: dict[str, object] | None, **headers: str) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=60)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_a_foreign_host_is_refused_on_every_route_while_this_machines_names_work(
        guarded: tuple[str, int], method: str, path: str, body: dict[str, object] | None) -> None:
    url, port = guarded
    for host in (f"attacker.example:{port}", "attacker.example", f"llm.example.evil:{port}", f"10.0.0.5:{port}"):
        refused = send(url, method, path, body, host=host)
        assert refused.status_code == 403, (host, refused.text)
        if path == "/v1/messages":
            assert refused.json()["type"] == "error"
            assert refused.json()["error"]["type"] == "permission_error"
        else:
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("permission_error", "host_not_allowed")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost", f"llm.example:{port}"):
        response = send(url, method, path, body, host=host)
        assert response.status_code == 200, (host, response.text)
    assert send(url, method, path, body).status_code == 200  # httpx's own Host: 127.0.0.1:PORT


def test_a_cross_site_post_is_refused_on_the_api_and_the_apps(guarded: tuple[str, int]) -> None:
    url, port = guarded
    for path, body in (("/v1/chat/completions", CHAT), ("/hello", {}), ("/v1/messages", MESSAGES)):
        refused = send(url, "POST", path, body, origin="http://evil.example")
        assert refused.status_code == 403, refused.text
        assert "--cors-origin" in refused.json()["error"]["message"]
        assert "access-control-allow-origin" not in refused.headers
    assert send(url, "POST", "/v1/chat/completions", CHAT, origin="null").status_code == 403
    assert send(url, "POST", "/v1/messages", MESSAGES, origin="http://evil.example").json()["type"] == "error"
    # The web chat's own requests (its origin is the server's), an allowed origin, no origin.
    assert send(url, "POST", "/v1/chat/completions", CHAT, origin=f"http://127.0.0.1:{port}").status_code == 200
    allowed = send(url, "POST", "/v1/chat/completions", CHAT, origin=APP_ORIGIN)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert send(url, "POST", "/hello", {}).text == "hello"
    # Reads are not refused for their origin: CORS decides whether the page may see them.
    read = send(url, "GET", "/v1/models", None, origin="http://evil.example")
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


def test_health_gives_the_load_error_only_to_a_request_with_the_key(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF but not really")
    state = ServerState(config_for(bogus, default_app_path(), api_key="s3cret"))
    with running(state, load=False) as url:
        state.load()
        stranger = httpx.get(f"{url}/health")
        assert stranger.status_code == 503
        assert stranger.json() == {"status": "error", "model": "tiny-chat", "error": HIDDEN_LOAD_ERROR}
        assert "bogus" not in stranger.text
        for headers in ({"Authorization": "Bearer s3cret"}, {"x-api-key": "s3cret"}):
            keyed = httpx.get(f"{url}/health", headers=headers)
            assert keyed.status_code == 503 and "could not load bogus.gguf" in keyed.json()["error"]
        wrong = httpx.get(f"{url}/health", headers={"Authorization": "Bearer nope"})
        assert wrong.json()["error"] == HIDDEN_LOAD_ERROR
