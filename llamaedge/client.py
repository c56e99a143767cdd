"""The command line's client of a running `llamaedge serve` (`ps`, `stop`): where the server
is, its API key, and the model library's routes (GET /v1/models, POST /models/unload, GET
/models/sse; docs/library.md).

The server is found where `serve` listens by default, or at `--host`/`--port`, or `--url`;
the defaults and the API key's environment variable are read from serve's own options, so
they have one home. Every way a request can fail becomes a `ServerError` here, at one seam
(`ServerClient._open`), as a one-line message with the fix. It uses urllib: the command line
needs no HTTP package beyond the standard library, and starts fast.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llamaedge.errors import LlamaEdgeError, UsageError

# A bound on one request's answer (the library's routes answer at once; a load or an unload
# goes on in the background). The event stream gets longer: the server sends a comment every
# 15 s (routes.SSE_PING_S) when nothing happens.
REQUEST_TIMEOUT_S = 30.0
EVENTS_READ_TIMEOUT_S = 60.0
# Bind-all addresses that `serve --host` accepts and a client cannot connect to: the client
# talks to this machine instead.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
# The status values of a model that takes memory (llama-server's names, docs/library.md).
IN_MEMORY = ("loaded", "loading")


class ServerError(LlamaEdgeError):
    """A server that cannot be reached, or that refused a request. `status` and `code` are the
    HTTP status and the OpenAI error code when it answered."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


def serve_defaults() -> argparse.Namespace:
    """`serve`'s defaults for --host, --port and --api-key (which reads LLAMAEDGE_API_KEY)."""
    from llamaedge.commands.serve import add_server_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_server_arguments(parser)
    return parser.parse_args([])


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """--url, --host, --port and --api-key, for commands that talk to a running server."""
    defaults = serve_defaults()
    parser.add_argument("--url", help="the server's address, e.g. http://10.0.0.5:8080 (instead of --host/--port)")
    parser.add_argument("--host", help=f"the server's host (default {defaults.host}, where `serve` listens)")
    parser.add_argument("--port", type=int, help=f"the server's port (default {defaults.port})")
    parser.add_argument("--api-key", default=defaults.api_key,
                        help="the key the server was started with (default: $LLAMAEDGE_API_KEY)")


def server_url(args: argparse.Namespace) -> str:
    """The base URL the arguments name: --url, or http://HOST:PORT with serve's defaults."""
    if args.url:
        if args.host or args.port is not None:
            raise UsageError("--url and --host/--port both name the server", hint="give one or the other")
        url = str(args.url).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--url {args.url} is not an http:// or https:// address",
                             hint="e.g. --url http://127.0.0.1:8080")
        return url
    defaults = serve_defaults()
    port = defaults.port if args.port is None else args.port
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a port", hint="use 1-65535")
    host = str(args.host or defaults.host)
    host = WILDCARD_HOSTS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"


def model_status(model: dict[str, Any]) -> dict[str, Any]:
    """A model object's `status`. A server from before the model library lists no status: its
    models are loaded for as long as it runs."""
    status = model.get("status")
    return status if isinstance(status, dict) else {"value": "loaded"}


def model_runtime(model: dict[str, Any]) -> dict[str, Any]:
    """A loaded model's `runtime` (parallel, requests_running, requests_waiting, idle_s,
    load_s); empty for any other, or from a server before the model library."""
    runtime = model.get("runtime")
    return runtime if isinstance(runtime, dict) else {}


def in_memory(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The models loaded or being loaded (what `ps` lists), in the server's order."""
    return [m for m in models if model_status(m).get("value") in IN_MEMORY]


class ServerClient:
    """The library's routes on one server."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url
        self.api_key = api_key

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerClient:
        return cls(server_url(args), args.api_key)

    def models(self) -> list[dict[str, Any]]:
        """GET /v1/models: every model the server has, loaded or not."""
        listing = self._json("GET", "/v1/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise self._not_llamaedge("GET /v1/models has no model list")
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def model(self, name: str) -> dict[str, Any]:
        """GET /v1/models/NAME."""
        found = self._json("GET", "/v1/models/" + urllib.parse.quote(name, safe="/"))
        if not isinstance(found, dict):
            raise self._not_llamaedge(f"GET /v1/models/{name} is not a model object")
        return found

    def unload(self, name: str) -> None:
        """POST /models/unload: unload now, or once its requests end; or cancel its download."""
        self._json("POST", "/models/unload", {"model": name})

    @contextmanager
    def events(self) -> Iterator[Iterator[dict[str, Any] | None]]:
        """GET /models/sse, open: the events from now on, each `{"model", "event", "data"}`,
        and None for each keep-alive comment (so that a reader can give up at its own
        deadline). Open it before asking for what the events will report: none is missed."""
        response = self._open("GET", "/models/sse", timeout_s=EVENTS_READ_TIMEOUT_S)

        def read() -> Iterator[dict[str, Any] | None]:
            for raw in self._guarded(response):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith(":"):
                    yield None
                elif line.startswith("data: "):
                    try:
                        event = json.loads(line[len("data: "):])
                    except ValueError as exc:
                        raise self._not_llamaedge("/models/sse sent an event that is not JSON") from exc
                    if isinstance(event, dict):
                        yield event

        try:
            yield read()
        finally:
            response.close()

    # -- the seam -----------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: object = None) -> Any:
        with self._open(method, path, body) as response:
            raw = b"".join(self._guarded(response))
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise self._not_llamaedge(f"{method} {path} did not answer JSON") from exc

    def _open(self, method: str, path: str, body: object = None, *,
              timeout_s: float = REQUEST_TIMEOUT_S) -> http.client.HTTPResponse:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout_s)
            return response
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from exc
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc

    def _guarded(self, response: http.client.HTTPResponse) -> Iterator[bytes]:
        """The response's lines, a broken connection or a silent server as a ServerError."""
        try:
            yield from response
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, reason: object) -> ServerError:
        if isinstance(reason, ConnectionRefusedError):
            return ServerError(f"no server is running at {self.url}",
                               hint="start one with `llamaedge serve`, or name yours with --url or --host/--port")
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return ServerError(f"the server at {self.url} did not answer in time",
                               hint="it may be busy: try again, or check its log")
        if isinstance(reason, socket.gaierror):
            return ServerError(f"cannot find the host of {self.url}: {reason.strerror}", hint="check --url or --host")
        return ServerError(f"cannot talk to the server at {self.url}: {reason}",
                           hint="check that it runs there (`llamaedge serve`), and --url or --host/--port")

    def _refused(self, exc: urllib.error.HTTPError) -> ServerError:
        try:
            error = json.loads(exc.read()).get("error") or {}
        except (ValueError, AttributeError, OSError, http.client.HTTPException):
            error = {}
        if not isinstance(error, dict):
            error = {"message": str(error)}
        message, code = error.get("message"), error.get("code")
        if exc.code == 401:
            if self.api_key:
                return ServerError(f"the server at {self.url} refused the API key", status=401, code=code,
                                   hint="pass the key it was started with: --api-key KEY or LLAMAEDGE_API_KEY")
            return ServerError(f"the server at {self.url} needs an API key", status=401, code=code,
                               hint="pass the key it was started with: --api-key KEY or LLAMAEDGE_API_KEY")
        text = message if isinstance(message, str) and message else f"{exc.code} {exc.reason}"
        return ServerError(f"the server at {self.url} answered {exc.code}: {text}", status=exc.code,
                           code=code if isinstance(code, str) else None)

    def _not_llamaedge(self, what: str) -> ServerError:
        return ServerError(f"the server at {self.url} does not answer as llamaedge does: {what}",
                           hint="check --url or --host/--port")
