"""Graphs: the models a process offers its apps, by WASI-NN graph id and by name. Names come
from `--nn-preload` (loaded on an app's first `load_by_name`) or from the host, which
registers the models it loaded itself (how `serve` offers `default`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llamaedge.engine import EngineError, LoadedModel, LoadOptions, ModelLoader
from llamaedge.errors import UsageError
from llamaedge.runtime.nn.errors import Errno, NNError
from llamaedge.runtime.nn.metadata import LOAD_KEYS, load_options_from

log = logging.getLogger("llamaedge.wasi_nn")

_TARGETS = {"cpu": 0, "gpu": 1, "tpu": 2, "auto": 3}


@dataclass(frozen=True)
class Preload:
    name: str
    encoding: str
    target: str
    path: Path


def parse_preload(spec: str) -> Preload:
    """`NAME:ENCODING:TARGET:PATH`; the path may itself contain ':' (Windows drives)."""
    parts = spec.split(":", 3)
    if len(parts) != 4 or not parts[0] or not parts[3]:
        raise UsageError(f"bad --nn-preload {spec!r}", hint="use NAME:GGML:AUTO:PATH, e.g. default:GGML:AUTO:model.gguf")
    name, encoding, target, path = parts
    if encoding.lower() not in ("ggml", "autodetect"):
        raise UsageError(f"--nn-preload {spec!r}: encoding {encoding!r} is not supported", hint="use GGML")
    if target.lower() not in _TARGETS:
        raise UsageError(f"--nn-preload {spec!r}: unknown target {target!r}", hint="use AUTO, CPU or GPU")
    return Preload(name, encoding.upper(), target.upper(), Path(path))


class Graphs(Protocol):
    """The graphs as an app instance sees them: the GraphRegistry, or a mounted app's view
    of it that its policy narrows (guard.PolicyRegistry)."""

    def load_by_name(self, name: str, metadata: dict[str, Any]) -> int: ...

    def load_path(self, path: Path, metadata: dict[str, Any]) -> int: ...

    def get(self, graph: int) -> LoadedModel: ...

    def unload(self, graph: int) -> None: ...


class GraphRegistry:
    """Models by WASI-NN graph id, and the names they can be loaded by. Shared by every app
    instance in the process; loading a name twice returns the same graph. `loader` makes a
    model of a file (the engine's Model; tests may give a stand-in); without one the registry
    offers only the models the host registers, and an app's load of a file fails."""

    def __init__(self, base_options: LoadOptions | None = None, preloads: list[Preload] | None = None,
                 *, loader: ModelLoader | None = None) -> None:
        assert loader is not None or not preloads, "preloads need a loader"
        self.base_options = base_options or LoadOptions()
        self.loader = loader
        self._preloads: dict[str, Preload] = {p.name: p for p in preloads or []}
        self._graphs: list[LoadedModel | None] = []
        self._by_name: dict[str, int] = {}
        self._owned: set[int] = set()  # loaded by an app (not registered by the host)
        self._lock = threading.Lock()

    def register(self, name: str, model: LoadedModel) -> int:
        """Offer an already loaded model under `name` (how `serve` provides `default`)."""
        with self._lock:
            self._graphs.append(model)
            graph = len(self._graphs) - 1
            self._by_name[name] = graph
            return graph

    def load_by_name(self, name: str, metadata: dict[str, Any]) -> int:
        with self._lock:
            if name in self._by_name:
                graph = self._by_name[name]
                self._warn_load_keys(name, metadata)
                return graph
            preload = self._preloads.get(name)
            if preload is None:
                raise NNError(Errno.NOT_FOUND, f"no model is preloaded as {name!r}")
            try:
                with open(preload.path, "rb"):
                    pass
            except OSError as exc:
                raise NNError(Errno.MODEL_NOT_FOUND, f"the model preloaded as {name!r} cannot be opened: {exc}") from exc
            graph = self._load(preload.path, metadata)
            self._by_name[name] = graph
            return graph

    def load_path(self, path: Path, metadata: dict[str, Any]) -> int:
        with self._lock:
            return self._load(path, metadata)

    def _load(self, path: Path, metadata: dict[str, Any]) -> int:
        if self.loader is None:
            raise NNError(Errno.NOT_FOUND, f"this host loads no model files ({Path(path).name})")
        options = load_options_from(metadata, self.base_options)
        try:
            model = self.loader(path, options)
        except EngineError as exc:
            raise NNError(Errno.NOT_FOUND if not Path(path).is_file() else Errno.INVALID_ARGUMENT, str(exc)) from exc
        self._graphs.append(model)
        graph = len(self._graphs) - 1
        self._owned.add(graph)
        log.info("loaded graph %d from %s (ctx %d)", graph, Path(path).name, model.n_ctx)
        return graph

    def _warn_load_keys(self, name: str, metadata: dict[str, Any]) -> None:
        model = self._graphs[self._by_name[name]]
        ignored = sorted(k for k in metadata if k in LOAD_KEYS)
        if ignored and model is not None:
            log.info("graph %r is already loaded; load-time keys %s keep their values", name, ignored)

    def get(self, graph: int) -> LoadedModel:
        if 0 <= graph < len(self._graphs):
            model = self._graphs[graph]
            if model is not None:
                return model
        raise NNError(Errno.INVALID_ARGUMENT, f"unknown graph id {graph}")

    def unload(self, graph: int) -> None:
        """Frees models an app loaded itself; models the host registered stay loaded."""
        with self._lock:
            model = self.get(graph)
            if graph in self._owned:
                self._graphs[graph] = None
                self._owned.discard(graph)
                for name, g in list(self._by_name.items()):
                    if g == graph:
                        del self._by_name[name]
                model.close()

    def close(self) -> None:
        with self._lock:
            for graph in sorted(self._owned):
                model = self._graphs[graph]
                if model is not None:
                    model.close()
                self._graphs[graph] = None
            self._owned.clear()


class GraphLease(Protocol):
    """A hold on a model someone else owns (the server's model library): it stays loaded
    until the lease is released."""

    @property
    def model(self) -> LoadedModel: ...  # read-only: a lease of a Model (or a fake) is one

    def release(self) -> None: ...


class GraphSource(Protocol):
    """Models by name that are loaded on demand and shared by every app instance (the
    server's library, llamaedge/server/served.py). `acquire` blocks while the model loads;
    it raises NNError (NOT_FOUND for a name it does not have, BUSY when there is no room)."""

    def has(self, name: str) -> bool: ...

    def acquire(self, name: str) -> GraphLease: ...


SESSION_GRAPH_BASE = 1 << 20  # graph ids of a session's leases: apart from the registry's


class SessionGraphs:
    """One app instance's graphs: the process's registry, and the models of a `GraphSource`
    it loads by name, each held by a lease until the graph is unloaded or the session closes.
    A lease's graph id is the session's own: a model may be unloaded and loaded again between
    two sessions, so the id of one load must not outlive the instance that holds it."""

    def __init__(self, registry: Graphs, source: GraphSource) -> None:
        self._registry = registry
        self._source = source
        self._leases: dict[int, GraphLease] = {}
        self._by_name: dict[str, int] = {}
        self._next = SESSION_GRAPH_BASE

    def hold(self, name: str, lease: GraphLease) -> int:
        """Take a lease the host acquired for this request (before the app ran, to answer its
        errors over HTTP): the app's `load_by_name(name)` gets it."""
        graph = self._next
        self._next += 1
        self._leases[graph] = lease
        self._by_name[name] = graph
        return graph

    def load_by_name(self, name: str, metadata: dict[str, Any]) -> int:
        if name in self._by_name:
            return self._by_name[name]
        if not self._source.has(name):
            return self._registry.load_by_name(name, metadata)
        ignored = sorted(k for k in metadata if k in LOAD_KEYS)
        if ignored:
            log.info("graph %r is served by the library; load-time keys %s keep the server's values", name, ignored)
        return self.hold(name, self._source.acquire(name))

    def load_path(self, path: Path, metadata: dict[str, Any]) -> int:
        return self._registry.load_path(path, metadata)

    def get(self, graph: int) -> LoadedModel:
        lease = self._leases.get(graph)
        return lease.model if lease is not None else self._registry.get(graph)

    def unload(self, graph: int) -> None:
        lease = self._leases.pop(graph, None)
        if lease is None:
            self._registry.unload(graph)
            return
        self._by_name = {n: g for n, g in self._by_name.items() if g != graph}
        lease.release()

    def close(self) -> None:
        """Release every lease (the app instance is done with its models)."""
        leases, self._leases, self._by_name = self._leases, {}, {}
        for lease in leases.values():
            lease.release()
