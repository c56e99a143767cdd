"""The model library as a server serves it (docs/library.md): who its members are, the
models the server was started with (loaded first, for a quick start, then adopted: pinned for
the server's life), which model a request names, each member's app settings, and the library
as the graph source WASI-NN apps load names from."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry
from starlette.responses import JSONResponse

from llamaedge import catalog, settings
from llamaedge.engine import Model
from llamaedge.library import (EngineLoader, Lease, Library, LibraryConfig, LibraryError, MemberSource, ModelDownloading, NoRoom,
                               Source, UnknownModel, discover, from_specs, message_of, status_of)
from llamaedge.runtime.nn import Errno, GraphLease, NNError
from llamaedge.server.api_errors import host_error
from llamaedge.server.config import ServeConfig
from llamaedge.types import ResolvedModel

log = logging.getLogger("llamaedge.server")

# The field of a POST body that names the model it runs on (llama-server's router reads the
# same; GETs name no model and run on the server's own).
MODEL_FIELD = "model"


def member_of(resolved: ResolvedModel) -> MemberSource:
    """A model the server was started with, as a member under its id."""
    entry = catalog.find_entry(resolved.model_id)
    return MemberSource(resolved.model_id, Source.EXPLICIT, resolved.path, entry, None, resolved.prompt_template,
                        resolved.mmproj)


def members(config: ServeConfig) -> Callable[[], list[MemberSource]]:
    """Who is in the library: the models the server was started with and the further
    `--model`s, in their order (an explicit set); without `--model` (or for `llamaedge run`,
    beside its model), every GGUF in the models folder and the catalog's other entries
    (discovery, again on each rescan)."""
    models_dir = settings.models_dir(config.models_dir)
    started = [member_of(config.model)] if config.model is not None else []
    if config.embedding_model is not None:  # loaded without a projector, whatever lies beside it
        started.append(member_of(dataclasses.replace(config.embedding_model, mmproj=None)))
    named = {m.name for m in started}
    if config.library_models:
        more = [m for m in from_specs(config.library_models, models_dir) if m.name not in named]
        return lambda: [*started, *more]
    if config.model is None or config.library_all:
        return lambda: [*started, *(m for m in discover(models_dir) if m.name not in named)]
    return lambda: started


def make_library(config: ServeConfig, registry: CollectorRegistry | None) -> Library[Model]:
    library_config = LibraryConfig(
        models_max=config.models_max, autoload=config.models_autoload, idle_unload_s=config.idle_unload_s,
        ctx_size=config.ctx_size, n_gpu_layers=config.library_n_gpu_layers, threads=config.threads,
        parallel=config.parallel, models_dir=settings.models_dir(config.models_dir))
    return Library(EngineLoader(), library_config, members=members(config), registry=registry)


def requested_model(body: bytes) -> str | None:
    """The `model` a JSON request body names, or None (not JSON, not an object, no string
    there: the app answers what is wrong with the body)."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        value = json.loads(body).get(MODEL_FIELD)
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def refusal(path: str, err: LibraryError) -> JSONResponse:
    """A request whose model the library cannot give it, answered as the library's own routes
    answer (status, code, Retry-After), in the shape of the route's clients."""
    status = status_of(err)
    kind = ("overloaded" if status == 503 else "server" if status >= 500 else "not_found" if status == 404
            else "invalid_request")
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s is not None else None
    return host_error(path, status, message_of(err), kind=kind, code=err.code, headers=headers)


def app_env_for(base: Mapping[str, str], name: str, model: Model, capabilities: list[str], prompt_template: str,
                created: int) -> dict[str, str]:
    """The app settings (docs/host-interface.md) of a request that runs on library member
    `name`: the server's own, with the model's in place of the start model's. The app loads
    the graph by the member's name, which the library resolves (LibraryGraphSource)."""
    env = dict(base)
    env.update({
        "LLAMAEDGE_MODEL_ID": name,
        "LLAMAEDGE_MODEL_GRAPH": name,
        "LLAMAEDGE_MODEL_CREATED": str(created),
        "LLAMAEDGE_PROMPT_TEMPLATE": prompt_template,
        "LLAMAEDGE_CTX_SIZE": str(model.n_ctx),
        "LLAMAEDGE_PARALLEL": str(model.parallel),
        "LLAMAEDGE_MODEL_CAPABILITIES": ",".join(capabilities),
    })
    return env


class LibraryGraphSource:
    """The library as WASI-NN apps see it: a name a member has loads (if need be) and is held
    for the app instance. Library errors become WASI-NN codes here, the one seam."""

    def __init__(self, library: Library[Model]) -> None:
        self.library = library

    def has(self, name: str) -> bool:
        return name in self.library.names()

    def acquire(self, name: str) -> GraphLease:
        try:
            lease: Lease[Model] = self.library.acquire(name)
        except UnknownModel as err:
            raise NNError(Errno.NOT_FOUND, str(err)) from err
        except (NoRoom, ModelDownloading) as err:
            raise NNError(Errno.BUSY, str(err)) from err
        except LibraryError as err:
            raise NNError(Errno.RUNTIME_ERROR, str(err)) from err
        return lease
