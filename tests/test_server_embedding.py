"""A separate embedding model (`ServeConfig.embedding_model`): loaded beside the chat model,
offered to the app as the graph "embedding", named in the app's environment and in /health."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from llamaedge.server import EMBEDDING_GRAPH, MODEL_GRAPH, ServerState
from llamaedge.types import ResolvedModel
from tests.test_server_host_errors import ENV_DUMP, app_environment
from tests.test_server_http import config_for, running
from tests.wat_apps import write_app


def graph_probe(name: str) -> str:
    """Answers with two digits: load_by_name(name)'s errno, then the graph id it got."""
    escaped = "".join(f"\\{b:02x}" for b in name.encode())
    return f"""(module
  (import "wasi_ephemeral_nn" "load_by_name" (func $load_by_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "Content-Type: text/plain\\0a\\0a")
  (data (i32.const 1024) "{escaped}")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (i32.store8 (i32.const 200) (i32.add (i32.const 48)
      (call $load_by_name (i32.const 1024) (i32.const {len(name.encode())}) (i32.const 100))))
    (i32.store8 (i32.const 201) (i32.add (i32.const 48) (i32.load (i32.const 100))))
    (call $write (i32.const 64) (i32.const 26))
    (call $write (i32.const 200) (i32.const 2))))"""


def embedding_copy(tiny_model: Path, tmp_path: Path) -> ResolvedModel:
    path = tmp_path / "tiny-embed.gguf"
    shutil.copyfile(tiny_model, path)
    return ResolvedModel(path=path, model_id="tiny-embed")


def test_the_embedding_model_is_the_graph_named_embedding(tmp_path: Path, tiny_model: Path) -> None:
    embedding = embedding_copy(tiny_model, tmp_path)
    apps = {name: write_app(tmp_path, f"probe-{name}.wasm", graph_probe(name)) for name in (MODEL_GRAPH, EMBEDDING_GRAPH)}
    answers = {}
    for name, app in apps.items():
        with running(ServerState(config_for(tiny_model, app, embedding_model=embedding))) as url:
            answers[name] = httpx.get(f"{url}/v1/probe").text
    # Both load (errno 0), as two different graphs: the chat model first.
    assert answers == {MODEL_GRAPH: "00", EMBEDDING_GRAPH: "01"}


def test_without_an_embedding_model_there_is_no_embedding_graph(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "probe.wasm", graph_probe(EMBEDDING_GRAPH))
    with running(ServerState(config_for(tiny_model, app))) as url:
        assert httpx.get(f"{url}/v1/probe").text[0] == "8"  # NOT_FOUND


def test_the_app_is_told_the_embedding_model_and_its_graph(tmp_path: Path, tiny_model: Path) -> None:
    embedding = embedding_copy(tiny_model, tmp_path)
    app = write_app(tmp_path, "env.wasm", ENV_DUMP)
    state = ServerState(config_for(tiny_model, app, embedding_model=embedding))
    with running(state) as url:
        env = app_environment(httpx.get(f"{url}/v1/env").text)
        assert env["LLAMAEDGE_EMBEDDING_MODEL_ID"] == "tiny-embed"
        assert env["LLAMAEDGE_EMBEDDING_GRAPH"] == EMBEDDING_GRAPH
        assert env["LLAMAEDGE_MODEL_ID"] == "tiny-chat" and env["LLAMAEDGE_MODEL_GRAPH"] == MODEL_GRAPH
        # The embedding model's context is its own (the tiny model's 2048), not --ctx-size.
        assert state.embedding is not None and state.embedding.n_ctx == 2048
        assert env["LLAMAEDGE_CTX_SIZE"] == "512"
        assert env["LLAMAEDGE_PARALLEL"] == str(state.model.parallel)
    plain = write_app(tmp_path, "env2.wasm", ENV_DUMP)
    with running(ServerState(config_for(tiny_model, plain))) as url:
        env = app_environment(httpx.get(f"{url}/v1/env").text)
    assert "LLAMAEDGE_EMBEDDING_MODEL_ID" not in env and "LLAMAEDGE_EMBEDDING_GRAPH" not in env


def test_health_names_both_models_and_waits_for_both(tmp_path: Path, tiny_model: Path) -> None:
    embedding = embedding_copy(tiny_model, tmp_path)
    app = write_app(tmp_path, "env.wasm", ENV_DUMP)
    state = ServerState(config_for(tiny_model, app, embedding_model=embedding))
    with running(state, load=False) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "loading"
        state.load()
        health = httpx.get(f"{url}/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model": "tiny-chat", "embedding_model": "tiny-embed"}


def test_an_embedding_model_that_cannot_load_fails_the_server(tmp_path: Path, tiny_model: Path) -> None:
    bogus = tmp_path / "bogus-embed.gguf"
    bogus.write_bytes(b"GGUF but not really")
    app = write_app(tmp_path, "env.wasm", ENV_DUMP)
    state = ServerState(config_for(tiny_model, app, embedding_model=ResolvedModel(path=bogus, model_id="bogus-embed")))
    with running(state, load=False) as url:
        state.load()
        health = httpx.get(f"{url}/health")
    assert health.status_code == 503
    assert health.json()["status"] == "error" and "bogus-embed.gguf" in health.json()["error"]
