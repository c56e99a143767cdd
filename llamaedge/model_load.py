"""The models a server serves, loaded on a thread of their own. llama.cpp lets go of the GIL
while it reads the weights, so the rest of startup (importing the server, compiling the apps,
binding the port) goes on meanwhile; `launch` starts the load before it imports the server.
This module imports the engine and nothing of the server."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from llamaedge.engine import EngineError, LoadOptions, Model, SamplingOptions, SpecOptions
from llamaedge.errors import LlamaEdgeError
from llamaedge.types import ResolvedModel

log = logging.getLogger("llamaedge.server")


def load_options(ctx_size: int | None, n_gpu_layers: int | None, threads: int | None,
                 parallel: int | None, speculative: SpecOptions | None = None, mmproj: Path | None = None) -> LoadOptions:
    """The chat model's options from the server's: None layers means all of them."""
    return LoadOptions(ctx_size=ctx_size, n_gpu_layers=-1 if n_gpu_layers is None else n_gpu_layers,
                       threads=threads, parallel=parallel, speculative=speculative or SpecOptions(), mmproj=mmproj)


class ModelLoad:
    """The chat model (and the embedding model, if any) loading from the moment this is made.
    `loader` makes each (the engine's Model; a benchmark may give one with other settings)."""

    def __init__(self, model: ResolvedModel, options: LoadOptions, embedding_model: ResolvedModel | None = None,
                 *, loader: Callable[[Path, LoadOptions], Model] = Model) -> None:
        self.options = options
        self.embedding_model = embedding_model
        self.model: Model | None = None
        self.embedding: Model | None = None
        self.error: LlamaEdgeError | None = None
        self._resolved = model
        self._loader = loader
        self._thread = threading.Thread(target=self._load, name="llamaedge-model", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def _load(self) -> None:
        try:
            self.model = self._loader(self._resolved.path, self.options)
            log.info("model %s ready in %.1fs (ctx %d)", self._resolved.model_id, self.model.load_s, self.model.n_ctx)
            warm_up(self.model)
            if self.embedding_model is not None:
                # --parallel is for chat requests and --ctx-size and drafts for the chat
                # model: the embedding model keeps the engine's defaults for them.
                options = dataclasses.replace(self.options, ctx_size=None, parallel=LoadOptions().parallel,
                                              speculative=SpecOptions(), mmproj=None)
                self.embedding = self._loader(self.embedding_model.path, options)
                log.info("embedding model %s ready in %.1fs (ctx %d)", self.embedding_model.model_id,
                         self.embedding.load_s, self.embedding.n_ctx)
        except LlamaEdgeError as err:
            self.error = err


def warm_up(model: Model) -> None:
    """Generate one token, as llama-server does at load: the first decode faults the weights
    in and starts llama.cpp's threads, and here it happens while the server starts rather
    than in the first request."""
    try:
        sequence = model.generate(model.tokenize(b"Hello"), SamplingOptions(temp=0.0, n_predict=1))
        while sequence.next_token() is not None:
            pass
        model.warm_up_drafter()
    except EngineError as err:  # the first request will meet it too, and say so
        log.warning("warm-up decode failed: %s", err)
