"""The model library: many models in one server, loaded and unloaded as requests use them,
after llama-server's router mode (docs/library.md).

    types       statuses, sources, estimates, LibraryConfig and its defaults
    errors      LibraryError and its kinds
    gguf_header a GGUF's metadata in pure Python, without llama.cpp
    members     who is in the library: the models folder and the catalog, or --model specs
    memory      what a model needs, the budget, where its layers go
    loader      the Loader protocol, and EngineLoader on the engine's Model
    events      status and download events for any number of readers
    metrics     per-model Prometheus metrics
    state       a member's state, its capabilities, and what GET /models shows of it
    eviction    the options and estimate of a load, and the LRU idle members it unloads
    loading     loads and unloads on the library's threads, and the threads
    pulls       downloads: what may be pulled, the download, the member after it
    library     Library: acquire/release, load, unload, pull, rescan, idle unload
    routes      the HTTP API: /v1/models, /models, /models/load|unload|pull|sse
"""

from llamaedge.library.errors import (LibraryClosed, LibraryError, LoadFailed, ModelDownloading, ModelStateError,
                                      ModelTooLarge, NoRoom, UnknownModel)
from llamaedge.library.events import LibraryEvent, Subscription
from llamaedge.library.library import Lease, Library
from llamaedge.library.loader import EngineLoader, LoadedModel, Loader
from llamaedge.library.members import discover, from_specs
from llamaedge.library.routes import error_response, library_routes, message_of, status_of
from llamaedge.library.state import MemberInfo
from llamaedge.library.types import LibraryConfig, MemberSource, MemoryNeed, ModelFacts, Source, Status

__all__ = [
    "EngineLoader", "Lease", "Library", "LibraryClosed", "LibraryConfig", "LibraryError", "LibraryEvent", "LoadFailed",
    "LoadedModel", "Loader", "MemberInfo", "MemberSource", "MemoryNeed", "ModelDownloading", "ModelFacts",
    "ModelStateError", "ModelTooLarge", "NoRoom", "Source", "Status", "Subscription", "UnknownModel", "discover",
    "error_response", "from_specs", "library_routes", "message_of", "status_of",
]
