"""The Python API: `llamaedge.serve()` starts `llamaedge serve` in a child process, waits until
it is ready, and stops it cleanly (docs/python.md).

    with llamaedge.serve("qwen3.5-2b") as server:
        client = OpenAI(base_url=server.openai_base_url, api_key=server.api_key or "unused")

A child process rather than a server thread in the caller's: llama.cpp can abort the process
it runs in (a failed assertion, an out-of-memory GPU), and the caller's process (a notebook
kernel, a test run) should outlive that. The child is `python -m llamaedge serve` with the
caller's interpreter, so it sees the same installation.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO

from llamaedge.errors import ServerStartError
from llamaedge.limits import DRAIN_S

READY_TIMEOUT_S = 600.0  # a first start may download the model
HEALTH_POLL_S = 0.1
HEALTH_REQUEST_TIMEOUT_S = 2.0
# After SIGTERM the server drains requests in flight for up to --drain-s: the wait covers
# that, the last events' flush and the models' release before the kill.
STOP_WAIT_S = DRAIN_S + 10.0
OUTPUT_LINES_MAX = 200  # the server's output kept for `Server.output` and errors
PORT_TRIES = 3  # a free port picked here may be taken before the server binds it


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _url_host(host: str) -> str:
    """How a client on this machine names a server bound to `host`."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def error_line(output: str) -> str:
    """The line of the server's output that says why it stopped: its last `error:` line
    (the CLI's one-line errors), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


class _Output:
    """The child's stdout and stderr, read on a thread as they come (a pipe nobody reads
    fills and blocks the server); the last OUTPUT_LINES_MAX lines are kept."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._lines: deque[str] = deque(maxlen=OUTPUT_LINES_MAX)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(pipe,), name="llamaedge-output", daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in pipe:
                with self._lock:
                    self._lines.append(raw.decode(errors="replace").rstrip("\n"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def wait_closed(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM (the server drains and exits 0), then a kill if it has not exited in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Server:
    """A `llamaedge serve` child process that answered /health with 200; made by `serve()`.
    A context manager: leaving the `with` block stops it. One that is never stopped is
    stopped when it is garbage-collected or the interpreter exits."""

    def __init__(self, process: subprocess.Popen[bytes], output: _Output, host: str, port: int,
                 api_key: str | None) -> None:
        self.process = process
        self.port = port
        self.api_key = api_key
        self.base_url = f"http://{_url_host(host)}:{port}"
        self.openai_base_url = f"{self.base_url}/v1"  # for OpenAI clients' base_url
        self._output = output
        self._finalizer = weakref.finalize(self, _stop, process, STOP_WAIT_S)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs; 0 after a clean stop."""
        return self.process.poll()

    @property
    def output(self) -> str:
        """What the server has printed (its last OUTPUT_LINES_MAX lines): the banner, warnings."""
        return self._output.text()

    def stop(self, timeout_s: float = STOP_WAIT_S) -> int:
        """Stop the server: SIGTERM, which lets requests in flight finish (up to its --drain-s),
        then a kill after `timeout_s`. Returns its exit status; a second call returns it again."""
        if self._finalizer.alive:
            self._finalizer.detach()
            _stop(self.process, timeout_s)
            self._output.wait_closed(timeout_s)
        return self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exited {self.returncode}"
        return f"<llamaedge.Server {self.base_url} pid {self.pid} {state}>"


def serve(model: str | os.PathLike[str], *, port: int | None = None, host: str = "127.0.0.1",
          ctx_size: int | None = None, api_key: str | None = None, parallel: int | None = None,
          threads: int | None = None, n_gpu_layers: int | None = None, extra_args: Sequence[str] = (),
          env: Mapping[str, str] | None = None, ready_timeout_s: float = READY_TIMEOUT_S) -> Server:
    """Start `llamaedge serve` in a child process and return it once /health answers 200.

    `model`: a catalog name (downloaded if missing), a .gguf path, `hf:OWNER/REPO/FILE` or an
    https URL, as `--model` takes. `port`: None or 0 for a free one. `api_key`: required on
    /v1 (passed in the child's environment, not its command line, which other users can
    read). `extra_args`: more `serve` options, e.g. `["--embedding-model", "nomic-embed"]`.
    `env`: variables set for the child beside the caller's. Raises ServerStartError with
    the server's own error line when it exits before it is ready or is not ready within
    `ready_timeout_s` (then it is stopped)."""
    args = ["--model", os.fspath(model), "--host", host]
    for flag, value in (("--ctx-size", ctx_size), ("--parallel", parallel), ("--threads", threads),
                        ("--n-gpu-layers", n_gpu_layers)):
        if value is not None:
            args += [flag, str(value)]
    args += list(extra_args)
    child_env = {**os.environ, **(env or {})}
    if api_key is not None:
        child_env["LLAMAEDGE_API_KEY"] = api_key
    # An explicit port fails when it is taken; a picked one is picked again.
    tries = PORT_TRIES if not port else 1
    for attempt in range(tries):
        chosen = port or _free_port(host)
        try:
            return _start(args, child_env, host, chosen, ready_timeout_s)
        except ServerStartError as err:
            if attempt + 1 == tries or f"listen on {host}:{chosen}" not in str(err):
                raise
    raise AssertionError("unreachable")


def _start(args: list[str], env: dict[str, str], host: str, port: int, ready_timeout_s: float) -> Server:
    command = [sys.executable, "-m", "llamaedge", "serve", *args, "--port", str(port)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env)
    assert process.stdout is not None
    output = _Output(process.stdout)
    server = Server(process, output, host, port, env.get("LLAMAEDGE_API_KEY") or None)
    deadline = time.monotonic() + ready_timeout_s
    try:
        return _wait_ready(server, output, deadline, ready_timeout_s)
    except BaseException:  # Ctrl-C in a notebook too: no server left behind
        server.stop()
        raise


def _wait_ready(server: Server, output: _Output, deadline: float, ready_timeout_s: float) -> Server:
    process = server.process
    while True:
        if process.poll() is not None:
            output.wait_closed(HEALTH_REQUEST_TIMEOUT_S)
            text = output.text()
            raise ServerStartError(f"the server did not start: {error_line(text)}", output=text,
                                   returncode=process.returncode)
        if _healthy(server.base_url):
            return server
        if time.monotonic() >= deadline:
            server.stop()  # before the text is read: its last words are in it
            text = output.text()
            raise ServerStartError(f"the server was not ready within {ready_timeout_s:g}s: {error_line(text)}",
                                   output=text, returncode=None,
                                   hint="a first start may download the model: give ready_timeout_s more time")
        time.sleep(HEALTH_POLL_S)


# The server is on this machine: no HTTP(S)_PROXY from the environment on the way.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(base_url: str) -> bool:
    try:
        with _DIRECT.open(f"{base_url}/health", timeout=HEALTH_REQUEST_TIMEOUT_S) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # not listening yet, or 503 while loading
        return False
