"""llamaedge: local LLM chat and an OpenAI-compatible API, served by WebAssembly apps on a
WASI-NN runtime over llama.cpp.

From Python, `llamaedge.serve(model)` starts a server and returns it once it is ready
(llamaedge/process.py, docs/python.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from llamaedge.errors import LlamaEdgeError, ServerStartError
    from llamaedge.process import Server, serve

__all__ = ["LlamaEdgeError", "Server", "ServerStartError", "__version__", "serve"]
_LAZY = {"LlamaEdgeError": "llamaedge.errors", "ServerStartError": "llamaedge.errors",
         "Server": "llamaedge.process", "serve": "llamaedge.process"}


def __getattr__(name: str) -> Any:
    # Imported on first use: the command line imports this package too, and the Python API's
    # modules (urllib, subprocess) would add to every command's start.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llamaedge' has no attribute {name!r}")
