"""Overload and shutdown with the real server process (`llamaedge serve` on the tiny model):
the bounded queue answers 503 at once, SIGTERM drains, a client that leaves during prefill
frees its slot, and a trapping app fails only its own requests while others finish."""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from starlette.routing import Route

from llamaedge.server import ServerState, default_app_path, wagi_endpoint
from tests.conftest import ServerProcess
from tests.engine_events import EVENT_WAIT_MAX_S, HeldDecoder
from tests.test_metrics import scrape, value
from tests.test_server_http import config_for, running
from tests.wat_apps import TRAPS, write_app

# "hello world " is 8 of the tiny model's tokens: this is most of a 16384-token context.
LONGEST_PROMPT = "hello world " * 1900
MEDIUM_PROMPT = "hello world " * 300  # ~2400 tokens
# A stream that runs on for seconds, on a fast machine too: the end token is banned.
ENDLESS_TOKENS = 12000
SERVE_ARGS = ("--threads", "2", "--ctx-size", "16384")


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def in_flight(server: ServerProcess) -> float:
    return in_flight_at(server.base_url)


def in_flight_at(base_url: str) -> float:
    return value(scrape(base_url), "llamaedge_requests_in_flight")


def chat_body(prompt: str, **extra: object) -> dict[str, object]:
    return {"model": "tiny-chat", "messages": [{"role": "user", "content": prompt}], **extra}


def raw_request(port: int, body: dict[str, object], *, receive_buffer_bytes: int | None = None) -> socket.socket:
    """Send a chat request on a raw socket, to close it whenever the test likes. The response
    is never read: a stream stops once the socket buffers between it and this socket are full
    (a small `receive_buffer_bytes` makes that sooner)."""
    payload = json.dumps(body).encode()
    sock = socket.socket()
    if receive_buffer_bytes is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


@pytest.fixture
def tiny_server(start_server: Callable[..., ServerProcess], tiny_model: Path) -> Callable[..., ServerProcess]:
    def start(*args: str) -> ServerProcess:
        return start_server("--model", str(tiny_model), *SERVE_ARGS, *args)
    return start


def test_requests_beyond_parallel_and_queue_get_503_at_once(tiny_server: Callable[..., ServerProcess],
                                                             tiny_model: Path) -> None:
    server = tiny_server("--parallel", "1", "--queue-max", "1")
    # Endless streams nobody reads: the first holds the slot and the second its place in the
    # queue until the test lets go, however fast or slow the machine.
    endless = chat_body("hi", max_tokens=ENDLESS_TOKENS, stream=True, logit_bias={str(eos_token_id(tiny_model)): -100})
    held = [raw_request(server.port, endless, receive_buffer_bytes=4096) for _ in range(2)]
    try:
        wait_for(lambda: in_flight(server) == 2, "two requests in flight")
        with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0) as client:
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(**chat_body("hi", max_tokens=1))  # type: ignore[call-overload]
            refused = caught.value.response
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert caught.value.code == "server_overloaded" and caught.value.type == "server_error"
            assert "at capacity" in caught.value.message
            # Full is not unhealthy.
            assert httpx.get(f"{server.base_url}/health").status_code == 200
            samples = scrape(server.base_url)
            assert value(samples, "llamaedge_requests_rejected_total", reason="queue_full") == 1
            assert value(samples, "llamaedge_requests_waiting") == 1
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: in_flight(server) == 0, "the held requests to be released")
    answer = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat_body("hi", max_tokens=2), timeout=60)
    assert answer.status_code == 200


def test_a_client_leaving_during_prefill_frees_its_slot(tiny_model: Path) -> None:
    config = dataclasses.replace(config_for(tiny_model, default_app_path(), parallel=1), ctx_size=16384)
    state = ServerState(config)
    with running(state) as url:
        assert state.model is not None
        # The prompt's third decode waits for the test: the client leaves mid-prefill.
        scheduler = state.model._scheduler
        held = HeldDecoder(scheduler.decoder, hold_at=3)
        scheduler.decoder = held
        body = chat_body(LONGEST_PROMPT, max_tokens=1)
        try:
            sock = raw_request(config.port, body)
            assert held.reached.wait(EVENT_WAIT_MAX_S), "the prefill never started"
            assert value(scrape(url), "llamaedge_slots_busy") == 1
            sock.close()
            # The server answers the leaving at once (499); the held decode is the last.
            wait_for(lambda: in_flight_at(url) == 0, "the server to see the client leave")
        finally:
            held.release()

        wait_for(lambda: value(scrape(url), "llamaedge_slots_busy") == 0, "the slot to be freed")
        samples = scrape(url)
        assert value(samples, "llamaedge_requests_total", route="/v1/chat/completions", status="499") == 1
        assert value(samples, "llamaedge_client_disconnects_total") == 1
        # The same prompt again finds only what was prefilled before the client left in the
        # slot's cache: the prefill stopped part way rather than running to its end.
        again = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
    usage = again["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"] - 1


def eos_token_id(model: Path) -> int:
    field = gguf.GGUFReader(model).fields["tokenizer.ggml.eos_token_id"]
    return int(field.parts[field.data[0]][0])


def stream_in_thread(server: ServerProcess, prompt: str, max_tokens: int,
                     **extra: object) -> tuple[threading.Thread, list[bytes]]:
    events: list[bytes] = []

    def read() -> None:
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=120,
                          json=chat_body(prompt, max_tokens=max_tokens, stream=True, **extra)) as response:
            assert response.status_code == 200
            buffer = b""
            for chunk in response.iter_raw():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n\n")
                events.extend(complete)

    thread = threading.Thread(target=read)
    thread.start()
    return thread, events


def test_sigterm_drains_in_flight_streams_and_exits_0(tiny_server: Callable[..., ServerProcess],
                                                     tiny_model: Path) -> None:
    server = tiny_server("--parallel", "2", "--drain-s", "120")
    thread, events = stream_in_thread(server, MEDIUM_PROMPT, 2000, logit_bias={str(eos_token_id(tiny_model)): -100})
    wait_for(lambda: in_flight(server) == 1 and len(events) >= 1, "the stream to start")
    server.proc.send_signal(signal.SIGTERM)
    health = httpx.get(f"{server.base_url}/health")
    assert health.status_code == 503 and health.json()["status"] == "draining"
    refused = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat_body("hi", max_tokens=1))
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "server_shutting_down"
    thread.join(120)
    assert server.proc.wait(timeout=60) == 0
    # The stream ran to its own end: valid chunks, a finish reason, then [DONE].
    assert events[-1] == b"data: [DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e.removeprefix(b"data: "), strict=True) for e in events[:-1]]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "Traceback" not in server.log()


def test_sigterm_ends_what_outlasts_the_drain_with_an_error_event_and_exits_0(
        tiny_server: Callable[..., ServerProcess], tiny_model: Path) -> None:
    server = tiny_server("--parallel", "1", "--drain-s", "1")
    thread, events = stream_in_thread(server, MEDIUM_PROMPT, ENDLESS_TOKENS,
                                      logit_bias={str(eos_token_id(tiny_model)): -100})
    wait_for(lambda: in_flight(server) == 1 and len(events) >= 1, "the stream to start")
    server.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    assert server.proc.wait(timeout=60) == 0
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["type"] == "server_error" and "shutting down" in error["message"]
    for event in events[:-2]:
        ChatCompletionChunk.model_validate_json(event.removeprefix(b"data: "), strict=True)


@pytest.fixture
def chat_and_trap(tmp_path: Path, tiny_model: Path) -> Iterator[str]:
    """The real chat app under /v1 and a trapping app under /trap, in one server."""
    trap_path = write_app(tmp_path, "trap.wasm", TRAPS)
    state = ServerState(config_for(tiny_model, default_app_path(), parallel=4))
    trap: dict[str, object] = {}
    route = Route("/trap/{path:path}", wagi_endpoint(state, lambda: trap.get("app")), methods=["POST"])  # type: ignore[arg-type]
    with running(state, extra_routes=[route]) as url:
        assert state.runtime is not None
        trap["app"] = state.runtime.load_app(trap_path)
        yield url


def test_under_load_a_trapping_app_fails_only_its_own_requests(chat_and_trap: str) -> None:
    url = chat_and_trap
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
        finished: list[str] = []
        trapped: list[int] = []
        errors: list[BaseException] = []

        def chat(i: int) -> None:
            try:
                for turn in range(2):
                    chunks = list(client.chat.completions.create(
                        **chat_body(f"client {i} turn {turn}", max_tokens=12, stream=True)))  # type: ignore[call-overload]
                    for chunk in chunks:
                        ChatCompletionChunk.model_validate(chunk.model_dump(exclude_unset=True), strict=True)
                    finished.append(chunks[-1].choices[0].finish_reason or "")
            except BaseException as exc:  # noqa: BLE001 - collected for the assert below
                errors.append(exc)

        def trap_requests() -> None:
            for _ in range(4):
                response = httpx.post(f"{url}/trap/x", json={}, timeout=60)
                trapped.append(response.status_code)
                assert "trapped" in response.json()["error"]["message"]

        threads = [threading.Thread(target=chat, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=trap_requests) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        assert sorted(set(finished)) <= ["length", "stop"] and len(finished) == 8
        assert trapped == [500] * 8
        assert httpx.get(f"{url}/health").status_code == 200
        samples = scrape(url)
        assert value(samples, "llamaedge_requests_in_flight") == 0
        assert value(samples, "llamaedge_requests_total", route="/v1/chat/completions", status="200") == 8


def test_ctrl_c_on_an_idle_server_exits_0(tiny_server: Callable[..., ServerProcess]) -> None:
    server = tiny_server()
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=30) == 0
    assert "Traceback" not in server.log()


def test_a_second_signal_ends_the_drain_at_once(tiny_server: Callable[..., ServerProcess], tiny_model: Path) -> None:
    server = tiny_server("--parallel", "1", "--drain-s", "600")
    thread, events = stream_in_thread(server, MEDIUM_PROMPT, ENDLESS_TOKENS,
                                      logit_bias={str(eos_token_id(tiny_model)): -100})
    wait_for(lambda: in_flight(server) == 1 and len(events) >= 1, "the stream to start")
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: httpx.get(f"{server.base_url}/health").json()["status"] == "draining", "draining")
    server.proc.send_signal(signal.SIGINT)
    thread.join(60)
    assert server.proc.wait(timeout=60) == 0
    assert events[-1] == b"data: [DONE]" and b"shutting down" in events[-2]
