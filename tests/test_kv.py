"""The key-value store apps get through `llamaedge_kv` (runtime/kv.py): the store itself (quota,
namespaces, a reopened file), and end to end through mounted chat-server apps, whose stored
responses live there: isolation between apps, an app its policy does not grant the store, and an
app at its quota."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamaedge.runtime.kv import KeyValueStore, QuotaExceeded
from llamaedge.server import default_app_path
from tests.conftest import ServerProcess, serving

MODEL = "tiny-chat"


def test_values_are_kept_per_namespace_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite3"
    store = KeyValueStore(path)
    store.set("a", "k", b"one", quota_bytes=100)
    store.set("b", "k", b"two", quota_bytes=100)
    assert store.get("a", "k") == b"one" and store.get("b", "k") == b"two" and store.get("c", "k") is None
    assert store.delete("a", "k") and not store.delete("a", "k")
    assert store.get("b", "k") == b"two"
    store.close()
    assert KeyValueStore(path).get("b", "k") == b"two"


def test_the_quota_counts_keys_and_values_and_a_refused_set_writes_nothing(tmp_path: Path) -> None:
    store = KeyValueStore(tmp_path / "kv.sqlite3")
    store.set("a", "key", b"x" * 7, quota_bytes=10)  # 3 + 7 bytes: exactly the quota
    assert store.used_bytes("a") == 10
    with pytest.raises(QuotaExceeded):
        store.set("a", "k2", b"", quota_bytes=10)
    assert store.get("a", "k2") is None and store.used_bytes("a") == 10
    # replacing a value counts its new size, not both
    store.set("a", "key", b"y" * 7, quota_bytes=10)
    assert store.get("a", "key") == b"y" * 7
    # another namespace has its own quota
    store.set("b", "key", b"x" * 7, quota_bytes=10)


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    app = default_app_path()
    with serving(tmp_path_factory.mktemp("kv-home"), "--model", str(tiny_model), "--threads", "2", "--ctx-size", "512",
                 "--app", f"/granted={app}", "--app-policy", "/granted:kv=1MiB",
                 "--app", f"/small={app}", "--app-policy", "/small:kv=64KiB",
                 "--app", f"/denied={app}") as server:
        yield server


def create(server: ServerProcess, prefix: str, metadata: dict[str, str] | None = None) -> str:
    response = httpx.post(f"{server.base_url}{prefix}/v1/responses", timeout=120,
                          json={"model": MODEL, "input": "Hello", "max_output_tokens": 2, "metadata": metadata or {}})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def status_of(server: ServerProcess, prefix: str, response_id: str) -> int:
    return httpx.get(f"{server.base_url}{prefix}/v1/responses/{response_id}", timeout=60).status_code


def test_each_app_sees_only_its_own_keys(server: ServerProcess) -> None:
    granted = create(server, "/granted")
    builtin = create(server, "")
    assert status_of(server, "/granted", granted) == 200 and status_of(server, "", builtin) == 200
    # the same app (chat-server.wasm) mounted elsewhere, and the host's own, have other namespaces
    assert status_of(server, "", granted) == 404 and status_of(server, "/small", granted) == 404
    assert status_of(server, "/granted", builtin) == 404


def test_an_app_not_granted_the_store_still_answers_and_keeps_nothing(server: ServerProcess) -> None:
    response_id = create(server, "/denied")
    assert status_of(server, "/denied", response_id) == 404
    assert "chat-server.wasm is not granted the key-value store" in server.log()
    assert f"{response_id}: not stored (Denied)" in server.log()


def test_an_app_at_its_quota_keeps_nothing_more(server: ServerProcess) -> None:
    small = create(server, "/small")
    assert status_of(server, "/small", small) == 200
    # 80 KB of metadata, which the stored response carries (and the prompt does not): over 64 KiB
    too_big = create(server, "/small", {f"k{i}": "x" * 5000 for i in range(16)})
    assert status_of(server, "/small", too_big) == 404
    assert f"{too_big}: not stored (QuotaExceeded)" in server.log()
    assert status_of(server, "/small", small) == 200
