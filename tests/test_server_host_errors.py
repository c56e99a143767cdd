"""The host's own answers, as a real client of each API reads them: the API key in either
header, and the host's errors (401, 503 while loading, 500 when the app fails) in
Anthropic's shape on /v1/messages and OpenAI's elsewhere."""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from anthropic.types import ErrorResponse

from llamaedge.runtime import RunLimits
from llamaedge.server import ServerState
from tests.test_server_http import config_for, running
from tests.wat_apps import TRAPS, write_app, writes_app

# Prints its environment (NUL-separated "KEY=VALUE" strings) as a text/plain body.
ENV_DUMP = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 64) "Content-Type: text/plain\\0a\\0a")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (drop (call $sizes (i32.const 16) (i32.const 20)))
    (drop (call $environ_get (i32.const 1024) (i32.const 8192)))
    (call $write (i32.const 64) (i32.const 26))
    (call $write (i32.const 8192) (i32.load (i32.const 20)))))"""

OK_APP = writes_app(["Content-Type: text/plain\n\n", "ok"])


def app_environment(body: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in body.split("\0") if item)
    return {key: value for key, _, value in pairs}


def test_x_api_key_is_accepted_as_bearer_is(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "ok.wasm", OK_APP)
    with running(ServerState(config_for(tiny_model, app, api_key="s3cret"))) as url:
        right = httpx.post(f"{url}/v1/chat/completions", headers={"x-api-key": "s3cret"})
        assert right.status_code == 200 and right.text == "ok"
        wrong = httpx.post(f"{url}/v1/chat/completions", headers={"x-api-key": "nope"})
        assert wrong.status_code == 401
        # A wrong bearer key is not rescued by a missing x-api-key, nor the reverse.
        both_wrong = httpx.post(f"{url}/v1/models", headers={"x-api-key": "nope", "Authorization": "Bearer no"})
        assert both_wrong.status_code == 401
        one_right = httpx.post(f"{url}/v1/models", headers={"x-api-key": "s3cret", "Authorization": "Bearer no"})
        assert one_right.status_code == 200


def test_the_api_key_never_reaches_the_app(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "env.wasm", ENV_DUMP)
    with running(ServerState(config_for(tiny_model, app, api_key="s3cret"))) as url:
        for headers in ({"x-api-key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
            response = httpx.post(f"{url}/v1/anything", headers={**headers, "X-Other": "kept"})
            assert response.status_code == 200
            env = app_environment(response.text)
            assert env["HTTP_X_OTHER"] == "kept"
            assert "s3cret" not in response.text
            assert "HTTP_X_API_KEY" not in env and "HTTP_AUTHORIZATION" not in env


def test_a_missing_key_on_the_anthropic_route_is_an_anthropic_authentication_error(
        tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "ok.wasm", OK_APP)
    with running(ServerState(config_for(tiny_model, app, api_key="s3cret"))) as url:
        with anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0) as client:
            with pytest.raises(anthropic.AuthenticationError) as caught:
                client.messages.create(model="tiny-chat", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
            error = ErrorResponse.model_validate(caught.value.body, strict=True)
            assert error.error.type == "authentication_error"
            assert "x-api-key" in error.error.message
            # The same client with the right key gets through to the app.
            raw = httpx.post(f"{url}/v1/messages", headers={"x-api-key": "s3cret"}, json={})
            assert raw.status_code == 200 and raw.text == "ok"
        # Elsewhere the error stays OpenAI's.
        with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as openai_client:
            with pytest.raises(openai.AuthenticationError) as openai_caught:
                openai_client.models.list()
            assert openai_caught.value.code == "invalid_api_key"
            assert openai_caught.value.type == "authentication_error"


def test_loading_is_an_anthropic_overloaded_error_on_the_anthropic_route(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "ok.wasm", OK_APP)
    state = ServerState(config_for(tiny_model, app))
    with running(state, load=False) as url:
        response = httpx.post(f"{url}/v1/messages", json={})
        assert response.status_code == 503 and response.headers["retry-after"]
        error = ErrorResponse.model_validate(response.json(), strict=True)
        assert error.error.type == "overloaded_error"
        count = httpx.post(f"{url}/v1/messages/count_tokens", json={})
        assert ErrorResponse.model_validate(count.json(), strict=True).error.type == "overloaded_error"
        elsewhere = httpx.post(f"{url}/v1/chat/completions", json={})
        assert elsewhere.json()["error"]["code"] == "model_not_ready"
        # /v1/messagesX is not the Anthropic route.
        assert "error" in httpx.post(f"{url}/v1/messagesX", json={}).json()
        state.load()


def test_a_failing_app_is_an_anthropic_api_error_on_the_anthropic_route(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "trap.wasm", TRAPS)
    with running(ServerState(config_for(tiny_model, app))) as url:
        with anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0) as client:
            with pytest.raises(anthropic.InternalServerError) as caught:
                client.messages.create(model="tiny-chat", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
            assert caught.value.status_code == 500
            error = ErrorResponse.model_validate(caught.value.body, strict=True)
            assert error.error.type == "api_error" and "trapped" in error.error.message
        with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as openai_client:
            with pytest.raises(openai.InternalServerError) as openai_caught:
                openai_client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}])
            assert openai_caught.value.type == "server_error"


def test_a_stream_that_fails_midway_ends_with_the_routes_error_event(tmp_path: Path, tiny_model: Path) -> None:
    # Head and one event, then a trap: the host ends the stream in the route's own way.
    writes = writes_app(["Content-Type: text/event-stream\n\n", "event: ping\ndata: {}\n\n"])
    failing = writes.removesuffix("))") + " unreachable))"
    app = write_app(tmp_path, "half.wasm", failing)
    with running(ServerState(config_for(tiny_model, app))) as url:
        anthropic_text = httpx.post(f"{url}/v1/messages", json={}).text
        openai_text = httpx.post(f"{url}/v1/chat/completions", json={}).text
    last = anthropic_text.strip().split("\n\n")[-1]
    event, data = last.split("\n")
    assert event == "event: error"
    error = ErrorResponse.model_validate_json(data.removeprefix("data: "), strict=True)
    assert error.error.type == "api_error" and "trapped" in error.error.message
    assert openai_text.endswith("data: [DONE]\n\n")
    assert '"type": "server_error"' in openai_text


def test_a_full_server_is_an_anthropic_overloaded_error_on_the_anthropic_route(tmp_path: Path, tiny_model: Path) -> None:
    from tests.test_metrics import slow_stream

    # A stream that runs until its client leaves (days of events, an hour of wasm time): the
    # one place stays taken for as long as the test holds it, however slow the machine.
    app = write_app(tmp_path, "slow.wasm", slow_stream(10**6))
    config = config_for(tiny_model, app, parallel=1, queue_max=0, limits=RunLimits(wasm_slice_max_s=3600))
    with running(ServerState(config)) as url:
        with httpx.stream("POST", f"{url}/v1/messages", json={}, timeout=30) as held:
            chunks = held.iter_raw()  # kept: dropping the iterator would close the response
            next(chunks)  # in flight: the one place is taken
            with anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0) as client:
                with pytest.raises(anthropic.APIStatusError) as caught:
                    client.messages.create(model="tiny-chat", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
                assert caught.value.status_code == 503
                assert caught.value.response.headers["retry-after"] == "1"
                error = ErrorResponse.model_validate(caught.value.body, strict=True)
                assert error.error.type == "overloaded_error" and "capacity" in error.error.message
                openai_side = httpx.post(f"{url}/v1/chat/completions", json={})
                assert openai_side.status_code == 503 and openai_side.json()["error"]["code"] == "server_overloaded"
