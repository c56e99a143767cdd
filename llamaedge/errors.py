"""The exceptions llamaedge raises, one family per layer, mapped once to CLI messages
(cli.py) and HTTP errors (server/bridge.py). The whole tree, with the module of each class:

    LlamaEdgeError                a one-line message, plus a hint that says how to fix it
    ├── UsageError                bad arguments or configuration (the command line, catalog, mount)
    │   └── PolicyError           a bad value in an app's manifest or --app-policy (runtime/policy.py)
    ├── ModelError                a model the catalog cannot resolve: unknown name, no file, not downloaded (catalog, rm)
    ├── DownloadError             a model download failed (network, 404, gated, disk, checksum)
    │   ├── OfflineError          the hub cannot be reached (no network or HF_HUB_OFFLINE)
    │   └── DownloadCancelled     its caller cancelled it (the library's pull, on unload)
    ├── EngineError               the engine's family (engine/errors.py)
    │   ├── LoadError             a model file llama.cpp cannot read or load, or a context it cannot make
    │   ├── ModelClosed           the model is shutting down
    │   ├── BadInput              a prompt, token id or sampling option the model cannot take
    │   ├── PromptTooLong         an input that does not fit its context
    │   ├── GrammarError          a grammar that does not parse, a JSON schema with no grammar
    │   ├── NoChatTemplate        the model has no chat template
    │   └── TemplateError         the chat template failed on the messages it was given
    ├── AppError                  the runtime's family: a WebAssembly app that cannot be loaded or run
    │   ├── AppTrap               the app trapped, or ran too long without calling the host (runtime/host.py)
    │   └── PolicyBreach          a mounted app or a tool went beyond its policy: fails that request or call (runtime/breaches.py)
    │       ├── ModelNotAllowed   it asked for a model not granted (403)
    │       ├── HostNotAllowed    it fetched from a host not granted (403; runtime/http.py)
    │       ├── PolicyWidening    a nested call whose callee is granted what its caller is not (403)
    │       ├── OutputTooLarge    a tool wrote more than its output limit (runtime/tools.py)
    │       ├── WallTimeExceeded  it ran past its wall time (504)
    │       └── MemoryLimitReached  it failed at its memory limit (500)
    ├── ServerStartError          a server started from Python (llamaedge.serve) did not get ready
    ├── ServerError               a running server that `ps`/`stop` cannot reach, or that refused them (client.py)
    └── LibraryError              the model library's family (library/errors.py): unknown model, no room, load failed…

Inside the runtime, never raised out of a host function (Python exceptions never cross into
wasm; the guest gets a WASI-NN error code):

    NNError                       a host function's failure, with the code the guest gets (runtime/nn/errors.py)
    GuestMemoryError              a guest pointer outside its memory: INVALID_ARGUMENT (runtime/guest.py)

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


class DownloadCancelled(DownloadError):
    """A download its caller cancelled: it stopped at the chunk it was receiving and kept its
    partial file, which the next download of the same file resumes."""


class ServerStartError(LlamaEdgeError):
    """`llamaedge.serve()` started a server that exited, or was not ready in time. The message
    carries the server's own error line; `output` its last lines, `returncode` its exit
    status (None if it had to be stopped)."""

    def __init__(self, message: str, *, output: str, returncode: int | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.output = output
        self.returncode = returncode
