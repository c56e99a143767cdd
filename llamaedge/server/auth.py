"""The API key: with `--api-key`, the routes that reach the model need it."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from llamaedge.server.api_errors import host_error


def has_api_key(scope: Scope, api_key: str) -> bool:
    """Whether a request carries `api_key`: `Authorization: Bearer <key>` or `x-api-key: <key>`."""
    headers = dict(scope["headers"])
    expected = api_key.encode()
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("latin-1"), expected):
        return True
    x_api_key = headers.get(b"x-api-key")
    return x_api_key is not None and hmac.compare_digest(x_api_key.strip(), expected)


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.api_key and scope["type"] == "http" and self._guarded(scope["path"]):
            if not has_api_key(scope, self.api_key):
                response = host_error(
                    scope["path"], 401,
                    "Missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                    kind="authentication", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
