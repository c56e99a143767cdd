"""`serve --app`: user apps mounted beside the chat server, on the same engine, each with its
policy. Real uvicorn on a real port, real wasmtime, real llama.cpp (the tiny GGUF; the
review app on SmolLM2); the apps are small WAT modules, the chat-server app, and the
review app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llamaedge.errors import UsageError
from llamaedge.mount import Mount, load_mounts, reserved_paths
from llamaedge.runtime.guard import RunGuard
from llamaedge.server import ServeConfig, ServerState, default_app_path, mounted_app_routes, webui_routes_or_none
from llamaedge.types import ResolvedModel
from tests.conftest import REPO_ROOT, free_port, serving
from tests.test_server_http import running
from tests.wat_apps import write_app

REVIEW_APP = REPO_ROOT / "llamaedge" / "apps" / "review.wasm"

# ---------------------------------------------------------------------------------------------
# WAT apps


def _data(offset: int, text: str) -> str:
    escaped = "".join(f"\\{b:02x}" for b in text.encode())
    return f'(data (i32.const {offset}) "{escaped}")'


_WASI = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $prestat_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "load" (func $load (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "load_by_name" (func $load_by_name (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "set_input" (func $set_input (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "compute_single" (func $compute_single (param i32) (result i32)))
  (memory (export "memory") 2)
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; tensor at 256: dims_ptr, dims_len, type, data_ptr, data_len
  (func $tensor (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 256) (i32.const 300)) (i32.store (i32.const 260) (i32.const 1))
    (i32.store (i32.const 264) (i32.const 0)) (i32.store (i32.const 268) (local.get $ptr))
    (i32.store (i32.const 272) (local.get $len)) (i32.const 256))
"""

_HEAD = "Content-Type: text/plain\n\n"

# Prints its environment (NUL-separated), then "\0DIR=<guest path>" when fd 3 is a
# preopened directory.
ENV_REPORTER = f"""(module {_WASI}
  {_data(64, _HEAD)} {_data(128, chr(0) + "DIR=")}
  (func (export "_start")
    (call $write (i32.const 64) (i32.const {len(_HEAD)}))
    (drop (call $env_sizes (i32.const 16) (i32.const 20)))
    (drop (call $env_get (i32.const 4096) (i32.const 16384)))
    (call $write (i32.const 16384) (i32.load (i32.const 20)))
    (if (i32.eqz (call $prestat (i32.const 3) (i32.const 24)))
      (then
        (drop (call $prestat_name (i32.const 3) (i32.const 60000) (i32.load (i32.const 28))))
        (call $write (i32.const 128) (i32.const 5))
        (call $write (i32.const 60000) (i32.load (i32.const 28)))))))"""

# Grows its memory a page at a time until refused, then traps (as an allocator would).
MEMORY_GROWER = f"""(module {_WASI}
  (func (export "_start")
    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))"""

RUNAWAY = f'(module {_WASI} (func (export "_start") (loop $l (br $l))))'


def loads_model(name: str) -> str:
    """load_by_name(name); answers 200 "loaded" or "refused" either way."""
    return f"""(module {_WASI}
  {_data(64, _HEAD)} {_data(128, "loaded")} {_data(144, "refused")} {_data(1024, name)}
  (func (export "_start")
    (if (call $load_by_name (i32.const 1024) (i32.const {len(name)}) (i32.const 100))
      (then (call $write (i32.const 64) (i32.const {len(_HEAD)})) (call $write (i32.const 144) (i32.const 7)))
      (else (call $write (i32.const 64) (i32.const {len(_HEAD)})) (call $write (i32.const 128) (i32.const 6))))))"""


def loads_file(path: str) -> str:
    """WASI-NN load() of a model file by path (builder "preload:PATH"); answers 200 either way."""
    builder = "preload:" + path
    return f"""(module {_WASI}
  {_data(64, _HEAD)} {_data(128, "loaded")} {_data(144, "refused")} {_data(1024, builder)}
  (func (export "_start")
    (i32.store (i32.const 400) (i32.const 1024)) (i32.store (i32.const 404) (i32.const {len(builder)}))
    (if (call $load (i32.const 400) (i32.const 1) (i32.const 6) (i32.const 0) (i32.const 100))
      (then (call $write (i32.const 64) (i32.const {len(_HEAD)})) (call $write (i32.const 144) (i32.const 7)))
      (else (call $write (i32.const 64) (i32.const {len(_HEAD)})) (call $write (i32.const 128) (i32.const 6))))))"""


# Generates one token, answers "first", then opens the FIFO `go` in its preopened directory,
# which blocks until the test opens it for writing; then generates one more token and answers
# "done". So its sequence is alive in the engine for as long as the test holds the FIFO shut.
_META = '{"n-predict": 64, "ignore-eos": true}'
WAITS_ON_FIFO = f"""(module {_WASI}
  {_data(64, _HEAD)} {_data(128, "first;")} {_data(144, "done")} {_data(160, "go")}
  {_data(1024, "default")} {_data(1100, _META)} {_data(2048, "Once upon a time")}
  (func $check (param $rc i32) (if (local.get $rc) (then (call $proc_exit (local.get $rc)))))
  (func (export "_start")
    (call $check (call $load_by_name (i32.const 1024) (i32.const 7) (i32.const 100)))
    (call $check (call $init (i32.load (i32.const 100)) (i32.const 104)))
    (call $check (call $set_input (i32.load (i32.const 104)) (i32.const 1) (call $tensor (i32.const 1100) (i32.const {len(_META)}))))
    (call $check (call $set_input (i32.load (i32.const 104)) (i32.const 0) (call $tensor (i32.const 2048) (i32.const 16))))
    (call $check (call $compute_single (i32.load (i32.const 104))))
    (call $write (i32.const 64) (i32.const {len(_HEAD)}))
    (call $write (i32.const 128) (i32.const 6))
    (call $check (call $path_open (i32.const 3) (i32.const 0) (i32.const 160) (i32.const 2) (i32.const 0)
                                  (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 112)))
    (call $check (call $compute_single (i32.load (i32.const 104))))
    (call $write (i32.const 144) (i32.const 4))))"""


def env_of(text: str) -> tuple[dict[str, str], str | None]:
    """The variables an ENV_REPORTER printed, and its preopened directory."""
    text, _, directory = text.partition("\0DIR=")
    env = dict(item.split("=", 1) for item in text.split("\0") if item)
    return env, (directory or None)


# ---------------------------------------------------------------------------------------------
# The server


@pytest.fixture(scope="module")
def apps_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("apps")
    for name, wat in (("env.wasm", ENV_REPORTER), ("grower.wasm", MEMORY_GROWER), ("runaway.wasm", RUNAWAY),
                      ("secret-model.wasm", loads_model("embedding")), ("default-model.wasm", loads_model("default")),
                      ("fifo.wasm", WAITS_ON_FIFO), ("by-path.wasm", loads_file("/models/any.gguf"))):
        write_app(directory, name, wat)
    # The granted app: env.wasm again, under another name, with a manifest beside it.
    (directory / "granted.wasm").write_bytes((directory / "env.wasm").read_bytes())
    shared = directory / "shared"
    shared.mkdir()
    (directory / "granted.toml").write_text(
        'authorization = true\n'
        'dirs = [{ host = "shared", guest = "/data" }]\n'
        '[env]\nGREETING = "hello"\n')
    for side in ("a", "b"):
        (directory / f"fifo-{side}").mkdir()
        os.mkfifo(directory / f"fifo-{side}" / "go")
    return directory


def _mounts(apps_dir: Path) -> list[Mount]:
    specs = [f"/env={apps_dir / 'env.wasm'}", f"/granted={apps_dir / 'granted.wasm'}",
             f"/grower={apps_dir / 'grower.wasm'}", f"/runaway={apps_dir / 'runaway.wasm'}",
             f"/secret={apps_dir / 'secret-model.wasm'}", f"/default-model={apps_dir / 'default-model.wasm'}",
             f"/capped={default_app_path()}", f"/by-path={apps_dir / 'by-path.wasm'}",
             f"/fifo-a={apps_dir / 'fifo.wasm'}", f"/fifo-b={apps_dir / 'fifo.wasm'}"]
    policy = ["/granted:env=FROM_HOST", "/grower:memory=1MiB", "/runaway:wall-time=0.5s",
              "/capped:max-tokens=3", f"/fifo-a:dirs={apps_dir / 'fifo-a'}:/sync",
              f"/fifo-b:dirs={apps_dir / 'fifo-b'}:/sync"]
    return load_mounts(specs, policy, environ={"FROM_HOST": "inherited"},
                       reserved=reserved_paths(webui_routes_or_none()))


@pytest.fixture(scope="module")
def server(apps_dir: Path, tiny_model: Path) -> Iterator[tuple[str, ServerState]]:
    os.environ["LLAMAEDGE_TEST_SECRET"] = "do-not-leak"  # in the server's environment, granted to none
    config = ServeConfig(model=ResolvedModel(path=tiny_model, model_id="tiny-chat"), port=free_port(),
                         threads=2, ctx_size=512, parallel=4, mounts=_mounts(apps_dir))
    state = ServerState(config)
    state.load()
    assert state.error is None, state.error
    with running(state, load=False, extra_routes=mounted_app_routes(state)) as url:
        yield url, state
    del os.environ["LLAMAEDGE_TEST_SECRET"]


# ---------------------------------------------------------------------------------------------
# Policy defaults and grants


def test_an_app_by_default_gets_no_env_no_dirs_and_no_authorization(server: tuple[str, ServerState]) -> None:
    url, _ = server
    response = httpx.get(f"{url}/env/some/where?x=1", headers={"Authorization": "Bearer s3cret", "X-Custom": "yes"})
    assert response.status_code == 200
    env, directory = env_of(response.text)
    assert directory is None
    assert "HTTP_AUTHORIZATION" not in env and "s3cret" not in response.text
    assert "LLAMAEDGE_TEST_SECRET" not in env and "do-not-leak" not in response.text
    # What it does get: the WAGI request, under its route, and the host interface's settings.
    assert env["SCRIPT_NAME"] == "/env" and env["PATH_INFO"] == "/some/where" and env["QUERY_STRING"] == "x=1"
    assert env["X_MATCHED_ROUTE"] == "/env" and env["HTTP_X_CUSTOM"] == "yes"
    assert env["LLAMAEDGE_MODEL_GRAPH"] == "default"
    assert {k for k in env if not k.startswith(("HTTP_", "LLAMAEDGE_"))} <= {
        "REQUEST_METHOD", "PATH_INFO", "X_RAW_PATH_INFO", "QUERY_STRING", "SCRIPT_NAME", "SERVER_PROTOCOL",
        "SERVER_NAME", "SERVER_PORT", "GATEWAY_INTERFACE", "CONTENT_LENGTH", "CONTENT_TYPE", "X_MATCHED_ROUTE"}


def test_granted_env_dir_and_authorization_reach_the_app(server: tuple[str, ServerState]) -> None:
    url, _ = server
    response = httpx.post(f"{url}/granted", headers={"Authorization": "Bearer user-token"}, content=b"")
    assert response.status_code == 200
    env, directory = env_of(response.text)
    assert env["GREETING"] == "hello"  # from granted.toml
    assert env["FROM_HOST"] == "inherited"  # --app-policy /granted:env=FROM_HOST, from the server's environment
    assert env["HTTP_AUTHORIZATION"] == "Bearer user-token"
    assert directory == "/data"
    assert env["PATH_INFO"] == "" and env["SCRIPT_NAME"] == "/granted"
    assert "LLAMAEDGE_TEST_SECRET" not in env


def test_apps_route_lists_each_app_with_its_policy_but_no_secrets(server: tuple[str, ServerState]) -> None:
    url, _ = server
    listing = httpx.get(f"{url}/apps").json()
    by_route = {item["route"]: item for item in listing["data"]}
    assert set(by_route) >= {"/env", "/granted", "/capped", "/grower"}
    granted = by_route["/granted"]
    assert granted["app"] == "granted.wasm" and granted["manifest"] == "granted.toml"
    assert granted["policy"]["env"] == ["GREETING", "FROM_HOST"]
    assert granted["policy"]["dirs"] == [{"guest": "/data", "writable": False}]
    assert granted["policy"]["authorization"] is True
    assert "inherited" not in json.dumps(listing) and "hello" not in json.dumps(listing)
    assert by_route["/env"]["policy"] == {"memory_mib": 256.0, "wall_time_s": 300.0, "max_tokens": None,
                                          "models": ["default"], "env": [], "dirs": [], "authorization": False,
                                          "kv_bytes": 0, "hosts": []}
    assert by_route["/capped"]["policy"]["max_tokens"] == 3 and by_route["/capped"]["app"] == "chat-server.wasm"


# ---------------------------------------------------------------------------------------------
# Breaches fail only their own request


def test_memory_limit_breach_fails_only_that_request(server: tuple[str, ServerState]) -> None:
    url, _ = server
    response = httpx.get(f"{url}/grower", timeout=30)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "memory_limit_exceeded" and "memory limit of 1 MiB" in error["message"]
    assert httpx.get(f"{url}/env").status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200


def test_wall_time_breach_fails_only_that_request(server: tuple[str, ServerState]) -> None:
    url, _ = server
    response = httpx.get(f"{url}/runaway", timeout=30)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "wall_time_exceeded" and "wall-time limit of 0.5s" in error["message"]
    assert httpx.get(f"{url}/env").status_code == 200


def test_a_model_not_granted_is_403_and_a_granted_one_loads(server: tuple[str, ServerState]) -> None:
    url, _ = server
    refused = httpx.get(f"{url}/secret")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "model_not_allowed" and error["type"] == "permission_error"
    assert "'embedding'" in error["message"]
    allowed = httpx.get(f"{url}/default-model")
    assert allowed.status_code == 200 and allowed.text == "loaded"
    # A model file by path is never granted.
    by_path = httpx.get(f"{url}/by-path")
    assert by_path.status_code == 403 and by_path.json()["error"]["code"] == "model_not_allowed"
    assert "model files" in by_path.json()["error"]["message"]



def test_max_tokens_cap_ends_the_stream_cleanly_with_length(server: tuple[str, ServerState]) -> None:
    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/capped/v1", api_key="none")
    completion = client.chat.completions.create(model="tiny-chat", max_tokens=50, temperature=0,
                                                messages=[{"role": "user", "content": "Tell me a story"}])
    ChatCompletion.model_validate(completion.model_dump(exclude_unset=True), strict=True)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    chunks = list(client.chat.completions.create(model="tiny-chat", max_tokens=50, stream=True, temperature=0,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "Tell me a story"}]))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk.model_dump(exclude_unset=True), strict=True)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    # The built-in chat app on the same model is not capped.
    uncapped = openai.OpenAI(base_url=f"{url}/v1", api_key="none").chat.completions.create(
        model="tiny-chat", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Tell me a story"}])
    assert uncapped.usage is not None and uncapped.usage.completion_tokens > 3


# ---------------------------------------------------------------------------------------------
# One engine for every app


def test_two_apps_stream_at_once_on_the_one_model(server: tuple[str, ServerState], apps_dir: Path) -> None:
    url, state = server
    assert state.model is not None
    with httpx.Client(timeout=30) as client:
        with client.stream("GET", f"{url}/fifo-a") as a, client.stream("GET", f"{url}/fifo-b") as b:
            a_chunks, b_chunks = a.iter_raw(), b.iter_raw()
            # Both have answered their first chunk while neither can finish: each waits on its FIFO.
            assert next(a_chunks) == b"first;"
            assert next(b_chunks) == b"first;"
            stats = state.model.stats()
            assert stats.sequences_running == 2  # both generations live in the one engine
            for side in ("a", "b"):
                os.close(os.open(apps_dir / f"fifo-{side}" / "go", os.O_WRONLY))
            assert b"".join(a_chunks) == b"done" and b"".join(b_chunks) == b"done"


# ---------------------------------------------------------------------------------------------
# Bad specs and manifests


def _usage_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(UsageError) as caught:
        load_mounts(*args, reserved=reserved_paths(webui_routes_or_none()), **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and caught.value.hint
    return message


@pytest.mark.parametrize("route", ["/v1", "/v1/review", "/health", "/metrics", "/apps", "/", "/assets"])
def test_routes_that_would_shadow_the_host_are_refused(apps_dir: Path, route: str) -> None:
    message = _usage_error([f"{route}={apps_dir / 'env.wasm'}"], [])
    assert "shadow" in message or "not a route" in message


def test_bad_app_specs_are_refused_in_one_line(apps_dir: Path) -> None:
    env_wasm = apps_dir / "env.wasm"
    assert "bad --app" in _usage_error(["review.wasm"], [])
    assert "no file" in _usage_error(["/review=missing.wasm"], [])
    assert "not a route" in _usage_error([f"review={env_wasm}"], [])
    assert "overlaps" in _usage_error([f"/a={env_wasm}", f"/a/b={env_wasm}"], [])
    assert "no app is mounted at /b" in _usage_error([f"/a={env_wasm}"], ["/b:memory=1MiB"])
    assert "unknown policy key 'colour'" in _usage_error([f"/a={env_wasm}"], ["/a:colour=red"])
    assert "not a size" in _usage_error([f"/a={env_wasm}"], ["/a:memory=lots"])
    assert "not a duration" in _usage_error([f"/a={env_wasm}"], ["/a:wall-time=soon"])
    assert "not a positive integer" in _usage_error([f"/a={env_wasm}"], ["/a:max-tokens=0"])
    assert "not set in the server's environment" in _usage_error([f"/a={env_wasm}"], ["/a:env=NOPE_NOT_SET"],
                                                                 environ={})
    assert "not a directory" in _usage_error([f"/a={env_wasm}"], ["/a:dirs=/no/such/dir"])
    assert "set by the host" in _usage_error([f"/a={env_wasm}"], ["/a:env=PATH_INFO=/x"])
    assert "set by the host" in _usage_error([f"/a={env_wasm}"], ["/a:env=LLAMAEDGE_MODEL_GRAPH=other"])


@pytest.mark.parametrize(
    ("manifest", "text", "expected"),
    [
        ("app.toml", "memory = ", "not valid TOML"),
        ("app.json", "{", "not valid JSON"),
        ("app.json", "[1]", "must be a table"),
        ("app.toml", "max-tokens = -2", "not a positive integer"),
        ("app.toml", 'models = "default"\nnetwork = true', "unknown policy key 'network'"),
        ("app.toml", "env = 3", "env must be a table"),
        ("app.toml", 'dirs = [{ host = "nowhere" }]', "not a directory"),
    ],
)
def test_bad_manifests_are_refused_in_one_line(tmp_path: Path, apps_dir: Path, manifest: str, text: str,
                                               expected: str) -> None:
    (tmp_path / "app.wasm").write_bytes((apps_dir / "env.wasm").read_bytes())
    (tmp_path / manifest).write_text(text)
    assert expected in _usage_error([f"/a={tmp_path / 'app.wasm'}"], [])


def test_a_manifest_in_both_formats_is_ambiguous(tmp_path: Path, apps_dir: Path) -> None:
    (tmp_path / "app.wasm").write_bytes((apps_dir / "env.wasm").read_bytes())
    (tmp_path / "app.toml").write_text("max-tokens = 5\n")
    (tmp_path / "app.json").write_text('{"max-tokens": 5}')
    assert "two manifests" in _usage_error([f"/a={tmp_path / 'app.wasm'}"], [])


def test_flags_override_the_manifest(tmp_path: Path, apps_dir: Path) -> None:
    (tmp_path / "app.wasm").write_bytes((apps_dir / "env.wasm").read_bytes())
    (tmp_path / "app.json").write_text('{"max-tokens": 5, "wall-time": "2m", "memory": "32MiB", "env": {"A": "1"}}')
    [mount] = load_mounts([f"/a={tmp_path / 'app.wasm'}"], ["/a:max-tokens=9", "/a:env=B=2"], environ={})
    assert mount.policy.max_tokens == 9 and mount.policy.wall_time_s == 120.0
    assert mount.policy.memory_max_bytes == 32 * 2**20 and mount.policy.env == (("A", "1"), ("B", "2"))


def test_cli_refuses_a_bad_app_with_one_line_and_exit_1(tmp_path: Path, apps_dir: Path, tiny_model: Path) -> None:
    for app in (f"/v1={apps_dir / 'env.wasm'}", "/x=nope.wasm"):
        result = subprocess.run([sys.executable, "-m", "llamaedge", "serve", "--model", str(tiny_model),
                                 "--port", str(free_port()), "--app", app],
                                capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


# ---------------------------------------------------------------------------------------------
# The review app, beside the chat server and another app, on SmolLM2

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {"comments": {"type": "array", "items": {
        "type": "object",
        "properties": {"file": {"type": "string"}, "line": {"type": "integer", "minimum": 1},
                       "comment": {"type": "string"}},
        "required": ["file", "line", "comment"], "additionalProperties": False}}},
    "required": ["comments"], "additionalProperties": False,
}

SMALL_DIFF = """\
--- a/stats.py
+++ b/stats.py
@@ -1,3 +1,3 @@
 def mean(values):
-    return sum(values) / len(values)
+    return sum(values) / (len(values) - 1)
"""


@pytest.mark.slow
def test_review_app_answers_schema_valid_json_beside_the_chat_and_a_wat_app(
        smollm2_model: Path, apps_dir: Path, tmp_path: Path) -> None:
    with serving(tmp_path, "--model", str(smollm2_model), "--threads", "2", "--ctx-size", "2048",
                 "--app", f"/review={REVIEW_APP}", "--app", f"/env={apps_dir / 'env.wasm'}") as server:
        response = httpx.post(f"{server.base_url}/review", content=SMALL_DIFF.encode(),
                              headers={"Content-Type": "text/x-diff"}, timeout=300)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        jsonschema.validate(response.json(), REVIEW_SCHEMA)
        # Bad input is the client's error, named.
        not_a_diff = httpx.post(f"{server.base_url}/review", content=b"please review", timeout=60)
        assert not_a_diff.status_code == 400 and not_a_diff.json()["error"]["code"] == "invalid_diff"
        wrong_method = httpx.get(f"{server.base_url}/review", timeout=60)
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        # The other mounted app and the chat server answer on the same model.
        assert env_of(httpx.get(f"{server.base_url}/env").text)[0]["SCRIPT_NAME"] == "/env"
        chat = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none").chat.completions.create(
            model=smollm2_model.stem, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
        assert chat.choices[0].message.content
        listing = httpx.get(f"{server.base_url}/apps").json()
        assert [(a["route"], a["app"]) for a in listing["data"]] == [("/review", "review.wasm"), ("/env", "env.wasm")]
        assert "  app       " in server.log() and "/review  (review.wasm: memory 256 MiB" in server.log()


def test_api_key_guards_the_mounted_apps_and_the_listing(apps_dir: Path, tiny_model: Path) -> None:
    mounts = load_mounts([f"/env={apps_dir / 'env.wasm'}"], [], environ={})
    config = ServeConfig(model=ResolvedModel(path=tiny_model, model_id="tiny-chat"), port=free_port(),
                         threads=2, ctx_size=256, api_key="s3cret", mounts=mounts)
    state = ServerState(config)
    state.load()
    with running(state, load=False, extra_routes=mounted_app_routes(state)) as url:
        for path in ("/env", "/env/deeper", "/apps"):
            missing = httpx.get(f"{url}{path}")
            assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
            assert httpx.get(f"{url}{path}", headers={"x-api-key": "s3cret"}).status_code == 200
        # The key is the host's: it reaches no app, and Authorization only one granted it.
        answered = httpx.get(f"{url}/env", headers={"Authorization": "Bearer s3cret"})
        env, _ = env_of(answered.text)
        assert "HTTP_AUTHORIZATION" not in env and "s3cret" not in answered.text


def _release_fifo(path: Path) -> None:
    """Let an app blocked opening the FIFO for reading go on (nothing to do without one)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_wall_time_stops_a_request_waiting_in_the_host(apps_dir: Path, tiny_model: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # One slot: /hold keeps it (its sequence waits on the FIFO), so /impatient's first
    # compute_single waits in the host for a slot until its wall time is up.
    os.mkfifo(tmp_path / "go")
    fifo = apps_dir / "fifo.wasm"
    # /chat's wall time runs out when the test says (what its timer would do), once its stream
    # has begun: a timer of its own could run out first on a slow machine.
    guards: list[RunGuard] = []
    start_guard = RunGuard.__init__

    def recorded(guard: RunGuard, *args: Any, **kwargs: Any) -> None:
        start_guard(guard, *args, **kwargs)
        guards.append(guard)

    monkeypatch.setattr(RunGuard, "__init__", recorded)
    mounts = load_mounts([f"/hold={fifo}", f"/impatient={fifo}", f"/chat={default_app_path()}"],
                         [f"/hold:dirs={tmp_path}:/sync", f"/impatient:dirs={tmp_path}:/sync",
                          "/impatient:wall-time=0.5s", "/chat:wall-time=600s"], environ={})
    config = ServeConfig(model=ResolvedModel(path=tiny_model, model_id="tiny-chat"), port=free_port(),
                         threads=2, ctx_size=256, parallel=1, mounts=mounts)
    state = ServerState(config)
    state.load()
    assert state.model is not None
    try:
        with running(state, load=False, extra_routes=mounted_app_routes(state)) as url, httpx.Client(timeout=30) as client:
            with client.stream("GET", f"{url}/hold") as hold:
                chunks = hold.iter_raw()
                assert next(chunks) == b"first;"
                impatient = client.get(f"{url}/impatient")
                assert impatient.status_code == 504
                assert impatient.json()["error"]["code"] == "wall_time_exceeded"
                assert state.model.stats().sequences_waiting == 0  # its queued sequence was cancelled
                # A stream that began before the wall time ran out ends with an error event.
                with client.stream("POST", f"{url}/chat/v1/chat/completions", json={
                        "model": "tiny-chat", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as chat:
                    assert chat.status_code == 200
                    [chat_guard] = [g for g in guards if g.app_name == default_app_path().name]
                    chat_guard._expire()
                    events = [line[len("data: "):] for line in chat.iter_lines() if line.startswith("data: ")]
                assert events[-1] == "[DONE]"
                error = json.loads(events[-2])["error"]
                assert "wall-time limit of 600s" in error["message"]
                os.close(os.open(tmp_path / "go", os.O_WRONLY))
                assert b"".join(chunks) == b"done"
    finally:
        _release_fifo(tmp_path / "go")  # a failed assert must not leave an app blocked on it
