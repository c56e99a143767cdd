"""Who is in the library (the models folder, the catalog, --model specs), what their GGUF
headers say (checked against llama.cpp's own reading), and pull: a download with progress
events, cancelled by unload and resumed, against the fake hub."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest

from llamaedge import catalog, download, settings
from llamaedge.engine.gguf import file_metadata
from llamaedge.errors import ModelError, UsageError
from llamaedge.library import (Library, LibraryConfig, LibraryEvent, MemberSource, ModelStateError, Source, Status,
                               discover, from_specs)
from llamaedge.library.gguf_header import read_facts
from tests.fakehub import FakeHub, hub  # noqa: F401 - the fixture
from tests.library_fakes import FakeLoader, bytes_arrived, cpu_probe, next_event
from tests.tiny_gguf import N_EMBD, N_FF, N_HEAD, N_HEAD_KV, N_LAYER, write_tiny_gguf, write_tiny_reranker


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


def _place(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- the GGUF header -------------------------------------------------------------------------


def test_the_header_reads_as_llama_cpp_reads_it(tiny_model: Path, smollm2_model: Path) -> None:
    for path in (tiny_model, smollm2_model):
        facts = read_facts(path)
        theirs = file_metadata(path)
        assert facts.metadata and all(theirs[key] == value for key, value in facts.metadata.items())
        # What it leaves out are the arrays (tokens, merges, ...), which llama.cpp summarizes.
        assert all(key.startswith("tokenizer.ggml.") for key in set(theirs) - set(facts.metadata))
    tiny = read_facts(tiny_model)
    assert (tiny.n_layers, tiny.n_heads, tiny.n_kv_heads, tiny.n_embd, tiny.n_ff, tiny.head_dim, tiny.n_ctx_train) == (
        N_LAYER, N_HEAD, N_HEAD_KV, N_EMBD, N_FF, N_EMBD // N_HEAD, 2048)
    smol = read_facts(smollm2_model)
    assert (smol.n_layers, smol.n_kv_heads, smol.head_dim, smol.n_vocab, smol.size_bytes) == (
        30, 3, 64, 49152, smollm2_model.stat().st_size)


def test_a_file_that_is_not_a_whole_gguf_header_is_a_model_error(smollm2_model: Path, tmp_path: Path) -> None:
    cut = _place(tmp_path / "cut.gguf", smollm2_model.read_bytes()[:5000])
    with pytest.raises(ModelError, match="cannot read the GGUF header of cut.gguf"):
        read_facts(cut)
    for name, data in (("text.gguf", b"hello, world\n" * 10), ("empty.gguf", b"")):
        with pytest.raises(ModelError, match=f"cannot read the GGUF header of {name}"):
            read_facts(_place(tmp_path / name, data))


# -- discovery -------------------------------------------------------------------------------


def test_the_models_folder_and_the_catalog_make_the_library(gguf_bytes: bytes) -> None:
    models = settings.models_dir()
    minilm = catalog.find_entry("all-minilm-l6-v2")
    assert minilm is not None and minilm.repo
    _place(models.joinpath(*minilm.repo.split("/"), minilm.file), gguf_bytes)  # a catalog download
    _place(models / "mine.gguf", gguf_bytes)
    _place(models / "a" / "twin.gguf", gguf_bytes)
    _place(models / "b" / "twin.gguf", gguf_bytes)
    _place(models / "vision" / "mmproj-model-f16.gguf", gguf_bytes)  # a projector: not a model
    _place(models / "url" / "host" / "half.gguf.part", gguf_bytes[:100])  # a download under way

    found = {m.name: m for m in discover(models)}
    assert found["all-minilm-l6-v2"].source is Source.MODELS_DIR and found["all-minilm-l6-v2"].entry is minilm
    assert found["all-minilm-l6-v2"].spec == "all-minilm-l6-v2"
    assert found["mine"] == MemberSource("mine", Source.MODELS_DIR, models / "mine.gguf")
    assert {"a/twin", "b/twin"} <= set(found) and "twin" not in found
    assert not any("mmproj" in name or "half" in name for name in found)
    embedded = found[catalog.EMBEDDED_NAME]
    assert embedded.source is Source.PACKAGE and embedded.path is not None and embedded.spec is None
    others = [e for e in catalog.load_catalog() if not e.embedded and e.name != "all-minilm-l6-v2"]
    for entry in others:
        assert found[entry.name] == MemberSource(entry.name, Source.CATALOG, None, entry, entry.name, entry.prompt_template)
    assert len(found) == 4 + 1 + len(others)


def test_a_model_in_a_folder_of_its_own_gets_the_folders_projector(gguf_bytes: bytes) -> None:
    """The models folder's layout, after llama-server's router: a projector (a name containing
    `mmproj`) pairs with the models of its subfolder; files in the folder itself get none; a
    catalog entry gets the projector it names, and none when it names none."""
    models = settings.models_dir()
    vision = _place(models / "vision" / "mmproj-model-f16.gguf", b"projector")
    _place(models / "vision" / "seeing-q4.gguf", gguf_bytes)
    _place(models / "vision" / "seeing-q8.gguf", gguf_bytes)
    _place(models / "vision" / "Seeing-MMPROJ-q8.gguf", b"projector")  # contains the mark: not a model either
    _place(models / "top.gguf", gguf_bytes)
    _place(models / "mmproj-top.gguf", b"projector")  # at the top: pairs with nothing
    _place(models / "plain" / "blind.gguf", gguf_bytes)
    qwen, minilm = catalog.find_entry("qwen3.5-0.8b"), catalog.find_entry("all-minilm-l6-v2")
    assert qwen is not None and qwen.mmproj is not None and minilm is not None and minilm.mmproj is None
    qwen_file = _place(models.joinpath(*qwen.repo.split("/"), qwen.file), gguf_bytes)
    qwen_projector = _place(qwen_file.with_name(qwen.mmproj.file), b"projector")
    _place(qwen_file.with_name("mmproj-other.gguf"), b"projector")  # not the one the entry names
    minilm_file = _place(models.joinpath(*minilm.repo.split("/"), minilm.file), gguf_bytes)
    _place(minilm_file.with_name("mmproj-stray.gguf"), b"projector")  # the entry says it has none

    found = {m.name: m for m in discover(models)}
    assert not any("mmproj" in name.lower() for name in found)
    # Several projectors in one folder: the first by name ("Seeing-..." sorts before "mmproj-...").
    assert found["seeing-q4"].mmproj == found["seeing-q8"].mmproj == models / "vision" / "Seeing-MMPROJ-q8.gguf"
    assert vision.is_file() and found["top"].mmproj is None and found["blind"].mmproj is None
    assert found["qwen3.5-0.8b"].mmproj == qwen_projector and found["all-minilm-l6-v2"].mmproj is None
    # --model names: the same rule for the files it names in the models folder.
    named = {m.name: m for m in from_specs([str(models / "vision" / "seeing-q4.gguf"), str(models / "top.gguf"),
                                             "qwen3.5-0.8b"], models)}
    assert named["seeing-q4"].mmproj == found["seeing-q4"].mmproj and named["top"].mmproj is None
    assert named["qwen3.5-0.8b"].mmproj == qwen_projector
    # A start model by path is paired the same way (catalog.resolve_model).
    assert catalog.resolve_model(str(models / "vision" / "seeing-q8.gguf")).mmproj == found["seeing-q8"].mmproj
    assert catalog.resolve_model(str(qwen_file)).mmproj == qwen_projector
    assert catalog.resolve_model(str(models / "top.gguf")).mmproj is None


def test_a_member_with_a_projector_reads_images_loads_it_and_counts_it(gguf_bytes: bytes) -> None:
    models = settings.models_dir()
    projector = _place(models / "seeing" / "mmproj-f16.gguf", bytes(3 * 2**20))
    _place(models / "seeing" / "seeing.gguf", gguf_bytes)
    _place(models / "blind" / "blind.gguf", gguf_bytes)
    # A reranker beside a projector: a text encoder, loaded without it.
    write_tiny_reranker(_place(models / "rank" / "ranker.gguf", b""))
    _place(models / "rank" / "mmproj-f16.gguf", b"projector")
    loader = FakeLoader()
    loader.inspect = read_facts  # type: ignore[method-assign]
    library = Library(loader, LibraryConfig(idle_unload_s=0), members=lambda: discover(models), probe=cpu_probe())
    try:
        members = {m.name: m for m in library.members()}
        seeing, blind = members["seeing"], members["blind"]
        assert seeing.capabilities == ["chat", "vision"] and blind.capabilities == ["chat"]
        assert members["ranker"].capabilities == ["rerank"]
        assert seeing.need is not None and blind.need is not None
        assert seeing.need.ram_bytes - blind.need.ram_bytes == projector.stat().st_size
        with library.acquire("seeing"), library.acquire("blind"), library.acquire("ranker"):
            pass
        assert [o.mmproj for o in loader.options] == [projector, None, None]
        # A projector put beside a member later is taken at the next rescan.
        later = _place(models / "blind" / "mmproj-later.gguf", b"projector")
        events = library.subscribe()
        library.unload("blind")
        next_event(events, "blind", status="unloaded")
        library.rescan()
        assert library.info("blind").capabilities == ["chat", "vision"]
        later.unlink()
        library.rescan()
        assert library.info("blind").capabilities == ["chat"]
    finally:
        library.close()


def test_model_specs_name_the_members(tiny_model: Path, gguf_bytes: bytes) -> None:
    models = settings.models_dir()
    hf = "hf:acme/Tiny-GGUF/tiny-q8_0.gguf"
    found = from_specs([str(tiny_model), "qwen3.5-0.8b", hf, catalog.EMBEDDED_NAME], models)
    assert [(m.name, m.source, m.path is not None) for m in found] == [
        ("tiny-chat", Source.EXPLICIT, True), ("qwen3.5-0.8b", Source.EXPLICIT, False),
        ("tiny-q8_0", Source.EXPLICIT, False), (catalog.EMBEDDED_NAME, Source.EXPLICIT, True)]
    assert found[2].spec == hf and found[0].spec is None
    _place(models / "acme" / "Tiny-GGUF" / "tiny-q8_0.gguf", gguf_bytes)
    assert from_specs([hf], models)[0].path == models / "acme" / "Tiny-GGUF" / "tiny-q8_0.gguf"
    with pytest.raises(UsageError, match="names tiny-chat more than once"):
        from_specs([str(tiny_model), str(tiny_model)], models)
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        from_specs(["no-such-model"], models)


def test_members_list_what_their_headers_and_the_catalog_say(tiny_model: Path, gguf_bytes: bytes) -> None:
    models = settings.models_dir()
    _place(models / "mine.gguf", gguf_bytes)
    loader = FakeLoader()
    loader.inspect = read_facts  # type: ignore[method-assign]
    library = Library(loader, LibraryConfig(idle_unload_s=0), members=lambda: discover(models), probe=cpu_probe())
    try:
        members = {m.name: m for m in library.members()}
        mine = members["mine"]
        assert mine.capabilities == ["chat"] and mine.context_length == 2048 and mine.downloaded
        assert mine.size_bytes == len(gguf_bytes) and mine.fits and mine.status is Status.UNLOADED
        qwen = members["qwen3.5-0.8b"]
        entry = catalog.find_entry("qwen3.5-0.8b")
        assert entry is not None
        # A vision model not downloaded: pull brings its projector, so it reads images once pulled.
        assert (qwen.capabilities, qwen.size_bytes, qwen.context_length, qwen.downloaded) == (
            ["chat", "tools", "thinking", "vision"], entry.size_bytes, 4096, False)
        assert qwen.need is not None and qwen.need.ram_bytes == entry.memory_bytes
        with pytest.raises(ModelStateError, match="'qwen3.5-0.8b' is not downloaded") as err:
            library.acquire("qwen3.5-0.8b")
        assert err.value.code == "model_not_downloaded" and "POST /models/pull" in (err.value.hint or "")
        with pytest.raises(ModelStateError) as err:
            library.pull("mine")
        assert err.value.code == "model_already_downloaded"
        with pytest.raises(ModelStateError) as err:
            library.pull(catalog.EMBEDDED_NAME)
        assert err.value.code == "model_already_downloaded"
        # A file added later joins at the next rescan; one removed leaves.
        _place(models / "later.gguf", gguf_bytes)
        (models / "mine.gguf").unlink()
        events = library.subscribe()
        library.rescan()
        assert "later" in library.names() and "mine" not in library.names()
        assert next_event(events, "mine", "model_remove") == LibraryEvent("mine", "model_remove")
        assert next_event(events, "*", "models_reload") == LibraryEvent("*", "models_reload")
    finally:
        library.close()


# -- pull ------------------------------------------------------------------------------------

REPO, FILE = "acme/Tiny-Chat-GGUF", "tiny-chat-q8_0.gguf"


@pytest.fixture
def hub_catalog(hub: FakeHub, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:  # noqa: F811
    """The fake hub serving one file, and a catalog whose entry `tiny-hub` is that file."""
    hub.add(REPO, FILE, gguf_bytes)
    embedded = catalog.find_entry(catalog.EMBEDDED_NAME)
    entry = catalog.CatalogEntry(
        name="tiny-hub", description="the tiny model on the fake hub", kind="chat", capabilities=("chat",),
        source="huggingface", file=FILE, quantization="Q8_0", size_bytes=len(gguf_bytes), parameters="1M",
        context_length=2048, license="apache-2.0", prompt_template="auto", memory_bytes=64 * 2**20, repo=REPO,
        sha256=hashlib.sha256(gguf_bytes).hexdigest())
    monkeypatch.setattr(catalog, "load_catalog", lambda: (entry, embedded))
    yield hub


def _library(loader: FakeLoader | None = None) -> Library[object]:
    loader = loader or FakeLoader()
    loader.inspect = read_facts  # type: ignore[method-assign]
    models = settings.models_dir()
    return Library(loader, LibraryConfig(idle_unload_s=0), members=lambda: discover(models),  # type: ignore[arg-type]
                   probe=cpu_probe())


def test_pull_downloads_with_progress_events_then_the_model_loads(hub_catalog: FakeHub, gguf_bytes: bytes) -> None:
    library = _library()
    try:
        assert library.info("tiny-hub").status is Status.UNLOADED and not library.info("tiny-hub").downloaded
        events = library.subscribe()
        library.pull("tiny-hub")
        assert next_event(events, "tiny-hub", status="downloading").data == {"status": "downloading"}
        progress = next_event(events, "tiny-hub", "download_progress").data
        assert progress is not None and progress[f"{REPO}/{FILE}"]["total"] == len(gguf_bytes)
        assert next_event(events, "tiny-hub", "download_finished") == LibraryEvent("tiny-hub", "download_finished")
        assert next_event(events, "tiny-hub", status="unloaded").data == {"status": "unloaded"}
        info = library.info("tiny-hub")
        assert info.downloaded and info.source == "models_dir" and info.progress is None
        assert (settings.models_dir() / REPO / FILE).read_bytes() == gguf_bytes
        with library.acquire("tiny-hub"):
            pass
    finally:
        library.close()


def test_unload_cancels_a_pull_and_the_next_pull_resumes(
    hub_catalog: FakeHub, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small chunks, and the hub holds the file part way until the cancel has been asked for
    # (a cancel takes effect at the next chunk the download receives).
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    hub_catalog.hold_at_byte = 64 * 1024
    library = _library()
    dest = settings.models_dir() / REPO / FILE
    try:
        events = library.subscribe()
        library.pull("tiny-hub")
        with pytest.raises(ModelStateError) as err:
            library.pull("tiny-hub")
        assert err.value.code == "model_already_downloading"
        first = bytes_arrived(events, "tiny-hub")
        assert first is not None
        assert library.info("tiny-hub").status is Status.DOWNLOADING
        assert library.info("tiny-hub").progress == first
        library.unload("tiny-hub")
        hub_catalog.release.set()
        assert next_event(events, "tiny-hub", "download_failed").data == {"reason": "cancelled"}
        assert next_event(events, "tiny-hub", status="unloaded").data == {"status": "unloaded", "reason": "cancelled"}
        assert not dest.exists() and 0 < download.partial_bytes(dest) < len(gguf_bytes)

        library.pull("tiny-hub")
        next_event(events, "tiny-hub", "download_finished")
        assert dest.read_bytes() == gguf_bytes
        ranges = [r.range for r in hub_catalog.requests if r.method == "GET"]
        assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    finally:
        library.close()


def test_a_failed_download_is_a_failed_status_with_the_reason(hub_catalog: FakeHub) -> None:
    hub_catalog.files.clear()
    hub_catalog.add(REPO, "another-file.gguf", b"GGUF")
    library = _library()
    try:
        events = library.subscribe()
        library.pull("tiny-hub")
        failed = next_event(events, "tiny-hub", "download_failed").data
        assert failed is not None and f"{FILE} was not found in {REPO}" in failed["reason"]
        info = library.info("tiny-hub")
        assert info.status is Status.FAILED and f"{FILE} was not found" in (info.failure or "")
        with pytest.raises(ModelStateError):  # not downloaded: pull again, not load
            library.acquire("tiny-hub")
    finally:
        library.close()



def test_pull_of_a_vision_model_brings_its_projector(hub_catalog: FakeHub, gguf_bytes: bytes,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    projector = b"GGUF projector bytes"
    hub_catalog.add(REPO, "mmproj-F16.gguf", projector)
    (entry, embedded) = catalog.load_catalog()
    seeing = dataclasses.replace(entry, capabilities=("chat", "vision"), mmproj=catalog.Projector(
        "mmproj-F16.gguf", len(projector), hashlib.sha256(projector).hexdigest()))
    monkeypatch.setattr(catalog, "load_catalog", lambda: (seeing, embedded))
    loader = FakeLoader()
    library = _library(loader)
    try:
        assert "vision" in library.info("tiny-hub").capabilities  # pull will bring the projector
        events = library.subscribe()
        library.pull("tiny-hub")
        next_event(events, "tiny-hub", "download_finished")
        dest = settings.models_dir() / REPO / "mmproj-F16.gguf"
        assert dest.read_bytes() == projector and "vision" in library.info("tiny-hub").capabilities
        with library.acquire("tiny-hub"):
            pass
        assert loader.options[-1].mmproj == dest
    finally:
        library.close()
