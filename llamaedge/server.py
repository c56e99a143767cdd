"""The HTTP server: Starlette on uvicorn. It owns transport, scheduling and the model's life;
the chat-server app owns the API. Requests under /v1 each run a fresh instance of the app
(WAGI); `/health` says whether the model is ready; `/metrics` is for Prometheus; `/` serves
the web chat. Requests beyond --parallel wait, up to --queue-max, then get 503 at once; on
SIGTERM the server drains (docs/operations.md).

    HTTP request -> app instance (wasm) -> WASI-NN host calls -> engine -> chunks to the client
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llamaedge import catalog
from llamaedge.engine import Model, SpecOptions
from llamaedge.errors import AppError, LlamaEdgeError, UsageError
from llamaedge.limits import DRAIN_S, MAX_BODY_BYTES, queue_limit
from llamaedge.metrics import HostSnapshot, MetricsMiddleware, ModelSnapshot, ServerMetrics
from llamaedge.model_load import ModelLoad, load_options
from llamaedge.mount import APPS_ROUTE, Mount, mount_routes
from llamaedge.runtime import App, GraphRegistry, NNSession, PolicyBreach, ResponseStream, RunLimits, Runtime, WagiRequest, run_wagi
from llamaedge.runtime.wagi import SOCKET_SEND_BUFFER_BYTES
from llamaedge.types import ResolvedModel

log = logging.getLogger("llamaedge.server")

MODEL_GRAPH = "default"
EMBEDDING_GRAPH = "embedding"  # the graph name of a separate --embedding-model
ANTHROPIC_ROUTE = "/v1/messages"  # its requests get the host's errors in Anthropic's shape
RETRY_AFTER_S = 1  # what a refused client is told to wait
ENDED_FLUSH_S = 2.0  # after the drain deadline, time for the ended responses to send their last event
# At exit, how long cancelled apps get to return from wasm (a run is at most the wasm time
# slice past its last host call, which fails once cancelled).
APP_STOP_WAIT_S = 10.0
_END = object()
_ENDED = object()


def default_app_path() -> Path:
    return Path(str(resources.files("llamaedge") / "apps" / "chat-server.wasm"))


@dataclass
class ServeConfig:
    model: ResolvedModel
    host: str = "127.0.0.1"
    port: int = 8080
    ctx_size: int | None = None
    n_gpu_layers: int | None = None  # None: all layers; `launch` decides from the devices found
    threads: int | None = None
    parallel: int | None = None  # slots; None: the engine's, sized to the context (engine.default_parallel)
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = MAX_BODY_BYTES
    app_path: Path = field(default_factory=default_app_path)
    limits: RunLimits = field(default_factory=RunLimits)
    embedding_model: ResolvedModel | None = None  # loaded beside the chat model as EMBEDDING_GRAPH
    mounts: list[Mount] = field(default_factory=list)  # `--app` apps, on the same engine (mount.py)
    queue_max: int | None = None  # None: QUEUE_MAX_PER_SLOT per slot
    drain_s: float = DRAIN_S
    metrics_auth: bool = False  # /metrics needs the API key too
    reasoning_format: str = "auto"  # "none": the app leaves <think> text inline in content
    speculative: SpecOptions = field(default_factory=SpecOptions)  # drafts: `serve --spec-ngram`, `--draft-model`


def is_anthropic_route(path: str) -> bool:
    return path == ANTHROPIC_ROUTE or path.startswith(ANTHROPIC_ROUTE + "/")


# The host's own failures by kind: (OpenAI error type, Anthropic error type).
_ERROR_TYPES = {
    "authentication": ("authentication_error", "authentication_error"),
    "overloaded": ("server_error", "overloaded_error"),
    "permission": ("permission_error", "permission_error"),
    "server": ("server_error", "api_error"),
}


def _error_body(path: str, message: str, kind: str, code: str | None) -> dict[str, object]:
    openai_type, anthropic_type = _ERROR_TYPES[kind]
    if is_anthropic_route(path):
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


def host_error(path: str, status: int, message: str, *, kind: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    """An error the host answers itself (not the app), in the shape the route's clients
    read: Anthropic's on /v1/messages, OpenAI's elsewhere."""
    return JSONResponse(_error_body(path, message, kind, code), status_code=status, headers=headers)


def stream_error_event(path: str, message: str, *, kind: str = "server") -> bytes:
    """The last event of a stream that the host ends: an OpenAI error chunk then [DONE], or
    Anthropic's `error` event."""
    body = json.dumps(_error_body(path, message, kind, None))
    if is_anthropic_route(path):
        return f"event: error\ndata: {body}\n\n".encode()
    return f"data: {body}\n\ndata: [DONE]\n\n".encode()


class _Flight:
    """One request the host is serving: what it takes to end it early."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ended: asyncio.Future[None] = loop.create_future()  # set when the server ends it
        self.chunks: asyncio.Queue[object] = asyncio.Queue()

    def end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)
            self.chunks.put_nowait(_ENDED)


def model_capabilities(resolved: ResolvedModel, model: Model) -> list[str]:
    """What /v1/models says the model can do: its catalog entry's capabilities (by name, or
    by the catalog file it was loaded from), else what its GGUF metadata shows."""
    return catalog.capabilities_of(resolved.model_id) or catalog.capabilities_of(str(resolved.path), model.metadata)


class ServerState:
    """The model's life: loading, ready or failed (loaded on a thread so that /health can
    answer 503 meanwhile); the requests in flight; draining at shutdown. The counters are
    touched on the event loop's thread only."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.registry = GraphRegistry()
        self.runtime: Runtime | None = None
        self.app: App | None = None
        self.mounted: dict[str, App] = {}  # by route
        self.model: Model | None = None
        self.embedding: Model | None = None
        self.error: LlamaEdgeError | None = None
        self.ready = threading.Event()
        self.loaded_at = int(time.time())
        self.executor: ThreadPoolExecutor | None = None  # made once the slots are known
        self.in_flight = 0
        self.flights: set[_Flight] = set()
        self.draining = False
        self._drain_deadline = 0.0
        self._ended_at: float | None = None
        self.metrics = ServerMetrics(self.snapshot)
        # The app runs on worker threads, by session: close() stops them before it frees the
        # models they use (an app still in wasm when the process exits aborts it).
        self._runs_lock = threading.Condition()
        self._runs: set[tuple[NNSession, ResponseStream]] = set()

    @property
    def slots(self) -> int:
        """The chat model's decoding slots; 0 until it is loaded."""
        return self.model.parallel if self.model is not None else 0

    @property
    def queue_limit(self) -> int:
        return queue_limit(self.slots, self.config.queue_max)

    def load(self, models: ModelLoad | None = None, *, on_loaded: Callable[[ServerState], None] | None = None) -> None:
        """Load the models and compile the apps, side by side: llama.cpp lets go of the GIL
        while it reads the weights. `models`: a load of this config's models already under
        way (`launch` starts it before importing this module). `on_loaded` is called when
        loading ends, well or not, before the status says so."""
        config = self.config
        options = load_options(config.ctx_size, config.n_gpu_layers, config.threads, config.parallel,
                               config.speculative)
        if models is None:
            models = ModelLoad(config.model, options, config.embedding_model)
        assert models.options == options and models.embedding_model == config.embedding_model
        try:
            self.runtime = Runtime(self.registry, limits=config.limits)
            self.app = self.runtime.load_app(config.app_path)
            self.mounted = {m.route: self.runtime.load_app(m.path, m.policy) for m in config.mounts}
            self._check_prompt_template()
            models.wait()
            if models.error:
                raise models.error
        except LlamaEdgeError as err:
            # The models are waited for even so: the process may end next, and must not
            # while llama.cpp is reading the weights.
            models.wait()
            self.error = err
            log.error("cannot serve: %s", err)
            self._loaded(on_loaded)
            return
        assert models.model is not None
        self.model, self.embedding = models.model, models.embedding
        self.registry.register(MODEL_GRAPH, self.model)
        if self.embedding is not None:
            self.registry.register(EMBEDDING_GRAPH, self.embedding)
        # One thread per request that may be in flight: the queue bound is the thread bound.
        self.executor = ThreadPoolExecutor(max_workers=self.slots + self.queue_limit, thread_name_prefix="llamaedge-app")
        self.loaded_at = int(time.time())
        self._loaded(on_loaded)

    def _loaded(self, on_loaded: Callable[[ServerState], None] | None) -> None:
        try:
            if on_loaded:
                on_loaded(self)
        finally:
            self.ready.set()

    def _check_prompt_template(self) -> None:
        """Refuse an unknown --prompt-template at startup rather than on every request: the
        app itself lists the names it knows."""
        assert self.runtime is not None and self.app is not None
        name = self.config.model.prompt_template
        if name == "auto":
            return
        listing = self.runtime.run_command(self.app, ["list-templates"], NNSession(self.registry))
        known = listing.decode().split()
        if name not in known:
            raise UsageError(f"unknown prompt template {name!r}", hint="use one of: " + ", ".join(known))

    @property
    def status(self) -> str:
        if not self.ready.is_set():
            return "loading"
        missing_embedding = self.config.embedding_model is not None and self.embedding is None
        if self.error or self.model is None or missing_embedding:
            return "error"
        return "draining" if self.draining else "ok"

    def app_env(self) -> dict[str, str]:
        assert self.model is not None
        env = {
            "LLAMAEDGE_MODEL_ID": self.config.model.model_id,
            "LLAMAEDGE_MODEL_GRAPH": MODEL_GRAPH,
            "LLAMAEDGE_MODEL_CREATED": str(self.loaded_at),
            "LLAMAEDGE_PROMPT_TEMPLATE": self.config.model.prompt_template,
            "LLAMAEDGE_CTX_SIZE": str(self.model.n_ctx),
            "LLAMAEDGE_PARALLEL": str(self.model.parallel),
            "LLAMAEDGE_MODEL_CAPABILITIES": ",".join(model_capabilities(self.config.model, self.model)),
            "LLAMAEDGE_MAX_BODY_BYTES": str(self.config.max_body_bytes),
            "LLAMAEDGE_REASONING_FORMAT": self.config.reasoning_format,
        }
        if self.embedding is not None and self.config.embedding_model is not None:
            env["LLAMAEDGE_EMBEDDING_MODEL_ID"] = self.config.embedding_model.model_id
            env["LLAMAEDGE_EMBEDDING_GRAPH"] = EMBEDDING_GRAPH
            env["LLAMAEDGE_EMBEDDING_CTX_SIZE"] = str(self.embedding.n_ctx)
            env["LLAMAEDGE_EMBEDDING_MODEL_CAPABILITIES"] = ",".join(
                model_capabilities(self.config.embedding_model, self.embedding))
        return env

    def snapshot(self) -> HostSnapshot:
        models = []
        for resolved, model, graph in ((self.config.model, self.model, MODEL_GRAPH),
                                       (self.config.embedding_model, self.embedding, EMBEDDING_GRAPH)):
            if resolved is not None and model is not None:
                stats = getattr(model, "stats", None)  # the engine's EngineStats, where it has them
                models.append(ModelSnapshot(resolved.model_id, graph, model.load_s, stats() if callable(stats) else None,
                                            getattr(model, "n_tokens_decoded", None)))
        return HostSnapshot(self.in_flight, self.slots, self.queue_limit, self.draining, models)

    def admit(self) -> str | None:
        """Take a place for a new request, or say why there is none."""
        if self.draining:
            return "draining"
        if self.in_flight >= self.slots + self.queue_limit:
            return "queue_full"
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1

    # -- shutdown --------------------------------------------------------------------------

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            self._drain_deadline = time.monotonic() + self.config.drain_s
            log.warning("shutting down: %d request(s) in flight get up to %gs to finish (signal again to stop now)",
                        self.in_flight, self.config.drain_s)

    def end_flights(self) -> None:
        if self._ended_at is None:
            self._ended_at = time.monotonic()
            if self.flights:
                log.warning("ending %d request(s) still in flight", len(self.flights))
            for flight in list(self.flights):
                flight.end()

    def drained(self) -> bool:
        """Called while draining, on the loop's thread: whether the server may stop now.
        Ends what is still in flight once the drain time is up."""
        if self.in_flight == 0:
            return True
        now = time.monotonic()
        if now >= self._drain_deadline:
            self.end_flights()
        return self._ended_at is not None and now >= self._ended_at + ENDED_FLUSH_S

    @contextmanager
    def app_run(self, session: NNSession, stream: ResponseStream) -> Iterator[None]:
        """Bracket one app run on a worker thread, so that close() can stop it."""
        run = (session, stream)
        with self._runs_lock:
            self._runs.add(run)
        try:
            yield
        finally:
            with self._runs_lock:
                self._runs.discard(run)
                self._runs_lock.notify_all()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        with self._runs_lock:
            for session, stream in self._runs:
                stream.close()  # its writes fail now (the event loop is gone)
                session.cancel()  # and its next WASI-NN call, so the app ends
            stopped = self._runs_lock.wait_for(lambda: not self._runs, timeout=APP_STOP_WAIT_S)
        if self.runtime:
            self.runtime.close()
        if not stopped:
            # Freeing a model under a running app would crash; the process is ending anyway.
            log.warning("%d app run(s) did not stop within %gs; leaving the models to the exit",
                        len(self._runs), APP_STOP_WAIT_S)
            return
        for model in (self.model, self.embedding):
            if model:
                model.close()


class APIKeyMiddleware:
    """With a key set, every /v1 route (and /metrics with --metrics-auth, and `routes` with
    what is under them: the mounted apps) needs `Authorization: Bearer <key>` or, as
    Anthropic's clients send it, `x-api-key: <key>`."""

    def __init__(self, app: ASGIApp, api_key: str | None, metrics_auth: bool = False,
                 routes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.api_key = api_key
        self.metrics_auth = metrics_auth
        self.routes = routes

    def _guarded(self, path: str) -> bool:
        return (path.startswith("/v1") or (self.metrics_auth and path == "/metrics")
                or any(path == route or path.startswith(route + "/") for route in self.routes))

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        assert self.api_key is not None
        expected = self.api_key.encode()
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("latin-1"), expected):
            return True
        x_api_key = headers.get(b"x-api-key")
        return x_api_key is not None and hmac.compare_digest(x_api_key.strip(), expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.api_key and scope["type"] == "http" and self._guarded(scope["path"]):
            if not self._authorized(dict(scope["headers"])):
                response = host_error(
                    scope["path"], 401,
                    "Missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                    kind="authentication", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    """At most `limit` bytes: a larger body arrives cut and the app answers 413."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) >= limit:
            return bytes(body[:limit])
    return bytes(body)


def _refusal(state: ServerState, path: str, reason: str) -> Response:
    state.metrics.rejected.labels(reason).inc()
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if reason == "draining":
        return host_error(path, 503, "The server is shutting down; send the request again (to another instance).",
                          kind="overloaded", code="server_shutting_down", headers=retry)
    limit = state.slots + state.queue_limit
    return host_error(path, 503, f"The server is at capacity ({limit} requests in flight); try again shortly.",
                      kind="overloaded", code="server_overloaded", headers=retry)


def wagi_endpoint(state: ServerState, app: Callable[[], App | None], *,
                  route: str = "") -> Callable[[Request], Awaitable[Response]]:
    """The handler that runs `app()` for each request (WAGI), once the model is ready.
    `route`: where a mounted app is mounted (its SCRIPT_NAME; PATH_INFO is the rest)."""
    config = state.config

    async def endpoint(request: Request) -> Response:
        status, path = state.status, request.url.path
        if status == "loading":
            return host_error(path, 503, "The model is still loading; try again shortly.", kind="overloaded",
                              code="model_not_ready", headers={"Retry-After": "2"})
        if status == "error":
            return host_error(path, 500, f"The model failed to load: {state.error}", kind="server",
                              code="model_load_failed")
        refused = state.admit()
        if refused:
            return _refusal(state, path, refused)
        admitted = True
        try:
            wasm_app = app()
            assert state.runtime is not None and wasm_app is not None
            try:
                body = await _read_body(request, config.max_body_bytes + 1)
            except ClientDisconnect:
                return Response(status_code=499)
            declared = request.headers.get("content-length", "")
            content_length = int(declared) if declared.isdigit() else len(body)
            server = request.scope.get("server") or ("127.0.0.1", config.port)
            wagi_request = WagiRequest(
                method=request.method,
                path=path[len(route):],
                query=request.url.query,
                # The key stays with the host, as Authorization does (wagi withholds that one).
                headers=[(k, v) for k, v in request.headers.items() if k.lower() != "x-api-key"],
                body=body,
                content_length=max(content_length, len(body)),
                server_name=str(server[0]),
                server_port=int(server[1] or 0),
                script_name=route,
            )
            admitted = False  # from here _run_app releases the place
            return await _run_app(state, wasm_app, wagi_request, request.receive)
        finally:
            if admitted:
                state.release()

    return endpoint


def create_app(state: ServerState, *, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    config = state.config

    async def health(request: Request) -> Response:
        status = state.status
        body = {"status": status, "model": config.model.model_id}
        if config.embedding_model is not None:
            body["embedding_model"] = config.embedding_model.model_id
        if state.error:
            body["error"] = str(state.error)
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    async def metrics(request: Request) -> Response:
        text, content_type = state.metrics.exposition(request.headers.get("accept", ""))
        return Response(text, media_type=content_type)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/{path:path}", wagi_endpoint(state, lambda: state.app), methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    routes += extra_routes or []
    app_name = config.app_path.stem
    middleware = [
        Middleware(MetricsMiddleware, metrics=state.metrics, app_name=app_name),
        Middleware(APIKeyMiddleware, api_key=config.api_key, metrics_auth=config.metrics_auth,
                   routes=(APPS_ROUTE, *(m.route for m in config.mounts))),
    ]
    if config.cors_origins:
        middleware.insert(1, Middleware(
            CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"], allow_headers=["*"]))
    return Starlette(routes=routes, middleware=middleware)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _AppResponse(StreamingResponse):
    """A streamed app response that runs `on_close` however it ends: finished, the client
    gone, or cancelled before its first chunk."""

    def __init__(self, content: AsyncIterator[bytes], status_code: int, on_close: Callable[[], None]) -> None:
        super().__init__(content, status_code=status_code)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _run_app(state: ServerState, app: App, wagi_request: WagiRequest, receive: Receive) -> Response:
    """Run the app on a worker thread. The place `admit` took is released when the response
    ends, however it ends."""
    loop = asyncio.get_running_loop()
    flight = _Flight(loop)
    chunks = flight.chunks
    head: asyncio.Future[tuple[int, list[tuple[str, str]]]] = loop.create_future()

    def on_head(status: int, headers: list[tuple[str, str]]) -> None:
        loop.call_soon_threadsafe(lambda: head.done() or head.set_result((status, headers)))

    def on_chunk(data: bytes) -> None:
        loop.call_soon_threadsafe(chunks.put_nowait, data)

    stream = ResponseStream(on_head, on_chunk)
    session = NNSession(state.registry)
    failure: list[str] = []
    breach: list[PolicyBreach] = []
    closed = False

    def close() -> None:
        # Stop generating now (a no-op when the app is done), and give the place back.
        nonlocal closed
        if not closed:
            closed = True
            stream.close()
            session.cancel()
            state.flights.discard(flight)
            state.release()

    def work() -> None:
        try:
            with state.app_run(session, stream):
                code = run_wagi(state.runtime, app, wagi_request, state.app_env(), stream, session)
            if code != 0:
                failure.append(f"the app exited with code {code}")
        except PolicyBreach as err:
            breach.append(err)
            failure.append(str(err))
        except AppError as err:
            failure.append(str(err))
        except Exception as exc:  # the request fails; the server goes on
            log.exception("app run failed")
            failure.append(f"internal error: {exc}")
        finally:
            if stream.error:
                failure.append(stream.error)
            loop.call_soon_threadsafe(chunks.put_nowait, _END)

    state.flights.add(flight)
    path = wagi_request.path
    try:
        done = loop.run_in_executor(state.executor, work)
        # Until the head, the client's leaving shows only on `receive`: watch it, so that
        # a long prefill stops when nobody waits for it.
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait([head, done, gone, flight.ended], return_when=asyncio.FIRST_COMPLETED)
            if not head.done() and done.done():
                await asyncio.sleep(0)  # let a head scheduled just before the end land
        finally:
            gone.cancel()
        if not head.done():
            if gone.done() and not gone.cancelled():
                log.info("%s %s: the client left before the response began", wagi_request.method, path)
                close()
                return Response(status_code=499)
            if flight.ended.done():
                close()
                return host_error(path, 503, "The server shut down before the response began; send it again.",
                                  kind="overloaded", code="server_shutting_down",
                                  headers={"Retry-After": str(RETRY_AFTER_S)})
            message = "; ".join(failure) or "the app ended without a response"
            log.error("%s %s failed: %s", wagi_request.method, wagi_request.script_name + path, message)
            close()
            if breach:
                return host_error(path, breach[0].status, f"The request failed: {message}",
                                  kind=breach[0].kind, code=breach[0].code)
            return host_error(path, 500, f"The request failed: {message}", kind="server")
    except BaseException:
        close()
        raise
    status, headers = head.result()
    event_stream = any(k.lower() == "content-type" and "text/event-stream" in v for k, v in headers)

    async def body() -> AsyncIterator[bytes]:
        while (chunk := await chunks.get()) is not _END:
            if chunk is _ENDED:
                if event_stream:
                    yield stream_error_event(path, "The server is shutting down; the response was cut short.",
                                             kind="overloaded")
                return
            yield chunk  # type: ignore[misc]
            stream.taken()  # sent on (uvicorn waits while the socket is full): the app may write again
        if failure:
            log.error("%s %s failed mid-response: %s", wagi_request.method, path, "; ".join(failure))
            if event_stream:
                yield stream_error_event(path, "; ".join(failure))

    response = _AppResponse(body(), status, close)
    response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if event_stream:
        response.raw_headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
    return response


def webui_routes_or_none() -> list[BaseRoute]:
    try:
        from llamaedge.webui import webui_routes
    except ImportError:
        return []
    return webui_routes()


def _draining_server(state: ServerState, config: object) -> Any:
    """A uvicorn server whose first SIGTERM or Ctrl-C drains (docs/operations.md) and whose
    second stops at once; either way the process exits 0."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        stop_now = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Not uvicorn's: it re-raises the signal after shutting down, so the process
            # would die of it instead of exiting 0. A signal handler only sets flags; the
            # loop acts on them in on_tick.
            if state.draining or not self.started:
                self.stop_now = True
            state.begin_drain()

        async def on_tick(self, counter: int) -> bool:
            if self.stop_now and not self.should_exit:
                state.end_flights()  # their last events go out while uvicorn shuts down
                self.should_exit = True
            elif state.draining and not self.should_exit and state.drained():
                self.should_exit = True
            return await super().on_tick(counter)

    return DrainingServer(config)  # type: ignore[arg-type]


def listening_socket(uvicorn_config: Any) -> socket.socket:
    """The server's socket, with the options its connections inherit: a small send buffer (a
    client that does not read holds little in the kernel) and no Nagle delay. asyncio turns
    Nagle off only on sockets made with protocol IPPROTO_TCP, and uvicorn's bound socket says
    protocol 0; with Nagle on, a response written in pieces (headers, then body; an SSE event
    each) waits for the client's delayed ACK, 40 ms a request on a kept-alive connection."""
    listener = uvicorn_config.bind_socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER_BYTES)
    if listener.family in (socket.AF_INET, socket.AF_INET6):
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener


def serve(config: ServeConfig, *, on_ready: Callable[[str], None] | None = None,
          on_loaded: Callable[[ServerState], None] | None = None, models: ModelLoad | None = None) -> int:
    """Run the server until SIGTERM or Ctrl-C, then drain. The model loads in the background;
    `on_loaded` is called when loading ends (well or not), `on_ready(url)` once the server
    answers. `models`: their load, if it has begun (see ServerState.load)."""
    state = ServerState(config)
    # The models load and the apps compile while the server is set up and starts.
    threading.Thread(target=state.load, args=(models,), kwargs={"on_loaded": on_loaded}, name="llamaedge-load",
                     daemon=True).start()
    import uvicorn

    app = create_app(state, extra_routes=[*mount_routes(state), *webui_routes_or_none()])
    uvicorn_config = uvicorn.Config(
        app, host=config.host, port=config.port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=3,
    )
    server = _draining_server(state, uvicorn_config)
    url = f"http://{'127.0.0.1' if config.host in ('0.0.0.0', '::') else config.host}:{config.port}"

    def announce() -> None:
        state.ready.wait()
        if state.error:
            server.should_exit = True
            return
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        if on_ready and server.started:
            on_ready(url)

    threading.Thread(target=announce, name="llamaedge-announce", daemon=True).start()
    try:
        server.run(sockets=[listening_socket(uvicorn_config)])
    except SystemExit:  # uvicorn exits when it cannot start (the port was taken meanwhile)
        pass
    finally:
        state.close()
    if state.error:
        raise state.error
    if not server.started:
        raise UsageError(f"could not listen on {config.host}:{config.port}",
                         hint="is the port in use? pick another with --port")
    return 0

