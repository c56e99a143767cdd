"""llama.cpp's process-wide setup: the backend, once, with its log sent to ours."""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading

import llama_cpp as lc

log = logging.getLogger("llamaedge.engine")

_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level; the rest is debug


@lc.llama_log_callback
def forward_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        log.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", message)


_backend_lock = threading.Lock()
_backend_ready = False


def init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            # llama-cpp-python's high-level API, should anything import it (the engine does not),
            # would install its own callback, which prints every debug line to stderr: import
            # its logger now so that ours is the one that stays.
            importlib.import_module("llama_cpp._logger")
            lc.llama_log_set(forward_log, ctypes.c_void_p(0))
            lc.llama_backend_init()
            _backend_ready = True
