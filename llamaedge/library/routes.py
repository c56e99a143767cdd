"""The library's HTTP API, in llama-server's router names and shapes: `library_routes(library)`
gives the Starlette routes. The server mounts them (with its API key over all of them) before
its catch-all `/v1/` route to the app.

    GET  /v1/models, /models       every member (`?reload=1` lists the models folder again)
    GET  /v1/models/{name}         one member, or 404
    POST /models/load   {"model"}  start loading it                -> {"success": true}
    POST /models/unload {"model"}  unload it (now, or when its requests end); cancel its download
    POST /models/pull   {"model"}  start downloading it (POST /models too, as llama-server)
    GET  /models/sse               the events (events.py) as server-sent events

Errors are OpenAI's error object; `error_response` maps each LibraryError kind to its status
once, for these routes and for the server's own use.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from llamaedge.library.errors import (LibraryClosed, LibraryError, LoadFailed, ModelDownloading, ModelStateError,
                                      ModelTooLarge, NoRoom, UnknownModel)
from llamaedge.library.library import Library
from llamaedge.library.state import MemberInfo
from llamaedge.library.types import Status

HTTP_STATUS: dict[type[LibraryError], int] = {
    UnknownModel: 404,
    ModelStateError: 400,
    ModelTooLarge: 400,
    NoRoom: 503,
    ModelDownloading: 503,
    LoadFailed: 500,
    LibraryClosed: 503,
}
# A body of these routes is one small JSON object.
BODY_MAX_BYTES = 64 * 1024
# An idle event stream sends a comment this often: proxies keep it open, and a client that has
# gone is noticed.
SSE_PING_S = 15.0


def error_body(status: int, message: str, *, code: str | None, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def status_of(err: LibraryError) -> int:
    """The HTTP status a library error is answered with."""
    return next((s for kind, s in HTTP_STATUS.items() if isinstance(err, kind)), 500)


def message_of(err: LibraryError) -> str:
    """The error message a client reads: the error's, with its hint."""
    text = str(err)
    return text[:1].upper() + text[1:] + (f"; {err.hint}" if err.hint else "")


def error_response(err: LibraryError) -> JSONResponse:
    """The response for `err`: its status, OpenAI's error object, Retry-After on a refusal
    worth retrying."""
    status = status_of(err)
    message = message_of(err)
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s is not None else None
    param = "model" if status == 404 else None
    return JSONResponse(error_body(status, message, code=err.code, param=param), status_code=status, headers=headers)


def _bad_request(message: str, code: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(400, message, code=code, param=param), status_code=400)


def model_object(info: MemberInfo) -> dict[str, Any]:
    """A member as /v1/models lists it: OpenAI's model object (id, object, created, owned_by),
    the fields the chat app's /v1/models has (capabilities, context_length), and llama-server's
    router fields (status, architecture), then ours (size, memory, fits, runtime)."""
    status: dict[str, Any] = {"value": info.status.value}
    if info.status is Status.FAILED:
        status.update(failed=True, reason=info.failure)
    if info.progress is not None:
        status["progress"] = info.progress
    if info.unloading:
        status["unloading"] = True
    body: dict[str, Any] = {
        "id": info.name, "object": "model", "created": info.created, "owned_by": "llamaedge",
        "capabilities": info.capabilities,
    }
    if info.context_length is not None:
        body["context_length"] = info.context_length
    body.update(status=status, source=info.source, downloaded=info.downloaded,
                architecture={"input_modalities": ["text", "image"] if "vision" in info.capabilities else ["text"],
                              "output_modalities": ["text"]})
    if info.size_bytes is not None:
        body["size"] = info.size_bytes
    if info.need is not None:
        body["memory"] = {"ram_bytes": info.need.ram_bytes, "vram_bytes": info.need.vram_bytes}
        body["fits"] = info.fits
    if info.status is Status.LOADED:
        body["runtime"] = {"parallel": info.parallel, "requests_running": info.requests_running,
                           "requests_waiting": info.requests_waiting,
                           "idle_s": round(info.idle_s, 1) if info.idle_s is not None else None,
                           "load_s": round(info.load_s, 3) if info.load_s is not None else None}
    return body


async def _model_name(request: Request) -> str | Response:
    """The body's "model", or the 400 that says what is wrong with the body."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > BODY_MAX_BYTES:
                return _bad_request(f"The body is larger than {BODY_MAX_BYTES} bytes.", "body_too_large")
    except ClientDisconnect:
        return Response(status_code=499)
    try:
        data = json.loads(body)
    except ValueError:
        return _bad_request('The body is not valid JSON: send {"model": "NAME"}.', "invalid_json")
    name = data.get("model") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        return _bad_request('The body must be a JSON object with "model": the name of a model (GET /models lists them).',
                            "invalid_request", param="model")
    return name


def _action(act: Callable[[str], None]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        name = await _model_name(request)
        if isinstance(name, Response):
            return name
        try:
            await run_in_threadpool(act, name)
        except LibraryError as err:
            return error_response(err)
        return JSONResponse({"success": True})

    return endpoint


def library_routes(library: Library[Any]) -> list[BaseRoute]:
    async def list_models(request: Request) -> Response:
        if request.query_params.get("reload"):
            await run_in_threadpool(library.rescan)
        members = await run_in_threadpool(library.members)
        return JSONResponse({"object": "list", "data": [model_object(m) for m in members]})

    async def get_model(request: Request) -> Response:
        try:
            info = await run_in_threadpool(library.info, request.path_params["name"])
        except LibraryError as err:
            return error_response(err)
        return JSONResponse(model_object(info))

    async def events(request: Request) -> Response:
        subscription = library.subscribe(asyncio.get_running_loop())

        async def stream() -> AsyncIterator[bytes]:
            try:
                while True:
                    event = await subscription.next(SSE_PING_S)
                    if event is not None:
                        yield f"data: {json.dumps(event.to_json())}\n\n".encode()
                    elif subscription.closed:
                        return
                    else:
                        yield b": ping\n\n"
            finally:
                subscription.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    pull = _action(library.pull)
    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/models", pull, methods=["POST"]),
        Route("/v1/models/{name:path}", get_model, methods=["GET"]),
        Route("/models/load", _action(library.load), methods=["POST"]),
        Route("/models/unload", _action(library.unload), methods=["POST"]),
        Route("/models/pull", pull, methods=["POST"]),
        Route("/models/sse", events, methods=["GET"]),
    ]
