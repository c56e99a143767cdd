"""`llamaedge run [NAME]`: the one-liner's main job. Pull the model if needed, serve it, and
open the chat in the browser once the server answers. With no NAME it picks the best catalog
model for this machine's memory, and falls back to the built-in model when the hub cannot be
reached."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from llamaedge import catalog, download, gpu
from llamaedge.commands.serve import add_server_arguments, check_server_arguments, pause_gc_for_startup
from llamaedge.console import console, err_console
from llamaedge.errors import OfflineError
from llamaedge.types import ResolvedModel

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="pull a model if needed, serve it and open the chat in the browser",
        description="Pull a model if needed, serve it, and open the web chat when it is ready. "
        "With no MODEL, the best catalog model for this machine's memory is picked. The chat can "
        "switch to any other model in the models folder, which loads on demand.",
    )
    parser.add_argument("model", nargs="?", metavar="MODEL", help="catalog name, path to a .gguf, hf:OWNER/REPO/FILE or https URL")
    parser.add_argument("--no-browser", action="store_true", help="do not open the browser")
    add_server_arguments(parser)
    parser.set_defaults(func=run)


def choose_model(name: str | None, models_dir: str | None) -> ResolvedModel:
    if name:
        catalog.check_chat_model(name)
        return catalog.resolve_model(name, models_dir=models_dir)
    budget = catalog.MemoryBudget.from_devices(gpu.probe_devices(), gpu.gpu_offload_supported())
    entry, reason = catalog.pick_default(budget)
    console.print(
        f"no model named: using [bold]{entry.name}[/] ({entry.parameters}, {download.human_bytes(entry.size_bytes)}), {reason}"
    )
    try:
        return catalog.resolve_model(entry.name, models_dir=models_dir)
    except OfflineError as err:
        err_console.print(
            f"[yellow]the model hub cannot be reached ({err}): using the built-in {catalog.EMBEDDED_NAME} instead, "
            "a small model that needs no download[/]",
            soft_wrap=True,
        )
        return catalog.resolve_model(catalog.EMBEDDED_NAME, models_dir=models_dir)


def browser_available() -> bool:
    """Whether opening a browser can work without taking over this terminal: Python would
    otherwise fall back to a text browser (lynx, w3m) on a machine with no display."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform == "darwin" or os.name == "nt":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_browser(url: str) -> None:
    chat_url = url.rstrip("/") + "/"
    if not browser_available():
        console.print(f"no display found: open {chat_url} in your browser")
        return

    def opener() -> None:
        import webbrowser  # (not at startup: it imports much of the standard library)

        # A browser launcher may wait for the browser to exit; keep it off the server's threads.
        if not webbrowser.open(chat_url):
            console.print(f"could not start a browser: open {chat_url} yourself")

    console.print(f"opening {chat_url} in your browser")
    threading.Thread(target=opener, name="llamaedge-browser", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    check_server_arguments(args)
    model = choose_model(args.model, args.models_dir)
    args.library_all = True  # the chat can switch to any other model in the models folder
    pause_gc_for_startup()
    from llamaedge.launch import launch

    return launch(model, args, on_ready=None if args.no_browser else open_browser)
