"""The library's small data types and its settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from llamaedge.catalog import CatalogEntry
from llamaedge.limits import IDLE_UNLOAD_S, MODELS_MAX

# How long a request waits for room (a model in use to become idle so it can be unloaded)
# before it gets NoRoom (503 + Retry-After).
ROOM_WAIT_S = 30.0


class Status(str, Enum):
    """A member's `status.value`, as llama-server's router names them (it shows a failed load
    as `unloaded` with `failed: true`; we say `failed` and keep `failed: true` beside it)."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    DOWNLOADING = "downloading"
    FAILED = "failed"


class Source(str, Enum):
    """Where a member comes from."""

    MODELS_DIR = "models_dir"  # a GGUF found in the models directory (a catalog download or any other file)
    CATALOG = "catalog"  # a catalog entry not downloaded yet: pull makes it a file
    PACKAGE = "package"  # the catalog's embedded model, from its installed Python package
    EXPLICIT = "explicit"  # named on the command line (`--model`)


@dataclass(frozen=True)
class MemberSource:
    """A member as discovery finds it: its name, its file (None until downloaded), and what
    the catalog knows of it."""

    name: str
    source: Source
    path: Path | None
    entry: CatalogEntry | None = None
    spec: str | None = None  # what catalog.resolve_model downloads it by (None: not downloadable)
    prompt_template: str = "auto"
    mmproj: Path | None = None  # the vision projector it loads with (catalog.projector_for), when on disk


@dataclass(frozen=True)
class ModelFacts:
    """What a GGUF's header says, read without the weights: enough to estimate its memory and
    to list its capabilities. `metadata` holds the scalar keys as strings (as llama.cpp shows
    them); arrays are left out."""

    size_bytes: int
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes of RAM and of GPU memory a model takes once loaded."""

    ram_bytes: int
    vram_bytes: int = 0

    def __add__(self, other: MemoryNeed) -> MemoryNeed:
        return MemoryNeed(self.ram_bytes + other.ram_bytes, self.vram_bytes + other.vram_bytes)

    def __sub__(self, other: MemoryNeed) -> MemoryNeed:
        return MemoryNeed(self.ram_bytes - other.ram_bytes, self.vram_bytes - other.vram_bytes)

    def fits(self, room: MemoryNeed) -> bool:
        return self.ram_bytes <= room.ram_bytes and self.vram_bytes <= room.vram_bytes


NO_MEMORY = MemoryNeed(0, 0)


@dataclass(frozen=True)
class LibraryConfig:
    """How the library loads and keeps models. The load options (ctx_size, n_gpu_layers,
    threads, parallel) apply to every member, as llama-server's router passes its arguments to
    every instance."""

    models_max: int = MODELS_MAX  # 0: no limit but memory
    autoload: bool = True  # False: a request for a model not loaded gets ModelStateError (model_not_loaded)
    idle_unload_s: float = IDLE_UNLOAD_S  # 0: never
    memory_budget_bytes: int | None = None  # RAM the models may take; None: measured (memory.py)
    room_wait_s: float = ROOM_WAIT_S
    ctx_size: int | None = None
    n_gpu_layers: int | None = None  # None: planned per model from the GPUs found (gpu.plan_offload)
    threads: int | None = None
    parallel: int | None = None
    models_dir: Path | None = None  # None: settings.models_dir()
