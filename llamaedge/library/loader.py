"""How the library makes and frees models: the `Loader` protocol, and `EngineLoader`, the real
one (the engine's Model, warmed up as `serve` warms its model). Tests give a fake loader."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from pathlib import Path
from typing import Protocol, TypeVar

from llamaedge.engine import LoadOptions, Model
from llamaedge.library.gguf_header import read_facts
from llamaedge.library.types import ModelFacts
from llamaedge.model_load import warm_up

log = logging.getLogger("llamaedge.library")


class LoadedModel(Protocol):
    """What the library reads of a loaded model: the context and slots it got."""

    n_ctx: int
    parallel: int


M = TypeVar("M", bound=LoadedModel)


class Loader(Protocol[M]):
    def inspect(self, path: Path) -> ModelFacts:
        """What the file's header says, without loading it. ModelError when it cannot be read."""
        ...

    def load(self, path: Path, options: LoadOptions) -> M:
        """The model, ready to serve. Runs on a thread of its own; ModelError when it fails."""
        ...

    def unload(self, model: M) -> None:
        """Free the model: nothing uses it any more."""
        ...


class EngineLoader:
    """The engine's Model: loaded, then one warm-up token (as llama-server does at load, so
    the first request does not pay for faulting the weights in)."""

    def inspect(self, path: Path) -> ModelFacts:
        return read_facts(path)

    def load(self, path: Path, options: LoadOptions) -> Model:
        model = Model(path, options)
        warm_up(model)
        return model

    def unload(self, model: Model) -> None:
        model.close()
        _trim_heap()


def _trim_heap() -> None:
    """Give the freed heap back to the system now (glibc keeps freed memory in its arenas for
    reuse): an unload should show in the process's RSS."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError) as exc:  # not glibc (musl has no malloc_trim)
        log.debug("malloc_trim unavailable: %s", exc)
