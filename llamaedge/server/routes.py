"""The Starlette app: the host's own routes (`/health`, `/metrics`), `/v1` to the chat app,
the mounted apps and the web chat beside them, and the middleware around them all (metrics,
the Host and Origin guard, CORS, the API key)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llamaedge.hostguard import HostGuard, allowed_hosts
from llamaedge.library import library_routes
from llamaedge.metrics import MetricsMiddleware
from llamaedge.mount import APPS_ROUTE, MCP_ROUTE, TOOLS_ROUTE, mount_routes
from llamaedge.server.api_errors import host_error
from llamaedge.server.auth import APIKeyMiddleware, has_api_key
from llamaedge.server.bridge import Admitted, not_ready_error, wagi_endpoint
from llamaedge.server.state import ServerState

RERANK_ROUTE = "/rerank"  # the app's /v1/rerank, guarded too
MODELS_ROUTE = "/models"  # the library's routes outside /v1 (llama-server's router names), guarded too


# /health's "error" for a request without the key, when a key is set.
HIDDEN_LOAD_ERROR = "the model failed to load; send the API key to see why"


def create_app(state: ServerState, *, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    config = state.config

    async def health(request: Request) -> Response:
        status = state.status
        body: dict[str, object] = {"status": status}
        if config.model is not None:
            body["model"] = config.model.model_id
        if config.embedding_model is not None:
            body["embedding_model"] = config.embedding_model.model_id
        if state.error:
            # The text may name files and paths: with a key set, only for those who have it.
            shown = not config.api_key or has_api_key(request.scope, config.api_key)
            body["error"] = str(state.error) if shown else HIDDEN_LOAD_ERROR
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    async def metrics(request: Request) -> Response:
        text, content_type = state.metrics.exposition(request.headers.get("accept", ""))
        return Response(text, media_type=content_type)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        # The library's routes (llama-server's router names) answer before the app's /v1.
        *_once_ready(state, library_routes(state.library)),
        Route("/v1/{path:path}", wagi_endpoint(state, lambda: state.app), methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        # llama-server's rerank route outside /v1 (Jina's and Cohere's clients post there).
        Route(RERANK_ROUTE, wagi_endpoint(state, lambda: state.app, path_as="/v1/rerank"), methods=["POST"]),
    ]
    routes += extra_routes or []
    lifespan = None
    if config.tools:
        tool_routes, lifespan = _tool_routes(state)
        routes += tool_routes
    app_name = config.app_path.stem

    def refuse(path: str, message: str, code: str) -> Response:
        return host_error(path, 403, message, kind="permission", code=code)

    middleware = [
        Middleware(MetricsMiddleware, metrics=state.metrics, app_name=app_name),
        Middleware(HostGuard, hosts=allowed_hosts(config.host, config.allowed_hosts),
                   cors_origins=config.cors_origins, refuse=refuse),
        Middleware(APIKeyMiddleware, api_key=config.api_key, metrics_auth=config.metrics_auth,
                   routes=(APPS_ROUTE, MODELS_ROUTE, RERANK_ROUTE, TOOLS_ROUTE, MCP_ROUTE,
                           *(m.route for m in config.mounts))),
    ]
    if config.cors_origins:
        middleware.insert(2, Middleware(
            CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"], allow_headers=["*"]))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def _tool_routes(state: ServerState) -> tuple[list[BaseRoute], Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]]:
    """`GET /tools` (the manifests) and `/mcp` (the MCP SDK's streamable HTTP app), with the
    lifespan the MCP session manager runs in."""
    from llamaedge.server.mcp_endpoint import mcp_app  # the SDK loads only for a server with tools

    manifests = state.config.tools
    endpoint, running = mcp_app(manifests, lambda: state.toolbox, lambda: state.executor)

    async def tools(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [m.summary() for m in manifests]})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running():
            yield

    return [Route(TOOLS_ROUTE, tools, methods=["GET"]),
            Route(MCP_ROUTE, Admitted(state, endpoint), methods=["GET", "POST", "DELETE"])], lifespan


def _once_ready(state: ServerState, routes: list[BaseRoute]) -> list[BaseRoute]:
    """The library's /v1 routes answer as the app's do while the start model loads (503) or
    after it failed (500): a client that lists the models before it chats sees one state."""
    gated: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and route.path.startswith("/v1/"):
            endpoint = route.endpoint

            async def wait_for_start(request: Request, endpoint: Callable[[Request], Awaitable[Response]] = endpoint
                                     ) -> Response:
                return not_ready_error(state, request.url.path) or await endpoint(request)

            route = Route(route.path, wait_for_start, methods=list(route.methods or ()))
        gated.append(route)
    return gated


def mounted_app_routes(state: ServerState) -> list[BaseRoute]:
    """The routes of the `--app` apps and `GET /apps` (mount.py), each run by the bridge."""
    return mount_routes(state.config.mounts,
                        lambda route: wagi_endpoint(state, lambda: state.mounted.get(route), route=route))


def webui_routes_or_none() -> list[BaseRoute]:
    try:
        from llamaedge.webui import webui_routes
    except ImportError:
        return []
    return webui_routes()
