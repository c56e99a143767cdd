"""Starting the server: uvicorn on a socket of our own, the models loading meanwhile, and a
first SIGTERM or Ctrl-C that drains (docs/operations.md)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from llamaedge.errors import UsageError
from llamaedge.model_load import ModelLoad
from llamaedge.runtime.wagi import SOCKET_SEND_BUFFER_BYTES
from llamaedge.server.config import ServeConfig
from llamaedge.server.routes import create_app, mounted_app_routes, webui_routes_or_none
from llamaedge.server.state import ServerState


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

    app = create_app(state, extra_routes=[*mounted_app_routes(state), *webui_routes_or_none()])
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
