"""Backpressure end to end, on a real server over a real port: a client that stops reading
stops its own generation (the app's writes wait for the client, the engine's sequence waits
for the app), and nobody else notices."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai.types.chat import ChatCompletionChunk

from llamaedge.engine import LoadOptions, Model
from llamaedge.runtime import RunLimits
from tests.conftest import serving

SLOW_MAX_TOKENS = 3000
FAST_MAX_TOKENS = 200
# Tokens the slow stream may run ahead of its reader: what the kernel's socket buffers and
# uvicorn's write buffer hold (a thousand-odd SSE events of the tiny model: wagi's
# SOCKET_SEND_BUFFER_BYTES and asyncio's 64 KiB high-water mark), the app's chunk window and
# the engine's lookahead.
SLOW_AHEAD_MAX = 2000


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with serving(tmp_path_factory.mktemp("home"), "--model", str(tiny_model), "--ctx-size", "4096",
                 "--parallel", "2", "--threads", "2") as srv:
        yield srv


@pytest.fixture(scope="module")
def no_end_bias(tiny_model: Path) -> dict[str, int]:
    """logit_bias that bans the tiny model's end tokens, so that every stream runs to max_tokens."""
    model = Model(tiny_model, LoadOptions(threads=1, ctx_size=256, parallel=1))
    try:
        ids = [t for text in (b"<|im_end|>", b"<|endoftext|>") for t in model.tokenize(text)]
    finally:
        model.close()
    return {str(t): -100 for t in ids}


def chat_body(max_tokens: int, bias: dict[str, int]) -> dict[str, object]:
    return {"model": "tiny-chat", "messages": [{"role": "user", "content": "Tell me a long story."}],
            "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
            "max_tokens": max_tokens, "logit_bias": bias}


def kv_cells_used(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    match = re.search(r"^llamaedge_kv_cache_cells_used\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def server_rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


def open_slow_stream(port: int, body: dict[str, object]) -> socket.socket:
    """A raw HTTP/1.1 streaming request on a socket with a small receive buffer, read only up
    to the response head."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def read_sse(chunks: Iterator[str]) -> list[ChatCompletionChunk]:
    events = []
    for line in chunks:
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(ChatCompletionChunk.model_validate(json.loads(line[6:]), strict=True))
    return events


def test_a_client_that_does_not_read_slows_only_itself(server: object, no_end_bias: dict[str, int]) -> None:
    base_url, port, pid = server.base_url, server.port, server.proc.pid  # type: ignore[attr-defined]
    cells_idle = kv_cells_used(base_url)
    slow = open_slow_stream(port, chat_body(SLOW_MAX_TOKENS, no_end_bias))
    try:
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=chat_body(FAST_MAX_TOKENS, no_end_bias),
                          timeout=60) as fast:
            fast_events = read_sse(fast.iter_lines())
        # The other stream got all its tokens while the slow one was not read at all.
        assert fast_events[-1].usage is not None and fast_events[-1].usage.completion_tokens == FAST_MAX_TOKENS
        assert fast_events[-2].choices[0].finish_reason == "length"
        assert "".join(e.choices[0].delta.content or "" for e in fast_events if e.choices)
        fast_cells = fast_events[-1].usage.prompt_tokens + FAST_MAX_TOKENS - 1

        # The slow stream stops a bounded way ahead of its reader: the app's write waits for the
        # client and the engine's sequence for the app. It stays stopped for longer than the app
        # may run between two host calls (its wait is not counted as its own time).
        wait_until_stalled(base_url)
        cells_stopped = kv_cells_used(base_url)
        rss_stopped = server_rss_bytes(pid)
        time.sleep(RunLimits().wasm_slice_max_s + 1)
        assert kv_cells_used(base_url) == cells_stopped
        assert stalled(base_url)
        slow_cells = cells_stopped - cells_idle - fast_cells
        assert 0 < slow_cells < SLOW_AHEAD_MAX
        assert server_rss_bytes(pid) - rss_stopped < 8 * 1024 * 1024

        # Read again, the slow stream goes on, well-formed.
        slow.settimeout(60)
        raw = b""
        while len(raw) < 256 * 1024:
            data = slow.recv(65536)
            assert data, "the server closed the slow stream early"
            raw += data
        assert b"data: {" in raw
        deadline = time.monotonic() + 30
        while kv_cells_used(base_url) <= cells_stopped:
            assert time.monotonic() < deadline, "the slow stream never resumed"
            time.sleep(0.05)
        assert b'"error"' not in raw
    finally:
        slow.close()
    wait_for_idle(base_url)


def stalled(base_url: str) -> bool:
    """Whether one response waits for its client (the server's `llamaedge_responses_stalled`)
    and one sequence for its reader (the engine's `llamaedge_sequences_paused`): then the
    sequence cannot go on until the client reads."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return bool(re.search(r"^llamaedge_responses_stalled 1\.0$", text, re.M)) and \
        bool(re.search(r"^llamaedge_sequences_paused\{[^}]*\} 1\.0$", text, re.M))


def wait_until_stalled(base_url: str) -> None:
    deadline = time.monotonic() + 30
    while not stalled(base_url):
        assert time.monotonic() < deadline, "the slow stream never stopped"
        time.sleep(0.05)


def wait_for_idle(base_url: str) -> None:
    """Until no slot is busy and no request is in flight."""
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
        if re.search(r"^llamaedge_slots_busy\{[^}]*\} 0\.0$", text, re.M) and \
           re.search(r"^llamaedge_requests_in_flight 0\.0$", text, re.M):
            return
        assert time.monotonic() < deadline, text
        time.sleep(0.05)


def test_a_client_that_leaves_without_reading_frees_its_slot(server: object, no_end_bias: dict[str, int]) -> None:
    base_url, port = server.base_url, server.port  # type: ignore[attr-defined]
    slow = open_slow_stream(port, chat_body(SLOW_MAX_TOKENS, no_end_bias))
    wait_until_stalled(base_url)  # it fills the buffers and stops
    slow.close()
    wait_for_idle(base_url)
