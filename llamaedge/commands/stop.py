"""`llamaedge stop MODEL`: unload a model from a running server, as `ollama stop` does (POST
/models/unload). It waits until the server has freed the model's memory, told by the server's
events (GET /models/sse), unless requests still use the model: then the server unloads it when
they end, and stop says so. On a model being downloaded, it cancels the download."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

from llamaedge.client import ServerClient, ServerError, add_client_arguments, in_memory, model_runtime, model_status
from llamaedge.console import console

# How long stop waits for an unload to finish (freeing a model takes well under a second; a
# load under way finishes first). It waits no longer than this; the server goes on anyway.
STOP_WAIT_S = 120.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stop", help="unload a model from a running server",
        description="Unload a model from a running `llamaedge serve` and wait until its memory is free; a model "
        "still answering requests goes when they end. On a model being downloaded, cancel the download.",
    )
    parser.add_argument("model", metavar="MODEL", help="the model's name, as `llamaedge ps` lists it")
    add_client_arguments(parser)
    parser.set_defaults(func=run)


def loaded_hint(client: ServerClient) -> str:
    """Which models the server has in memory, for a message about a model it cannot stop."""
    try:
        names = [m["id"] for m in in_memory(client.models())]
    except ServerError:
        return "`llamaedge ps` lists the loaded ones"
    return f"loaded: {', '.join(names)}" if names else "no model is loaded"


def explained(err: ServerError, client: ServerClient, name: str) -> ServerError:
    """The server's refusal of an unload, said for the command line."""
    if err.code == "model_not_found":
        return ServerError(f"the server at {client.url} has no model '{name}'", hint=loaded_hint(client))
    if err.code == "model_not_loaded":
        return ServerError(f"'{name}' is not loaded on {client.url}", hint=loaded_hint(client))
    if err.status in (404, 405):
        return ServerError(f"the server at {client.url} has no model library to unload from",
                           hint="it predates `llamaedge ps`/`stop`, or is not llamaedge: stop the server to free its model")
    return err


def wait_unloaded(events: Iterator[dict[str, Any] | None], name: str, deadline: float) -> dict[str, Any]:
    """The data of the status change that ends `name`'s time in memory (or its download)."""
    for event in events:
        if event is not None and event.get("model") == name and event.get("event") == "status_change":
            data = event.get("data") or {}
            if data.get("status") in ("unloaded", "failed"):
                return data
        if time.monotonic() > deadline:
            raise ServerError(f"'{name}' is still being unloaded after {STOP_WAIT_S:g} s",
                              hint="the server goes on unloading it; `llamaedge ps` shows when it is gone")
    raise ServerError(f"the server ended its event stream before '{name}' was unloaded",
                      hint="`llamaedge ps` shows whether it is gone")


def run(args: argparse.Namespace) -> int:
    client = ServerClient.from_args(args)
    name = args.model
    try:
        with client.events() as events:
            client.unload(name)
            model = client.model(name)
            runtime = model_runtime(model)
            busy = (runtime.get("requests_running") or 0) + (runtime.get("requests_waiting") or 0)
            if model_status(model).get("unloading") and busy:
                console.print(f"'{name}' is in use: it will be unloaded when its requests end "
                              f"({busy} running or waiting)", markup=False, soft_wrap=True)
                return 0
            outcome = wait_unloaded(events, name, time.monotonic() + STOP_WAIT_S)
    except ServerError as err:
        said = explained(err, client, name)
        if said is err:
            raise
        raise said from err
    if outcome.get("reason") == "cancelled":
        console.print(f"cancelled the download of '{name}' (its partial file stays: pulling it again resumes it)",
                      markup=False, soft_wrap=True)
    elif outcome.get("status") == "failed":
        console.print(f"'{name}' is not loaded: its load failed ({outcome.get('reason')})", markup=False, soft_wrap=True)
    else:
        console.print(f"stopped '{name}'", markup=False, soft_wrap=True)
    return 0
