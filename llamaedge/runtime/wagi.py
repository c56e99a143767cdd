"""WAGI, CGI for WebAssembly: how a server app meets HTTP (docs/host-interface.md).

The request goes in as environment variables and stdin; the app answers on stdout with CGI
header lines, a blank line, then the body, which is streamed: each write to stdout after the
headers is one chunk to the client."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import wasmtime

from llamaedge.runtime import host
from llamaedge.runtime.host import Runtime
from llamaedge.runtime.guard import RunGuard
from llamaedge.runtime.nn import NNSession
from llamaedge.runtime.run import App, restart_wasm_slice

app_log = logging.getLogger("llamaedge.app")

HEAD_MAX_BYTES = 64 * 1024
# Body chunks the app may be ahead of the client: past that, the app's next write to stdout
# waits until the client takes one. So a client that does not read stops its own app, whose
# engine sequence then stops LOOKAHEAD_TOKENS_MAX tokens ahead: a slow client slows itself only.
CHUNKS_AHEAD_MAX = 8
# The kernel's send buffer of each client connection (the server sets it on the listening
# socket; Linux would otherwise grow it to megabytes for a client that does not read, and the
# app would keep writing into it). Ample for a token stream, and for a LAN.
SOCKET_SEND_BUFFER_BYTES = 128 * 1024


@dataclass
class WagiRequest:
    method: str
    path: str
    query: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_length: int = 0  # may exceed len(body): a body over the limit arrives cut
    server_name: str = "127.0.0.1"
    server_port: int = 0
    script_name: str = ""  # a mounted app's route; `path` is then what follows it


# Headers the app never sees: the host checks the API key, and hop-by-hop headers are ours.
_WITHHELD = {"authorization", "connection", "content-length", "content-type", "transfer-encoding"}


def wagi_environ(request: WagiRequest, app_env: Mapping[str, str], *,
                 authorization: bool = False) -> list[tuple[str, str]]:
    """The CGI variables of `request`, then `app_env`. `authorization`: the app's policy
    grants it the Authorization header."""
    withheld = _WITHHELD - {"authorization"} if authorization else _WITHHELD
    env = [
        ("REQUEST_METHOD", request.method),
        ("PATH_INFO", request.path),
        ("X_RAW_PATH_INFO", request.script_name + request.path),
        ("QUERY_STRING", request.query),
        ("SCRIPT_NAME", request.script_name),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", request.server_name),
        ("SERVER_PORT", str(request.server_port)),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("CONTENT_LENGTH", str(request.content_length)),
        ("CONTENT_TYPE", next((v for k, v in request.headers if k.lower() == "content-type"), "")),
    ]
    for name, value in request.headers:
        if name.lower() not in withheld:
            env.append(("HTTP_" + name.upper().replace("-", "_"), value))
    if request.script_name:
        env.append(("X_MATCHED_ROUTE", request.script_name))
    env.extend(app_env.items())
    return env


class ResponseStream:
    """Parses what the app writes to stdout and hands it on: `on_head(status, headers)` once,
    then `on_chunk(bytes)` per write. The consumer calls `taken()` for each chunk it has sent
    on; a write with `chunks_ahead_max` chunks not yet taken waits for room (`stalled` is true
    meanwhile). After `close()` (the client left) writes, waiting ones too, fail with EPIPE,
    which the app sees as an error from fd_write."""

    def __init__(self, on_head: Callable[[int, list[tuple[str, str]]], None],
                 on_chunk: Callable[[bytes], None], *, chunks_ahead_max: int = CHUNKS_AHEAD_MAX) -> None:
        self._on_head = on_head
        self._on_chunk = on_chunk
        self._head = bytearray()
        self._room = threading.Condition()
        self._ahead = 0  # chunks handed on and not yet taken
        self._ahead_max = chunks_ahead_max
        self._on_resume: Callable[[], None] = lambda: None  # after a wait for room (run_wagi sets it)
        self.head_done = False
        self.closed = False
        self.stalled = False  # a write waits for the client to take what was sent
        self.error: str | None = None

    def write(self, data: bytes) -> int:
        if self.closed:
            return -errno.EPIPE
        if self.head_done:
            if data and not self._hand_on(data):
                return -errno.EPIPE
            return len(data)
        self._head += data
        end, sep = self._head.find(b"\r\n\r\n"), 4
        if end < 0:
            end, sep = self._head.find(b"\n\n"), 2
        if end < 0:
            if len(self._head) > HEAD_MAX_BYTES:
                self.error = "the app's response headers are longer than 64 KiB or never end"
                self.closed = True
                return -errno.EIO
            return len(data)
        head, rest = bytes(self._head[:end]), bytes(self._head[end + sep:])
        self._head = bytearray()
        try:
            status, headers = parse_cgi_head(head)
        except ValueError as exc:
            self.error = str(exc)
            self.closed = True
            return -errno.EIO
        self.head_done = True
        self._on_head(status, headers)
        if rest and not self._hand_on(rest):
            return -errno.EPIPE
        return len(data)

    def _hand_on(self, data: bytes) -> bool:
        """Wait for room, then pass `data` on; False when the client left meanwhile."""
        with self._room:
            if self._ahead >= self._ahead_max:
                self.stalled = True
                self._room.wait_for(lambda: self.closed or self._ahead < self._ahead_max)
                self.stalled = False
                self._on_resume()
            if self.closed:
                return False
            self._ahead += 1
        self._on_chunk(data)
        return True

    def taken(self) -> None:
        """The consumer sent one chunk on: room for the app's next write."""
        with self._room:
            self._ahead -= 1
            self._room.notify()

    def close(self) -> None:
        with self._room:
            self.closed = True
            self._room.notify_all()


def parse_cgi_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"malformed response header line {line[:80]!r}")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code = value.split(" ", 1)[0]
            if not code.isdigit() or not 100 <= int(code) <= 599:
                raise ValueError(f"bad Status header {value[:40]!r}")
            status = int(code)
        else:
            headers.append((name, value))
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/octet-stream"))
    return status, headers


class LineLog:
    """The app's stderr, line by line, into the server log; the last line is kept (a tool's
    error message)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._buf = b""
        self.last = ""

    def write(self, data: bytes) -> int:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            self._log(line)
        if len(self._buf) > 8192:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self._log(self._buf)
            self._buf = b""

    def _log(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip()
        if text:
            self.last = text
        app_log.info("%s: %s", self._prefix, text)


def run_wagi(runtime: Runtime, app: App, request: WagiRequest, app_env: Mapping[str, str],
             response: ResponseStream, session: NNSession, chain: tuple[str, ...] = ()) -> int:
    """Run one instance of `app` for `request` on this thread. Returns the exit code;
    raises AppTrap when the app traps or runs away, PolicyBreach when a mounted app goes
    beyond its policy (which also ends its output). `chain`: the apps and tools running on
    this thread for nested calls (`llamaedge.call`), this one last."""
    policy = app.policy
    wasi = wasmtime.WasiConfig()
    wasi.argv = [app.name]
    env = dict(app_env)
    if policy is not None:
        env.update(policy.env)
        host.grant_dirs(wasi, policy)
    wasi.env = wagi_environ(request, env, authorization=policy is not None and policy.authorization)
    host.set_stdin_bytes(wasi, request.body)
    wasi.stdout_custom = response.write
    response._on_resume = lambda: restart_wasm_slice(session)
    stderr = LineLog(app.name)
    wasi.stderr_custom = stderr.write
    guard = RunGuard(app.name, policy, session, stop=response.close) if policy is not None else None
    try:
        return runtime.run(app, wasi, session, guard, chain)
    finally:
        if guard is not None:
            guard.close()
        stderr.flush()


@dataclass
class Collected:
    """An app's whole response, read by the host itself (the tool loop's steps, an app
    called by another)."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


def run_collected(runtime: Runtime, app: App, request: WagiRequest, app_env: Mapping[str, str], session: NNSession,
                  *, sink: Callable[[bytes], None] | None = None, chain: tuple[str, ...] = ()) -> Collected:
    """`run_wagi`, its response collected; a 200's body goes to `sink` as it is written
    instead, when there is one. An app that exits without a head, or non-zero, is a 500."""
    collected = Collected()

    def on_head(status: int, headers: list[tuple[str, str]]) -> None:
        collected.status, collected.headers = status, headers

    def on_chunk(chunk: bytes) -> None:
        if sink is not None and collected.status == 200:
            sink(chunk)
        else:
            collected.body.extend(chunk)
        stream.taken()  # nobody to wait for: the host reads it as it comes

    stream = ResponseStream(on_head, on_chunk)
    code = run_wagi(runtime, app, request, app_env, stream, session, chain)
    if code != 0 or not collected.status:
        collected.status = collected.status or 500
    return collected
