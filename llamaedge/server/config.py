"""What `serve` is asked to do: the options of one server, and the graph names its models
are offered under to the apps."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from llamaedge.engine import SpecOptions
from llamaedge.limits import DRAIN_S, IDLE_UNLOAD_S, MAX_BODY_BYTES, MODELS_MAX
from llamaedge.mount import Mount
from llamaedge.runtime import RunLimits
from llamaedge.types import ResolvedModel

if TYPE_CHECKING:  # tools.py brings jsonschema: only a server with tools imports it
    from llamaedge.tools import ToolManifest

MODEL_GRAPH = "default"
EMBEDDING_GRAPH = "embedding"  # the graph name of a separate --embedding-model


def default_app_path() -> Path:
    return Path(str(resources.files("llamaedge") / "apps" / "chat-server.wasm"))


@dataclass
class ServeConfig:
    # The model the server starts with, loaded before it answers; None: the library alone
    # (every model in the models folder, loaded on demand: docs/library.md).
    model: ResolvedModel | None
    host: str = "127.0.0.1"
    port: int = 8080
    ctx_size: int | None = None
    n_gpu_layers: int | None = None  # None: all layers; `launch` decides from the devices found
    threads: int | None = None
    parallel: int | None = None  # slots; None: the engine's, sized to the context (engine.default_parallel)
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # --allowed-host, beside the names hostguard allows
    max_body_bytes: int = MAX_BODY_BYTES
    app_path: Path = field(default_factory=default_app_path)
    limits: RunLimits = field(default_factory=RunLimits)
    embedding_model: ResolvedModel | None = None  # loaded beside the chat model as EMBEDDING_GRAPH
    mounts: list[Mount] = field(default_factory=list)  # `--app` apps, on the same engine (mount.py)
    tools: list[ToolManifest] = field(default_factory=list)  # `--tool` tools: /mcp, the tool loop (tools.py)
    queue_max: int | None = None  # None: QUEUE_MAX_PER_SLOT per slot
    drain_s: float = DRAIN_S
    metrics_auth: bool = False  # /metrics needs the API key too
    allow_image_urls: bool = False  # http(s) image URLs fetched by the host (server/image_urls.py)
    reasoning_format: str = "auto"  # "none": the app leaves <think> text inline in content
    speculative: SpecOptions = field(default_factory=SpecOptions)  # drafts: `serve --spec-ngram`, `--draft-model`
    # The library (docs/library.md): further --model specs, loaded on demand beside `model`.
    library_models: list[str] = field(default_factory=list)
    library_all: bool = False  # with `model`: also every model in the models folder (`llamaedge run`)
    models_dir: str | None = None  # None: settings.models_dir()
    models_max: int = MODELS_MAX  # models loaded at once (0: as many as memory holds)
    models_autoload: bool = True  # a request for a model not loaded loads it
    idle_unload_s: float = IDLE_UNLOAD_S  # a library model unused this long is unloaded (0: never)
    library_n_gpu_layers: int | None = None  # --n-gpu-layers as given; None: planned per model
