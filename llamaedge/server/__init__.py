"""The HTTP server: Starlette on uvicorn. It owns transport, scheduling and the model's life;
the chat-server app owns the API. Requests under /v1 each run a fresh instance of the app
(WAGI); `/health` says whether the model is ready; `/metrics` is for Prometheus; `/` serves
the web chat. Requests beyond --parallel wait, up to --queue-max, then get 503 at once; on
SIGTERM the server drains (docs/operations.md).

    HTTP request -> app instance (wasm) -> WASI-NN host calls -> engine -> chunks to the client

One module per job, each importing only those above it:

    config      ServeConfig: what `serve` is asked to do; the graph names of its models
    api_errors  the host's own errors, in OpenAI's shape or (on /v1/messages) Anthropic's
    state       ServerState: the model's life (loading, ready, failed), admission, draining
    auth        the API key (the Host and Origin guard is llamaedge/hostguard.py)
    bridge      a request to a run of the wasm app (WAGI), its output to the HTTP response
    routes      the Starlette app: the host's routes, /v1, the mounted apps, the middleware
    serving     serve(): uvicorn, its socket, the drain on SIGTERM
"""

from llamaedge.server.bridge import wagi_endpoint
from llamaedge.server.config import EMBEDDING_GRAPH, MODEL_GRAPH, ServeConfig, default_app_path
from llamaedge.server.routes import HIDDEN_LOAD_ERROR, create_app, mounted_app_routes, webui_routes_or_none
from llamaedge.server.serving import listening_socket, serve
from llamaedge.server.state import ServerState

__all__ = [
    "EMBEDDING_GRAPH", "HIDDEN_LOAD_ERROR", "MODEL_GRAPH", "ServeConfig", "ServerState", "create_app", "default_app_path",
    "listening_socket", "mounted_app_routes", "serve", "wagi_endpoint", "webui_routes_or_none",
]
