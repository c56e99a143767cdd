"""The errors the host answers itself (not the app), in the shape each route's clients read:
Anthropic's on /v1/messages, OpenAI's elsewhere."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

ANTHROPIC_ROUTE = "/v1/messages"  # its requests get the host's errors in Anthropic's shape


def is_anthropic_route(path: str) -> bool:
    return path == ANTHROPIC_ROUTE or path.startswith(ANTHROPIC_ROUTE + "/")


# The host's own failures by kind: (OpenAI error type, Anthropic error type).
_ERROR_TYPES = {
    "authentication": ("authentication_error", "authentication_error"),
    "invalid_request": ("invalid_request_error", "invalid_request_error"),
    "not_found": ("invalid_request_error", "not_found_error"),
    "overloaded": ("server_error", "overloaded_error"),
    "permission": ("permission_error", "permission_error"),
    "server": ("server_error", "api_error"),
}


def _error_body(path: str, message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, object]:
    openai_type, anthropic_type = _ERROR_TYPES[kind]
    if is_anthropic_route(path):
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    return {"error": {"message": message, "type": openai_type, "param": param, "code": code}}


def host_error(path: str, status: int, message: str, *, kind: str, code: str | None = None,
               headers: dict[str, str] | None = None, param: str | None = None) -> JSONResponse:
    """An error the host answers itself (not the app), in the shape the route's clients
    read: Anthropic's on /v1/messages, OpenAI's elsewhere (with `param`, the field at fault)."""
    return JSONResponse(_error_body(path, message, kind, code, param), status_code=status, headers=headers)


def stream_error_event(path: str, message: str, *, kind: str = "server") -> bytes:
    """The last event of a stream that the host ends: an OpenAI error chunk then [DONE], or
    Anthropic's `error` event."""
    body = json.dumps(_error_body(path, message, kind, None))
    if is_anthropic_route(path):
        return f"event: error\ndata: {body}\n\n".encode()
    return f"data: {body}\n\ndata: [DONE]\n\n".encode()
