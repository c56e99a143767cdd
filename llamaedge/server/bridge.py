"""The bridge from a wasm app to the HTTP response: a request is admitted (or refused with
503), its body read, the app run on a worker thread (WAGI), and what the app writes streamed
to the client as it writes it. However the response ends (finished, the client gone, the
server shutting down), the app's generation stops and the request's place is given back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from llamaedge.errors import AppError
from llamaedge.library import LibraryError
from llamaedge.metrics import ROUTE_UNCONFIRMED
from llamaedge.runtime import App, NNSession, PolicyBreach, ResponseStream, WagiRequest, run_wagi
from llamaedge.server import image_urls, loop_apis, served, tool_loop
from llamaedge.server.api_errors import host_error, stream_error_event
from llamaedge.server.state import ENDED, Flight, ServerState

log = logging.getLogger("llamaedge.server")

RETRY_AFTER_S = 1  # what a refused client is told to wait
LOADING_RETRY_AFTER_S = 2  # what a client is told to wait while the model loads
_END = object()  # put in a flight's chunks when the app is done


async def _read_body(request: Request, limit: int) -> bytes:
    """At most `limit` bytes: a larger body arrives cut and the app answers 413."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) >= limit:
            return bytes(body[:limit])
    return bytes(body)


def capacity_refusal(state: ServerState, path: str, reason: str) -> Response:
    """The 503 of a request `admit` found no place for (`reason`: draining or queue_full)."""
    state.metrics.rejected.labels(reason).inc()
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if reason == "draining":
        return host_error(path, 503, "The server is shutting down; send the request again (to another instance).",
                          kind="overloaded", code="server_shutting_down", headers=retry)
    limit = state.slots + state.queue_limit
    return host_error(path, 503, f"The server is at capacity ({limit} requests in flight); try again shortly.",
                      kind="overloaded", code="server_overloaded", headers=retry)


def not_ready_error(state: ServerState, path: str) -> Response | None:
    """The answer of an API route while the start model loads (503) or after it failed to
    load (500); None once it is ready."""
    status = state.status
    if status == "loading":
        return host_error(path, 503, "The model is still loading; try again shortly.", kind="overloaded",
                          code="model_not_ready", headers={"Retry-After": str(LOADING_RETRY_AFTER_S)})
    if status == "error":
        return host_error(path, 500, f"The model failed to load: {state.error}", kind="server",
                          code="model_load_failed")
    return None


def wagi_endpoint(state: ServerState, app: Callable[[], App | None], *,
                  route: str = "", path_as: str | None = None) -> Callable[[Request], Awaitable[Response]]:
    """The handler that runs `app()` for each request (WAGI), once the model is ready.
    `route`: where a mounted app is mounted (its SCRIPT_NAME; PATH_INFO is the rest).
    `path_as`: the PATH_INFO the app sees instead of the request's (an alias of a /v1 route)."""
    config = state.config

    async def endpoint(request: Request, started: list[bool]) -> Response:
        path = request.url.path
        not_ready = not_ready_error(state, path)
        if not_ready is not None:
            return not_ready
        refused = state.admit()
        if refused:
            return capacity_refusal(state, path, refused)
        admitted = True
        try:
            wasm_app = app()
            assert state.runtime is not None and wasm_app is not None
            try:
                body = await _read_body(request, config.max_body_bytes + 1)
            except ClientDisconnect:
                return Response(status_code=499)
            # The chat app's requests run on the model their body names: a library member
            # loads (on the worker thread) if it must; what cannot be had is answered now.
            member: str | None = None
            if not route and request.method == "POST":
                try:
                    member = state.route_model(served.requested_model(body))
                    if member is not None:
                        state.library.check(member)
                except LibraryError as err:
                    return served.refusal(path, err)
            # --allow-image-urls: the images fetched into the body, within the body limit
            # (a body over it already is the app's 413).
            if (not route and request.method == "POST" and config.allow_image_urls
                    and len(body) <= config.max_body_bytes and image_urls.has_image_urls(body)):
                try:
                    body = await image_urls.inline_image_urls(body)
                except image_urls.ImageUrlError as err:
                    return host_error(path, 400, f"{err.param}: {err}", kind="invalid_request",
                                      code="image_url_not_fetched", param=err.param)
            loop_plan: tool_loop.LoopPlan | None = None
            loop_api = loop_apis.APIS.get(path) if not route and request.method == "POST" else None
            if loop_api is not None:
                try:
                    loop_plan = tool_loop.plan(body, state.toolbox, loop_api)
                except tool_loop.LoopRequestError as err:
                    return host_error(path, 400, str(err), kind="invalid_request", code=f"invalid_{err.param}")
            declared = request.headers.get("content-length", "")
            content_length = int(declared) if declared.isdigit() else len(body)
            server = request.scope.get("server") or ("127.0.0.1", config.port)
            wagi_request = WagiRequest(
                method=request.method,
                path=path_as if path_as is not None else path[len(route):],
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
            started.append(True)
            return await _run_app(state, wasm_app, wagi_request, request.receive, member, loop_plan)
        finally:
            if admitted:
                state.release()

    async def answered(request: Request) -> Response:
        started: list[bool] = []
        response = await endpoint(request, started)
        if not started:  # the host answered before the app ran: nobody confirmed the path is a route
            request.scope[ROUTE_UNCONFIRMED] = True
        return response

    return answered


class Admitted:
    """An ASGI app (the MCP SDK's, whose POSTs run tools) behind the admission the wasm apps
    have: each POST takes a place among the slots and the queue for as long as it runs, and is
    a 503 when there is none, so a flood of calls is refused rather than given threads without
    bound. Its other methods (a stateless server answers them at once) are let through.
    A class, not a function: Starlette's Route takes a function for a request handler."""

    def __init__(self, state: ServerState, app: ASGIApp) -> None:
        self.state = state
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        not_ready = not_ready_error(state, path)
        refused = state.admit() if not_ready is None else None
        if not_ready is not None or refused is not None:
            answer = not_ready or capacity_refusal(state, path, refused or "")
            return await answer(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            state.release()


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


async def _run_app(state: ServerState, app: App, wagi_request: WagiRequest, receive: Receive,
                   member: str | None = None, loop_plan: tool_loop.LoopPlan | None = None) -> Response:
    """Run the app on a worker thread. The place `admit` took is released when the response
    ends, however it ends. `member`: the library model the request runs on, held (and loaded
    if need be) on the worker thread before the app starts, and let go when it ends.
    `loop_plan`: the request names server tools: the tool loop runs the app, step by step."""
    loop = asyncio.get_running_loop()
    flight = Flight(loop)
    chunks = flight.chunks
    head: asyncio.Future[tuple[int, list[tuple[str, str]]]] = loop.create_future()

    def on_head(status: int, headers: list[tuple[str, str]]) -> None:
        def set_head() -> None:
            if not head.done():
                head.set_result((status, headers))

        loop.call_soon_threadsafe(set_head)

    def on_chunk(data: bytes) -> None:
        loop.call_soon_threadsafe(chunks.put_nowait, data)

    stream = ResponseStream(on_head, on_chunk)
    graphs = state.graphs()
    session = NNSession(graphs)
    failure: list[str] = []
    breach: list[PolicyBreach] = []
    refused: list[LibraryError] = []
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
            runtime = state.runtime
            assert runtime is not None  # `app` exists, so the runtime that compiled it does
            env = state.app_env()
            if member is not None:
                try:
                    lease = state.library.acquire(member)
                except LibraryError as err:
                    refused.append(err)
                    return
                graphs.hold(member, lease)
                env = state.member_env(member, lease.model)
            with state.app_run(session, stream):
                if loop_plan is not None:
                    assert state.toolbox is not None
                    code = tool_loop.run(runtime, app, wagi_request, env, stream, session, loop_plan,
                                         state.toolbox, state.metrics)
                else:
                    # A mounted app is the first of its chain of nested calls (cycles are refused).
                    chain = (wagi_request.script_name,) if wagi_request.script_name else ()
                    code = run_wagi(runtime, app, wagi_request, env, stream, session, chain)
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
            graphs.close()  # the app is done with its models: the library may unload them
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
            waits: list[asyncio.Future[Any]] = [head, done, gone, flight.ended]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
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
            if refused:
                close()
                return served.refusal(path, refused[0])
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
            if chunk is ENDED:
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
