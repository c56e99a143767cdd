"""The exceptions llamaedge raises, mapped once to CLI messages (cli.py) and HTTP errors
(server.py).

    LlamaEdgeError              a one-line message, plus a hint that says how to fix it
    ├── UsageError              bad arguments or configuration
    ├── ModelError              a model file that cannot be found or loaded
    ├── AppError                a WebAssembly app that cannot be loaded, trapped or ran away
    ├── DownloadError           a model download failed (network, 404, gated, disk, checksum)
    │   └── OfflineError        the hub cannot be reached (no network or HF_HUB_OFFLINE)
    └── ServerStartError        a server started from Python (llamaedge.serve) did not get ready

Foreign exceptions are translated at the seam where they occur with
`raise SomeError(...) from exc`.
"""

from __future__ import annotations


class LlamaEdgeError(Exception):
    """Base class. `str(err)` is a one-line message; `hint` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(LlamaEdgeError):
    pass


class ModelError(LlamaEdgeError):
    pass


class AppError(LlamaEdgeError):
    pass


class DownloadError(LlamaEdgeError):
    pass


class OfflineError(DownloadError):
    pass


class ServerStartError(LlamaEdgeError):
    """`llamaedge.serve()` started a server that exited, or was not ready in time. The message
    carries the server's own error line; `output` its last lines, `returncode` its exit
    status (None if it had to be stopped)."""

    def __init__(self, message: str, *, output: str, returncode: int | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.output = output
        self.returncode = returncode
