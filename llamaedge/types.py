"""Small shared data types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Device:
    """A compute device llama.cpp can use, as ggml's backend registry reports it."""

    name: str
    description: str
    kind: str  # "cpu", "gpu" or "accel" (ggml_backend_dev_type)
    memory_free_bytes: int
    memory_total_bytes: int


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: where its file is and how it is served."""

    path: Path
    model_id: str  # the id under /v1/models: catalog name or file stem, never a path
    prompt_template: str = "auto"
    mmproj: Path | None = None  # the vision projector loaded beside it (catalog.projector_for, `serve --mmproj`)
