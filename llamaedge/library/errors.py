"""What the library raises: LibraryError and its kinds, each with a `code` the HTTP layer puts
in OpenAI's error object (routes.py maps each kind to a status once, in `HTTP_STATUS`).

    LibraryError                    (a LlamaEdgeError: a one-line message and a hint)
    ├── UnknownModel                no member of that name                          -> 404
    ├── ModelStateError             the member's status does not allow it            -> 400
    │                               (code: model_not_loaded, model_loading, model_already_loaded,
    │                                model_not_downloaded, model_already_downloaded,
    │                                model_not_downloadable)
    ├── ModelTooLarge               it could never fit the memory budget             -> 400
    ├── NoRoom                      it would fit, but the models loaded are in use   -> 503 + Retry-After
    ├── ModelDownloading            it is being downloaded                           -> 503 + Retry-After
    ├── LoadFailed                  llama.cpp could not load it                      -> 500
    └── LibraryClosed               the library is shutting down                     -> 503

Foreign errors (the engine's ModelError, the download's DownloadError) become LoadFailed or a
`failed` status with their message, in library.py and nowhere else.
"""

from __future__ import annotations

from llamaedge.errors import LlamaEdgeError

# What a refused request is told to wait before it tries again (Retry-After).
RETRY_AFTER_S = 5


class LibraryError(LlamaEdgeError):
    code = "library_error"
    retry_after_s: int | None = None  # for the refusals worth retrying

    def __init__(self, message: str, *, hint: str | None = None, model: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.model = model


class UnknownModel(LibraryError):
    code = "model_not_found"


class ModelStateError(LibraryError):
    def __init__(self, message: str, *, code: str, model: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, model=model)
        self.code = code


class ModelTooLarge(LibraryError):
    code = "model_too_large"

    def __init__(self, message: str, *, model: str, need_bytes: int, room_bytes: int) -> None:
        super().__init__(message, model=model, hint="choose a smaller model or quantization, or a smaller context")
        self.need_bytes = need_bytes
        self.room_bytes = room_bytes


class NoRoom(LibraryError):
    code = "model_no_room"
    retry_after_s = RETRY_AFTER_S


class ModelDownloading(LibraryError):
    code = "model_downloading"
    retry_after_s = RETRY_AFTER_S


class LoadFailed(LibraryError):
    code = "model_load_failed"


class LibraryClosed(LibraryError):
    code = "server_shutting_down"
    retry_after_s = RETRY_AFTER_S
