"""The model's life in a server: loading, ready or failed (loaded on a thread so that /health
can answer 503 meanwhile); admission of requests up to the slots and the queue; draining at
shutdown. One `ServerState` per server; its surface:

    load()                    load the models and compile the apps (on a thread of its own)
    status                    "loading", "ok", "draining" or "error"
    model, embedding          the models it was started with (None until loaded, or without --model)
    library                   every model it serves, loaded on demand (served.py, docs/library.md)
    route_model()             which library member a request's `model` runs on, if not a start model
    member_env()              the app settings of a request on a library member
    registry, runtime, app    what the app runs on: the graphs, wasmtime, the compiled apps
    toolbox                   the --tool tools, compiled (tools.py; None without tools)
    app_env()                 the settings every app run gets (LLAMAEDGE_*)
    admit(), release()        a place for a request, or the reason there is none
    begin_drain(), drained()  shutdown: no new requests, then wait for those in flight
    app_run(), close()        track the app runs, so that close() stops them before the models
    snapshot()                what /metrics reads
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

from llamaedge import catalog
from llamaedge.engine import Model, default_parallel
from llamaedge.errors import LlamaEdgeError, UsageError
from llamaedge.library import Library, ModelStateError, UnknownModel
from llamaedge.limits import DEFAULT_CTX_SIZE, IMAGE_BYTES_MAX, IMAGE_PIXELS_MAX, queue_limit
from llamaedge.metrics import HostSnapshot, ModelSnapshot, ServerMetrics
from llamaedge.model_load import ModelLoad, load_options
from llamaedge.runtime import App, GraphRegistry, NNSession, ResponseStream, Runtime, SessionGraphs
from llamaedge.server import served
from llamaedge.server.config import EMBEDDING_GRAPH, MODEL_GRAPH, ServeConfig
from llamaedge.types import ResolvedModel

if TYPE_CHECKING:
    from llamaedge.tools import Toolbox, ToolResult

log = logging.getLogger("llamaedge.server")

ENDED_FLUSH_S = 2.0  # after the drain deadline, time for the ended responses to send their last event
# At exit, how long cancelled apps get to return from wasm (a run is at most the wasm time
# slice past its last host call, which fails once cancelled).
APP_STOP_WAIT_S = 10.0
ENDED = object()  # put in a flight's chunks when the server ends it


class Flight:
    """One request the host is serving: what it takes to end it early."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ended: asyncio.Future[None] = loop.create_future()  # set when the server ends it
        self.chunks: asyncio.Queue[object] = asyncio.Queue()

    def end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)
            self.chunks.put_nowait(ENDED)


def model_capabilities(resolved: ResolvedModel, model: Model) -> list[str]:
    """What /v1/models says the model can do: its catalog entry's capabilities (by name, or
    by the catalog file it was loaded from), else what its GGUF metadata shows; and `vision`
    when it was loaded with its projector (and only then: it reads images only then)."""
    found = catalog.capabilities_of(resolved.model_id) or catalog.capabilities_of(str(resolved.path), model.metadata)
    return [*found, "vision"] if getattr(model, "vision", False) and "vision" not in found else found


class ServerState:
    """The model's life: loading, ready or failed (loaded on a thread so that /health can
    answer 503 meanwhile); the requests in flight; draining at shutdown. The counters are
    touched on the event loop's thread only."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.registry = GraphRegistry(loader=Model)  # the app may load a model file of its own
        self.runtime: Runtime | None = None
        self.app: App | None = None
        self.mounted: dict[str, App] = {}  # by route
        self.toolbox: Toolbox | None = None  # the --tool tools, compiled (tools.py)
        self.model: Model | None = None
        self.embedding: Model | None = None
        self.error: LlamaEdgeError | None = None
        self.ready = threading.Event()
        self.loaded_at = int(time.time())
        self._app_env: Mapping[str, str] = {}  # made once the models are loaded: fixed from then on
        self.executor: ThreadPoolExecutor | None = None  # made once the slots are known
        self.in_flight = 0
        self.flights: set[Flight] = set()
        self.draining = False
        self._drain_deadline = 0.0
        self._ended_at: float | None = None
        self.metrics = ServerMetrics(self.snapshot)
        # Every model it serves; the start models join it (adopted) once they are loaded.
        self.library: Library[Model] = served.make_library(config, self.metrics.registry)
        # The app runs on worker threads, by session: close() stops them before it frees the
        # models they use (an app still in wasm when the process exits aborts it).
        self._runs_lock = threading.Condition()
        self._runs: set[tuple[NNSession, ResponseStream]] = set()

    @property
    def slots(self) -> int:
        """The start model's decoding slots (0 until it is loaded); without one, the slots
        each library model gets."""
        if self.model is not None:
            return self.model.parallel
        if self.config.model is None:
            return self.config.parallel or default_parallel(self.config.ctx_size or DEFAULT_CTX_SIZE)
        return 0

    @property
    def queue_limit(self) -> int:
        return queue_limit(self.slots, self.config.queue_max)

    def load(self, models: ModelLoad | None = None, *, on_loaded: Callable[[ServerState], None] | None = None) -> None:
        """Load the models and compile the apps, side by side: llama.cpp lets go of the GIL
        while it reads the weights. `models`: a load of this config's models already under
        way (`launch` starts it before importing this module). `on_loaded` is called when
        loading ends, well or not, before the status says so."""
        config = self.config
        options = load_options(config.ctx_size, config.n_gpu_layers, config.threads, config.parallel,
                               config.speculative, config.model.mmproj if config.model is not None else None)
        if models is None and config.model is not None:
            models = ModelLoad(config.model, options, config.embedding_model)
        assert models is None or (models.options == options and models.embedding_model == config.embedding_model)
        try:
            self.runtime = Runtime(self.registry, limits=config.limits)
            self.app = self.runtime.load_app(config.app_path)
            # Each mount has its own key-value namespace, even two of the same file.
            self.mounted = {m.route: self.runtime.load_app(m.path, m.policy, kv_namespace="app:" + m.route)
                            for m in config.mounts}
            if config.tools:
                from llamaedge.tools import Toolbox

                self.toolbox = Toolbox(self.runtime, config.tools, on_result=self._tool_result)
            if config.tools or config.mounts:
                from llamaedge.server.callees import ServerCallees

                self.runtime.tool_host = ServerCallees(self)  # `llamaedge.call`: the tools and the apps
            self._check_prompt_template()
            if models is not None:
                models.wait()
                if models.error:
                    raise models.error
        except LlamaEdgeError as err:
            # The models are waited for even so: the process may end next, and must not
            # while llama.cpp is reading the weights.
            if models is not None:
                models.wait()
            self.error = err
            log.error("cannot serve: %s", err)
            self._loaded(on_loaded)
            return
        if models is not None:
            assert models.model is not None and config.model is not None
            self.model, self.embedding = models.model, models.embedding
            self.registry.register(MODEL_GRAPH, self.model)
            self.library.adopt(config.model.model_id, self.model, self.model.load_s)
            if self.embedding is not None and config.embedding_model is not None:
                self.registry.register(EMBEDDING_GRAPH, self.embedding)
                self.library.adopt(config.embedding_model.model_id, self.embedding, self.embedding.load_s)
        # One thread per request that may be in flight: the queue bound is the thread bound.
        self.executor = ThreadPoolExecutor(max_workers=self.slots + self.queue_limit, thread_name_prefix="llamaedge-app")
        self.loaded_at = int(time.time())
        self._app_env = self._make_app_env()
        self._loaded(on_loaded)

    def _tool_result(self, result: ToolResult) -> None:
        # A name no tool has is a caller's: it is no label.
        name = result.name if result.code != "unknown_tool" else "(unknown)"
        self.metrics.tool_result(name, result.ok, result.code, result.duration_s)

    def _loaded(self, on_loaded: Callable[[ServerState], None] | None) -> None:
        try:
            if on_loaded:
                on_loaded(self)
        finally:
            self.ready.set()

    def _check_prompt_template(self) -> None:
        """Refuse an unknown --prompt-template at startup rather than on every request: the
        app itself lists the names it knows."""
        assert self.runtime is not None and self.app is not None
        name = self.config.model.prompt_template if self.config.model is not None else "auto"
        if name == "auto":
            return
        listing = self.runtime.run_command(self.app, ["list-templates"], NNSession(self.registry))
        known = listing.decode().split()
        if name not in known:
            raise UsageError(f"unknown prompt template {name!r}", hint="use one of: " + ", ".join(known))

    @property
    def status(self) -> str:
        if not self.ready.is_set():
            return "loading"
        missing_embedding = self.config.embedding_model is not None and self.embedding is None
        missing_model = self.config.model is not None and self.model is None
        if self.error or missing_model or missing_embedding:
            return "error"
        return "draining" if self.draining else "ok"

    def app_env(self) -> Mapping[str, str]:
        """The LLAMAEDGE_* settings every app run gets (docs/host-interface.md)."""
        assert self.ready.is_set() and not self.error
        return self._app_env

    def route_model(self, name: str | None) -> str | None:
        """The library member a request's `model` runs on, or None when it runs on the
        models the server was started with. With a start model, a name the library does not
        have runs on it too (the app answers an unknown model as it always has); a library
        alone answers UnknownModel, and a request that names no model runs on the one model
        loaded, if just one is (else ModelStateError: it must name one)."""
        started = [m.model_id for m in (self.config.model, self.config.embedding_model) if m is not None]
        if name is not None and name in started:
            return None
        if name is not None and name in self.library.names():
            return name
        if self.config.model is not None:
            return None
        if name is not None:
            raise UnknownModel(f"the model '{name}' is not in this server's library", model=name,
                               hint="GET /v1/models lists them")
        loaded = self.library.loaded_models()
        if len(loaded) == 1:
            return loaded[0][0]
        raise ModelStateError("this server serves several models: name one in `model`", code="model_required",
                              model="", hint="GET /v1/models lists them")

    def member_env(self, name: str, model: Model) -> Mapping[str, str]:
        """The app settings of a request that runs on library member `name`."""
        info = self.library.info(name)
        template = self.library.prompt_template(name)
        return served.app_env_for(self._app_env, name, model, info.capabilities, template, info.created)

    def graphs(self) -> SessionGraphs:
        """A new app instance's graphs: the start models, and the library's by name."""
        return SessionGraphs(self.registry, served.LibraryGraphSource(self.library))

    def _make_app_env(self) -> dict[str, str]:
        """Made once, when the models have loaded: nothing in it changes after (the
        capabilities are a catalog lookup, or a reading of the model's metadata)."""
        env = {
            "LLAMAEDGE_MAX_BODY_BYTES": str(self.config.max_body_bytes),
            "LLAMAEDGE_IMAGE_BYTES_MAX": str(IMAGE_BYTES_MAX),
            "LLAMAEDGE_IMAGE_PIXELS_MAX": str(IMAGE_PIXELS_MAX),
            "LLAMAEDGE_REASONING_FORMAT": self.config.reasoning_format,
        }
        if self.model is None or self.config.model is None:
            return env  # a library alone: each request gets its model's (member_env)
        env |= {
            "LLAMAEDGE_MODEL_ID": self.config.model.model_id,
            "LLAMAEDGE_MODEL_GRAPH": MODEL_GRAPH,
            "LLAMAEDGE_MODEL_CREATED": str(self.loaded_at),
            "LLAMAEDGE_PROMPT_TEMPLATE": self.config.model.prompt_template,
            "LLAMAEDGE_CTX_SIZE": str(self.model.n_ctx),
            "LLAMAEDGE_PARALLEL": str(self.model.parallel),
            "LLAMAEDGE_MODEL_CAPABILITIES": ",".join(model_capabilities(self.config.model, self.model)),
        }
        if self.embedding is not None and self.config.embedding_model is not None:
            env["LLAMAEDGE_EMBEDDING_MODEL_ID"] = self.config.embedding_model.model_id
            env["LLAMAEDGE_EMBEDDING_GRAPH"] = EMBEDDING_GRAPH
            env["LLAMAEDGE_EMBEDDING_CTX_SIZE"] = str(self.embedding.n_ctx)
            env["LLAMAEDGE_EMBEDDING_MODEL_CAPABILITIES"] = ",".join(
                model_capabilities(self.config.embedding_model, self.embedding))
        return env

    def snapshot(self) -> HostSnapshot:
        models = []
        for resolved, model, graph in ((self.config.model, self.model, MODEL_GRAPH),
                                       (self.config.embedding_model, self.embedding, EMBEDDING_GRAPH)):
            if resolved is not None and model is not None:
                models.append(ModelSnapshot(resolved.model_id, graph, model.load_s, model.stats(), model.n_tokens_decoded))
        started = {m.model_id for m in (self.config.model, self.config.embedding_model) if m is not None}
        for name, model in self.library.loaded_models():
            if name not in started:
                models.append(ModelSnapshot(name, name, model.load_s, model.stats(), model.n_tokens_decoded))
        with self._runs_lock:
            stalled = sum(1 for _, stream in self._runs if stream.stalled)
        return HostSnapshot(self.in_flight, self.slots, self.queue_limit, self.draining, models,
                            responses_stalled=stalled)

    def admit(self) -> str | None:
        """Take a place for a new request, or say why there is none."""
        if self.draining:
            return "draining"
        if self.in_flight >= self.slots + self.queue_limit:
            return "queue_full"
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1

    # -- shutdown --------------------------------------------------------------------------

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            self._drain_deadline = time.monotonic() + self.config.drain_s
            log.warning("shutting down: %d request(s) in flight get up to %gs to finish (signal again to stop now)",
                        self.in_flight, self.config.drain_s)

    def end_flights(self) -> None:
        if self._ended_at is None:
            self._ended_at = time.monotonic()
            if self.flights:
                log.warning("ending %d request(s) still in flight", len(self.flights))
            for flight in list(self.flights):
                flight.end()

    def drained(self) -> bool:
        """Called while draining, on the loop's thread: whether the server may stop now.
        Ends what is still in flight once the drain time is up."""
        if self.in_flight == 0:
            return True
        now = time.monotonic()
        if now >= self._drain_deadline:
            self.end_flights()
        return self._ended_at is not None and now >= self._ended_at + ENDED_FLUSH_S

    @contextmanager
    def app_run(self, session: NNSession, stream: ResponseStream) -> Iterator[None]:
        """Bracket one app run on a worker thread, so that close() can stop it."""
        run = (session, stream)
        with self._runs_lock:
            self._runs.add(run)
        try:
            yield
        finally:
            with self._runs_lock:
                self._runs.discard(run)
                self._runs_lock.notify_all()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        with self._runs_lock:
            for session, stream in self._runs:
                stream.close()  # its writes fail now (the event loop is gone)
                session.cancel()  # and its next WASI-NN call, so the app ends
            stopped = self._runs_lock.wait_for(lambda: not self._runs, timeout=APP_STOP_WAIT_S)
        if self.runtime:
            self.runtime.close()
        if not stopped:
            # Freeing a model under a running app would crash; the process is ending anyway.
            log.warning("%d app run(s) did not stop within %gs; leaving the models to the exit",
                        len(self._runs), APP_STOP_WAIT_S)
            return
        self.library.close()  # every model it holds, the adopted start models too
