"""The real download path (huggingface_hub's client) against the local fake hub: progress,
resume, checksums, hub errors, offline mode and the disk check."""

from __future__ import annotations

import hashlib
import json
from collections import namedtuple
from pathlib import Path

import huggingface_hub.constants
import pytest

from llamaedge import catalog, download, settings
from llamaedge.download import ProgressEvent, RemoteFile
from llamaedge.errors import DownloadError, OfflineError
from tests.conftest import free_port
from tests.fakehub import FakeHub, hub  # noqa: F401 - the fixture

REPO = "acme/Tiny-Chat-GGUF"
FILE = "tiny-chat-q8_0.gguf"


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.tiny_gguf import write_tiny_gguf

    path = tmp_path_factory.mktemp("hubfiles") / FILE
    write_tiny_gguf(path)
    return path.read_bytes()


def _dest(tmp_path: Path) -> Path:
    return tmp_path / "models" / REPO / FILE


def test_download_reports_progress_verifies_and_moves_into_place(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path) -> None:
    hub.add(REPO, FILE, gguf_bytes)
    events: list[ProgressEvent] = []
    dest = download.download(RemoteFile(FILE, repo=REPO), _dest(tmp_path), on_progress=events.append)

    assert dest.read_bytes() == gguf_bytes
    assert not download.partial_path(dest).exists()
    statuses = [e.status for e in events]
    assert statuses[0] == "resolving"
    assert "downloading" in statuses and statuses[-2:] == ["verifying", "done"]
    downloading = [e.completed for e in events if e.status == "downloading"]
    assert downloading == sorted(downloading), "progress never goes backwards"
    assert all(e.total == len(gguf_bytes) for e in events if e.status != "resolving")
    assert events[-1].completed == len(gguf_bytes)
    assert [r.method for r in hub.requests] == ["HEAD", "GET"]


def test_cut_connection_is_resumed_with_a_range_request(
    hub: FakeHub, gguf_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client hands over data in 10 MB chunks; smaller ones let a 0.5 MB file be cut mid-way
    # after some of it was written, as a multi-gigabyte model would be.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 50_000)
    hub.add(REPO, FILE, gguf_bytes)
    hub.cut_first_get_after_bytes = 200_000
    dest = download.download(RemoteFile(FILE, repo=REPO), _dest(tmp_path))

    assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashlib.sha256(gguf_bytes).hexdigest()
    gets = hub.gets(FILE)
    assert len(gets) == 2
    assert gets[0].range is None
    assert gets[1].range == "bytes=200000-"


def test_a_kept_partial_is_resumed_by_a_later_run(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path) -> None:
    hub.add(REPO, FILE, gguf_bytes)
    dest = _dest(tmp_path)
    dest.parent.mkdir(parents=True)
    download.partial_path(dest).write_bytes(gguf_bytes[:123_456])
    dest.with_name(dest.name + ".part.json").write_text(
        json.dumps({"etag": hashlib.sha256(gguf_bytes).hexdigest()})
    )
    events: list[ProgressEvent] = []
    download.download(RemoteFile(FILE, repo=REPO), dest, on_progress=events.append)

    assert dest.read_bytes() == gguf_bytes
    assert hub.gets(FILE)[0].range == "bytes=123456-"
    first = next(e for e in events if e.status == "downloading")
    assert first.completed == 123_456


def test_a_partial_of_another_version_is_discarded(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path) -> None:
    hub.add(REPO, FILE, gguf_bytes)
    dest = _dest(tmp_path)
    dest.parent.mkdir(parents=True)
    download.partial_path(dest).write_bytes(b"x" * 1000)
    dest.with_name(dest.name + ".part.json").write_text(json.dumps({"etag": "0" * 64}))
    download.download(RemoteFile(FILE, repo=REPO), dest)

    assert dest.read_bytes() == gguf_bytes
    assert hub.gets(FILE)[0].range is None


def test_checksum_mismatch_removes_the_file_and_says_so(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path) -> None:
    hub.add(REPO, FILE, gguf_bytes, advertised_sha256=hashlib.sha256(b"other content").hexdigest())
    dest = _dest(tmp_path)
    with pytest.raises(DownloadError, match="checksum mismatch .* the file was removed") as caught:
        download.download(RemoteFile(FILE, repo=REPO), dest)
    assert "run the command again" in (caught.value.hint or "")
    assert not dest.exists()
    assert not download.partial_path(dest).exists()


def test_catalog_checksum_is_checked_when_the_hub_gives_none(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path) -> None:
    hub.add(REPO, FILE, gguf_bytes, advertised_sha256="")  # a git etag, not an LFS sha256
    dest = _dest(tmp_path)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download.download(RemoteFile(FILE, repo=REPO, sha256="f" * 64), dest)
    assert not dest.exists() and not download.partial_path(dest).exists()

    good = RemoteFile(FILE, repo=REPO, sha256=hashlib.sha256(gguf_bytes).hexdigest())
    assert download.download(good, dest).read_bytes() == gguf_bytes


def test_catalog_checksum_disagreeing_with_the_hub_fails_before_downloading(
    hub: FakeHub, gguf_bytes: bytes, tmp_path: Path
) -> None:
    hub.add(REPO, FILE, gguf_bytes)
    with pytest.raises(DownloadError, match="hub now serves a different file"):
        download.download(RemoteFile(FILE, repo=REPO, sha256="e" * 64), _dest(tmp_path))
    assert hub.gets(FILE) == []


def test_missing_file_is_a_clear_404(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path) -> None:
    hub.add(REPO, FILE, gguf_bytes)
    with pytest.raises(DownloadError, match=f"missing.gguf was not found in {REPO}") as caught:
        download.download(RemoteFile("missing.gguf", repo=REPO), _dest(tmp_path))
    assert f"{REPO}/tree/main" in (caught.value.hint or "")


def test_missing_repository_is_reported(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="repository nobody/nothing was not found") as caught:
        download.download(RemoteFile(FILE, repo="nobody/nothing"), _dest(tmp_path))
    assert "HF_TOKEN" in (caught.value.hint or "")


def test_gated_repository_says_how_to_log_in(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path) -> None:
    hub.add("meta/Gated-GGUF", FILE, gguf_bytes)
    hub.gated.add("meta/Gated-GGUF")
    with pytest.raises(DownloadError, match="gated repository") as caught:
        download.download(RemoteFile(FILE, repo="meta/Gated-GGUF"), _dest(tmp_path))
    hint = caught.value.hint or ""
    assert "hf auth login" in hint and "HF_TOKEN" in hint and f"{hub.url}/meta/Gated-GGUF" in hint


def test_offline_mode_refuses_to_download(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(REPO, FILE, gguf_bytes)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE is set"):
        download.download(RemoteFile(FILE, repo=REPO), _dest(tmp_path))
    assert hub.requests == []


def test_offline_mode_uses_what_is_already_downloaded(
    hub: FakeHub, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add(REPO, FILE, gguf_bytes)
    spec = f"hf:{REPO}/{FILE}"
    first = catalog.resolve_model(spec, on_progress=lambda event: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests_before = len(hub.requests)
    again = catalog.resolve_model(spec)
    assert again.path == first.path == settings.models_dir() / REPO / FILE
    assert again.model_id == "tiny-chat-q8_0"
    assert len(hub.requests) == requests_before


def test_unreachable_hub_is_an_offline_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(OfflineError, match="cannot reach http://127.0.0.1") as caught:
        download.download(RemoteFile(FILE, repo=REPO), _dest(tmp_path))
    assert "network" in (caught.value.hint or "")


def test_not_enough_disk_space_stops_before_downloading(
    hub: FakeHub, gguf_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add(REPO, FILE, gguf_bytes)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match="not enough disk space") as caught:
        download.download(RemoteFile(FILE, repo=REPO), _dest(tmp_path))
    assert "--models-dir" in (caught.value.hint or "")
    assert hub.gets(FILE) == []


def test_plain_url_download(hub: FakeHub, gguf_bytes: bytes) -> None:
    hub.plain_files["mirror-model.gguf"] = gguf_bytes
    url = f"{hub.url}/files/mirror-model.gguf"
    model = catalog.resolve_model(url, on_progress=lambda event: None)
    assert model.model_id == "mirror-model"
    assert model.path.read_bytes() == gguf_bytes
    assert model.path.parent.parent == settings.models_dir() / "url"


def test_plain_url_404(hub: FakeHub) -> None:
    with pytest.raises(DownloadError, match=r"not found \(HTTP 404\)"):
        catalog.resolve_model(f"{hub.url}/files/absent.gguf", on_progress=lambda event: None)


def test_human_bytes() -> None:
    assert download.human_bytes(999) == "999 B"
    assert download.human_bytes(1_500_000) == "1.5 MB"
    assert download.human_bytes(4_920_000_000) == "4.9 GB"


def test_a_vision_entry_brings_its_projector_verified(hub: FakeHub, gguf_bytes: bytes, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.tiny_gguf import write_tiny_mmproj

    projector = write_tiny_mmproj(tmp_path / "mmproj-tiny.gguf").read_bytes()
    hub.add(REPO, FILE, gguf_bytes)
    hub.add(REPO, "mmproj-tiny.gguf", projector)
    entry = {"name": "tiny-vision", "description": "a tiny vision model", "kind": "chat",
             "capabilities": ["chat", "vision"], "source": "huggingface", "repo": REPO, "file": FILE,
             "revision": "main", "quantization": "Q8_0", "size_bytes": len(gguf_bytes),
             "sha256": hashlib.sha256(gguf_bytes).hexdigest(), "parameters": "1M", "context_length": 2048,
             "license": "apache-2.0", "prompt_template": "auto", "memory_bytes": 10_000_000,
             "mmproj": {"file": "mmproj-tiny.gguf", "size_bytes": len(projector), "sha256": "0" * 64}}
    own = tmp_path / "catalog.json"
    monkeypatch.setenv("LLAMAEDGE_CATALOG", str(own))

    def use(entry: dict) -> None:
        own.write_text(json.dumps({"models": [entry]}))
        catalog.load_catalog.cache_clear()  # (read once per process)

    try:
        use(entry)
        with pytest.raises(DownloadError, match="checksum mismatch"):
            catalog.resolve_model("tiny-vision", on_progress=lambda event: None)
        use({**entry, "mmproj": {**entry["mmproj"], "sha256": hashlib.sha256(projector).hexdigest()}})
        model = catalog.resolve_model("tiny-vision", on_progress=lambda event: None)
        assert model.mmproj is not None and model.mmproj.read_bytes() == projector
        assert model.mmproj.parent == model.path.parent
        # Without pull, a projector not downloaded leaves the model text-only.
        model.mmproj.unlink()
        assert catalog.resolve_model("tiny-vision", pull=False).mmproj is None
    finally:
        monkeypatch.delenv("LLAMAEDGE_CATALOG")
        catalog.load_catalog.cache_clear()
