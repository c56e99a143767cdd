"""The HTTP layer over real uvicorn on a real port, with small WAT apps standing in for the
chat app: status and headers from CGI output, streaming, traps, runaway apps, memory limits,
the API key, and /health while the model loads."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.routing import BaseRoute

from llamaedge.runtime import RunLimits
from llamaedge.server import ServeConfig, ServerState, create_app, default_app_path
from llamaedge.types import ResolvedModel
from tests.conftest import free_port
from tests.wat_apps import MEMORY_HOG, RUNAWAY, TRAPS, computes_for_app, write_app, writes_app


@contextmanager
def running(state: ServerState, *, load: bool = True, extra_routes: list[BaseRoute] | None = None) -> Iterator[str]:
    if load:
        state.load()
        assert state.error is None, state.error
    app = create_app(state, extra_routes=extra_routes)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=state.config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # bounds the wait only: a busy machine starts it late
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{state.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        state.close()


def config_for(tiny_model: Path, app: Path, **overrides: object) -> ServeConfig:
    return ServeConfig(
        model=ResolvedModel(path=tiny_model, model_id="tiny-chat"),
        port=free_port(), threads=2, ctx_size=512, app_path=app, **overrides,  # type: ignore[arg-type]
    )


def test_status_headers_and_chunks_come_from_the_app(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "stream.wasm", writes_app(
        ["Status: 201 Created\nContent-Type: text/plain\nX-Thing: yes\n", "\n", "first ", "second"]))
    with running(ServerState(config_for(tiny_model, app))) as url:
        response = httpx.post(f"{url}/v1/anything", content=b"{}")
    assert response.status_code == 201
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["x-thing"] == "yes"
    assert response.text == "first second"


def test_each_write_reaches_the_client_as_it_is_written(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "sse.wasm", writes_app(
        ["Content-Type: text/event-stream\n\n", "data: 1\n\n", "data: 2\n\n"]))
    with running(ServerState(config_for(tiny_model, app))) as url:
        with httpx.stream("GET", f"{url}/v1/events") as response:
            chunks = list(response.iter_raw())
    assert response.headers["cache-control"] == "no-cache"
    assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n"


@pytest.mark.parametrize(
    ("wat", "expected"),
    [
        (RUNAWAY, "ran for more than 0.3s without calling the host"),
        # WASI calls (the clock here) renew no deadline: what tests/test_run_wasm.py relies on.
        (computes_for_app(60), "ran for more than 0.3s without calling the host"),
        (TRAPS, "trapped"),
        (MEMORY_HOG, "exited with code 3"),
        (writes_app(["Content-Type: text/plain\n"]), "ended without a response"),
        (writes_app(["not a header line\n\n"]), "malformed response header"),
    ],
    ids=["runaway", "clock-reader", "trap", "memory-limit", "no-head", "bad-head"],
)
def test_a_failing_app_fails_its_request_and_the_server_carries_on(
        tmp_path: Path, tiny_model: Path, wat: str, expected: str) -> None:
    bad = write_app(tmp_path, "bad.wasm", wat)
    config = config_for(tiny_model, bad, limits=RunLimits(memory_max_bytes=16 * 2**20, wasm_slice_max_s=0.3))
    with running(ServerState(config)) as url:
        response = httpx.post(f"{url}/v1/chat/completions", json={}, timeout=30)
        assert response.status_code == 500
        error = response.json()["error"]
        assert expected in error["message"]
        assert error["type"] == "server_error"
        assert httpx.get(f"{url}/health").status_code == 200
        # The next request runs a fresh instance and fails the same way, not worse.
        assert httpx.post(f"{url}/v1/chat/completions", json={}, timeout=30).status_code == 500


def test_api_key_guards_every_api_route_but_not_health(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "ok.wasm", writes_app(["Content-Type: text/plain\n\n", "ok"]))
    with running(ServerState(config_for(tiny_model, app, api_key="s3cret"))) as url:
        for path in ("/v1/models", "/v1/chat/completions", "/v1/unknown"):
            missing = httpx.post(f"{url}{path}")
            assert missing.status_code == 401
            assert missing.json()["error"]["type"] == "authentication_error"
            wrong = httpx.post(f"{url}{path}", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = httpx.post(f"{url}{path}", headers={"Authorization": "Bearer s3cret"})
            assert right.status_code == 200 and right.text == "ok"
        assert httpx.get(f"{url}/health").status_code == 200


def test_health_and_api_answer_503_until_the_model_is_loaded(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "ok.wasm", writes_app(["Content-Type: text/plain\n\n", "ok"]))
    state = ServerState(config_for(tiny_model, app))
    with running(state, load=False) as url:
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        for path in ("/v1/models", "/v1/models/tiny-chat", "/v1/anything"):  # the library's and the app's
            api = httpx.get(f"{url}{path}")
            assert api.status_code == 503
            assert api.headers["retry-after"]
            assert api.json()["error"]["code"] == "model_not_ready"
        state.load()
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert httpx.get(f"{url}/v1/anything").text == "ok"
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["status"] == {"value": "loaded"}


def test_a_model_that_cannot_load_is_reported_by_health(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF but not really")
    app = write_app(tmp_path, "ok.wasm", writes_app(["Content-Type: text/plain\n\n", "ok"]))
    state = ServerState(config_for(bogus, app))
    with running(state, load=False) as url:
        state.load()
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "error"
        assert "could not load bogus.gguf" in health.json()["error"]


def test_the_model_decodes_a_warm_up_token_before_the_first_request(tiny_model: Path) -> None:
    state = ServerState(config_for(tiny_model, default_app_path()))
    with running(state) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert state.model is not None and state.model.n_tokens_decoded >= 1
        stats = state.model.stats()
        assert (stats.slots_busy, stats.sequences_running, stats.sequences_waiting) == (0, 0, 0)


def test_the_servers_connections_send_without_nagle_delay_and_a_small_buffer() -> None:
    from llamaedge.runtime.wagi import SOCKET_SEND_BUFFER_BYTES
    from llamaedge.server import listening_socket

    listener = listening_socket(uvicorn.Config(None, host="127.0.0.1", port=free_port()))
    try:
        listener.listen(1)
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        with client, accepted:
            # What each connection inherits from the listening socket.
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            # Linux doubles what is asked for (bookkeeping overhead).
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * SOCKET_SEND_BUFFER_BYTES
    finally:
        listener.close()
