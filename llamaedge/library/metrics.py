"""The library's Prometheus metrics, per model (names and meanings: docs/library.md). They go
into the registry given (the server's, so that one /metrics shows them all)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


class _LoadedCollector(Collector):
    """`llamaedge_model_loaded`: 1 for each member loaded now, 0 for the others; read when
    scraped, so never stale."""

    def __init__(self, loaded: Callable[[], dict[str, bool]]) -> None:
        self._loaded = loaded

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("llamaedge_model_loaded", "1 while the model is loaded, else 0.", labels=["model"])
        for name, loaded in sorted(self._loaded().items()):
            family.add_metric([name], 1.0 if loaded else 0.0)
        yield family


class LibraryMetrics:
    def __init__(self, loaded: Callable[[], dict[str, bool]], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.loads = Counter("llamaedge_model_loads", "Model loads, by result (ok, failed).", ["model", "result"],
                             registry=r)
        self.load_seconds = Histogram("llamaedge_model_load_duration_seconds",
                                      "From the start of a load to the model ready (warm-up token included).",
                                      ["model"], buckets=LOAD_BUCKETS, registry=r)
        self.unloads = Counter("llamaedge_model_unloads", "Model unloads, by reason (idle, evicted, asked).",
                               ["model", "reason"], registry=r)
        r.register(_LoadedCollector(loaded))
