"""The chat-server WebAssembly app: its build is reproducible, its Zig unit tests pass, and
the built module speaks WAGI and the OpenAI API correctly.

The app runs in real wasmtime with real WASI. Inference is the seam: `FakeNN` implements
the `wasi_ephemeral_nn` and `llamaedge` imports in Python with scripted tokens, so these
tests check the app's own logic (validation, SSE framing, budgeting, metadata) without a
model. End-to-end tests against llama.cpp live in the server's API tests.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from wasmtime import Caller, Engine, ExitTrap, FuncType, Linker, Memory, Module, Store, ValType, WasiConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "llamaedge" / "apps" / "chat-server.wasm"


def _load_build_module() -> Any:
    spec = importlib.util.spec_from_file_location("wasm_apps_build", REPO_ROOT / "wasm-apps" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_module()

# ---------------------------------------------------------------------------
# Running the app


@dataclass
class FakeNN:
    """A scripted WASI-NN backend: `tokens` are returned one per compute_single, the prompt
    counts one token per `bytes_per_token` bytes, and everything the app sends is recorded."""

    tokens: list[bytes] = field(default_factory=lambda: [b"Hello", b" world"])
    bytes_per_token: int = 4
    end_code: int = 100
    finish_reason: str = "stop"
    template: Callable[[dict[str, Any]], str] | None = None  # None: the model has no template (8)
    compute_fails_at: int | None = None
    graph_names: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    template_requests: list[dict[str, Any]] = field(default_factory=list)
    computed: int = 0
    finished: bool = False
    info_reads: int = 0  # get_output(1): what the host says of the context

    def define(self, linker: Linker) -> None:
        i32 = ValType.i32()

        def define(module: str, name: str, arity: int, func: Callable[..., int]) -> None:
            linker.define_func(module, name, FuncType([i32] * arity, [i32]), func, access_caller=True)

        define("wasi_ephemeral_nn", "load_by_name", 3, self._load_by_name)
        define("wasi_ephemeral_nn", "init_execution_context", 2, self._init_execution_context)
        define("wasi_ephemeral_nn", "set_input", 3, self._set_input)
        define("wasi_ephemeral_nn", "get_output", 5, self._get_output)
        define("wasi_ephemeral_nn", "compute_single", 1, self._compute_single)
        define("wasi_ephemeral_nn", "get_output_single", 5, self._get_output_single)
        define("wasi_ephemeral_nn", "fini_single", 1, self._fini_single)
        define("llamaedge", "chat_template", 6, self._chat_template)

    @property
    def input_tokens(self) -> int:
        return len(self.prompts[-1].encode()) // self.bytes_per_token

    def _load_by_name(self, caller: Caller, ptr: int, length: int, out: int) -> int:
        self.graph_names.append(_read(caller, ptr, length).decode())
        _write_u32(caller, out, 0)
        return 0

    def _init_execution_context(self, caller: Caller, graph: int, out: int) -> int:
        _write_u32(caller, out, 0)
        return 0

    def _set_input(self, caller: Caller, ctx: int, index: int, tensor: int) -> int:
        _dims, _ndims, _kind, data_ptr, data_len = struct.unpack("<5I", _read(caller, tensor, 20))
        data = _read(caller, data_ptr, data_len).decode()
        if index == 1:
            self.metadata.append(json.loads(data))
            return 0
        self.prompts.append(data)
        return 0

    def _get_output(self, caller: Caller, ctx: int, index: int, out: int, max_len: int, written: int) -> int:
        if index == 1:
            self.info_reads += 1
        info = {"input_tokens": self.input_tokens, "output_tokens": self.computed, "llama_build_number": 1}
        if self.computed and self.finish_reason:
            info["finish_reason"] = self.finish_reason
        return _write_out(caller, json.dumps(info).encode(), out, max_len, written)

    def _compute_single(self, caller: Caller, ctx: int) -> int:
        if self.compute_fails_at is not None and self.computed == self.compute_fails_at:
            return 5
        if self.computed >= len(self.tokens):
            return self.end_code
        self.computed += 1
        return 0

    def _get_output_single(self, caller: Caller, ctx: int, index: int, out: int, max_len: int, written: int) -> int:
        return _write_out(caller, self.tokens[self.computed - 1], out, max_len, written)

    def _fini_single(self, caller: Caller, ctx: int) -> int:
        self.finished = True
        return 0

    def _chat_template(self, caller: Caller, graph: int, ptr: int, length: int, out: int, max_len: int, written: int) -> int:
        request = json.loads(_read(caller, ptr, length))
        self.template_requests.append(request)
        if self.template is None:
            return 8
        return _write_out(caller, self.template(request).encode(), out, max_len, written)


def _memory(caller: Caller) -> Memory:
    memory = caller.get("memory")
    assert isinstance(memory, Memory)
    return memory


def _read(caller: Caller, ptr: int, length: int) -> bytes:
    ptr &= 0xFFFFFFFF
    return bytes(_memory(caller).read(caller, ptr, ptr + (length & 0xFFFFFFFF)))


def _write_u32(caller: Caller, ptr: int, value: int) -> None:
    _memory(caller).write(caller, struct.pack("<I", value), ptr & 0xFFFFFFFF)


def _write_out(caller: Caller, data: bytes, out: int, max_len: int, written: int) -> int:
    _write_u32(caller, written, len(data))
    if len(data) > (max_len & 0xFFFFFFFF):
        return 7
    if data:
        _memory(caller).write(caller, data, out & 0xFFFFFFFF)
    return 0


@dataclass
class StdoutWrites:
    """Replaces WASI's fd_write for stdout: records each write as one entry (the host sends
    each as one chunk) and, from write number `fail_from` on, answers EPIPE like a host
    whose client has gone. Other descriptors go to stderr as usual."""

    fail_from: int | None = None
    writes: list[bytes] = field(default_factory=list)
    failed: int = 0
    stderr: list[bytes] = field(default_factory=list)

    def define(self, linker: Linker) -> None:
        i32 = ValType.i32()
        linker.allow_shadowing = True
        linker.define_func("wasi_snapshot_preview1", "fd_write", FuncType([i32] * 4, [i32]), self._fd_write, access_caller=True)

    def _fd_write(self, caller: Caller, fd: int, iovs: int, iovs_len: int, nwritten: int) -> int:
        data = b"".join(
            _read(caller, ptr, length) for ptr, length in struct.iter_unpack("<II", _read(caller, iovs, 8 * iovs_len))
        )
        if fd == 1:
            if self.fail_from is not None and len(self.writes) >= self.fail_from:
                self.failed += 1
                return 64  # EPIPE
            self.writes.append(data)
        else:
            self.stderr.append(data)
        _write_u32(caller, nwritten, len(data))
        return 0


@dataclass
class AppResult:
    exit_code: int
    stdout: bytes
    stderr: str

    @property
    def status(self) -> int:
        for line in self.head.splitlines():
            if line.lower().startswith("status:"):
                return int(line.split()[1])
        return 200

    @property
    def head(self) -> str:
        return self.stdout.split(b"\n\n", 1)[0].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self) -> bytes:
        return self.stdout.split(b"\n\n", 1)[1]

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[str]:
        """The `data:` payloads of an SSE body, checking the framing on the way."""
        raw = self.body.decode()
        assert raw.endswith("\n\n"), raw
        events = raw[:-2].split("\n\n")
        for event in events:
            assert event.startswith("data: ") and "\n" not in event, event
        return [event[len("data: ") :] for event in events]


@pytest.fixture(scope="session")
def app_module() -> tuple[Engine, Module]:
    engine = Engine()
    return engine, Module.from_file(engine, str(APP_PATH))


BASE_ENV = {
    "LLAMAEDGE_MODEL_ID": "tiny-chat",
    "LLAMAEDGE_MODEL_GRAPH": "default",
    "LLAMAEDGE_MODEL_CREATED": "1700000000",
    "LLAMAEDGE_PROMPT_TEMPLATE": "chatml",
    "LLAMAEDGE_CTX_SIZE": "1024",
    "LLAMAEDGE_MAX_BODY_BYTES": "100000",
    "LLAMAEDGE_MODEL_CAPABILITIES": "chat,tools",
}


def run_wasm(
    app: tuple[Engine, Module],
    tmp_path: Path,
    *,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
    nn: FakeNN | None = None,
    stdout_writes: StdoutWrites | None = None,
) -> AppResult:
    """Runs the app once, as the host would: WASI with the given env and stdin, and the
    nn imports from `nn` (or traps when None). With `stdout_writes`, stdout goes through
    it instead of the file, one record per fd_write."""
    engine, module = app
    linker = Linker(engine)
    linker.define_wasi()
    if stdout_writes is not None:
        stdout_writes.define(linker)
    if nn is not None:
        nn.define(linker)
    linker.define_unknown_imports_as_traps(module)

    files = {name: tmp_path / f"app.{name}" for name in ("stdin", "stdout", "stderr")}
    files["stdin"].write_bytes(stdin)
    wasi = WasiConfig()
    wasi.argv = ["chat-server.wasm", *(args or [])]
    wasi.env = list((env or {}).items())
    wasi.stdin_file = str(files["stdin"])
    wasi.stdout_file = str(files["stdout"])
    wasi.stderr_file = str(files["stderr"])
    store = Store(engine)
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    try:
        start(store)  # type: ignore[operator]
        code = 0
    except ExitTrap as exit_trap:
        code = exit_trap.code
    stdout = b"".join(stdout_writes.writes) if stdout_writes is not None else files["stdout"].read_bytes()
    return AppResult(code, stdout, files["stderr"].read_text())


def request(
    app: tuple[Engine, Module],
    tmp_path: Path,
    method: str,
    path: str,
    body: Any = None,
    *,
    nn: FakeNN | None = None,
    env: dict[str, str] | None = None,
    stdout_writes: StdoutWrites | None = None,
) -> AppResult:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    wagi = {**BASE_ENV, "REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_LENGTH": str(len(raw)), **(env or {})}
    return run_wasm(app, tmp_path, env=wagi, stdin=raw, nn=nn, stdout_writes=stdout_writes)


def chat(
    app: tuple[Engine, Module],
    tmp_path: Path,
    nn: FakeNN,
    env: dict[str, str] | None = None,
    stdout_writes: StdoutWrites | None = None,
    **fields: Any,
) -> AppResult:
    body = {"messages": [{"role": "user", "content": "Hi"}], **fields}
    return request(app, tmp_path, "POST", "/v1/chat/completions", body, nn=nn, env=env, stdout_writes=stdout_writes)


def assert_error(result: AppResult, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    assert result.status == status, result.stdout
    assert result.header("Content-Type") == "application/json"
    error = result.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    assert error["code"] == code
    return error


# ---------------------------------------------------------------------------
# Build


# Every app imports the shared module (wasm-apps/shared): a change there rebuilds them all.
@pytest.mark.parametrize("app", sorted(build.APPS) + sorted(build.TOOLS))
def test_committed_wasm_is_rebuilt_byte_identical(app: str, tmp_path: Path) -> None:
    rebuilt = build.build(app, tmp_path)
    folder = REPO_ROOT / "llamaedge" / "apps" / (build.TOOLS_SUBDIR if app in build.TOOLS else "")
    assert rebuilt.read_bytes() == (folder / f"{app}.wasm").read_bytes(), \
        "run `python wasm-apps/build.py` and commit the result"


# Each app's tests, and the shared module's (Zig runs the tests of the root module only).
@pytest.mark.parametrize("suite", sorted(build.TEST_SUITES))
def test_zig_unit_tests_pass(suite: str) -> None:
    result = build.test(suite)
    assert result.returncode == 0, result.stderr
    assert "All" in result.stderr and "tests passed" in result.stderr


def test_every_app_built_is_committed_in_the_package() -> None:
    assert {path.stem for path in (REPO_ROOT / "llamaedge" / "apps").glob("*.wasm")} == set(build.APPS)
    tools = REPO_ROOT / "llamaedge" / "apps" / build.TOOLS_SUBDIR
    assert {path.stem for path in tools.glob("*.wasm")} == {path.stem for path in tools.glob("*.json")} == set(build.TOOLS)


def test_module_is_a_small_wasi_command_with_only_the_documented_imports(app_module: tuple[Engine, Module]) -> None:
    _engine, module = app_module
    exports = {export.name for export in module.exports}
    assert {"_start", "memory"} <= exports
    assert {imp.module for imp in module.imports} == {"wasi_snapshot_preview1", "wasi_ephemeral_nn", "llamaedge", "llamaedge_kv"}
    # Small enough to compile at startup without notice (about 400 KB with Chat Completions,
    # Messages, Responses, completions, embeddings and rerank); a jump past this is a regression.
    assert APP_PATH.stat().st_size < 450_000


# ---------------------------------------------------------------------------
# Command mode


def test_list_templates_names_auto_and_every_template(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    result = run_wasm(app_module, tmp_path, args=["list-templates"])
    assert result.exit_code == 0
    names = result.stdout.decode().split()
    assert names[0] == "auto"
    assert {"chatml", "llama-3-chat", "llama-2-chat", "mistral-instruct", "gemma-instruct", "phi-3-chat"} <= set(names)


def test_render_template_prints_the_prompt(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    messages = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    result = run_wasm(app_module, tmp_path, args=["render-template", "chatml"], stdin=json.dumps(messages).encode())
    assert result.exit_code == 0, result.stderr
    assert result.stdout.decode() == "<|im_start|>user\na\nb<|im_end|>\n<|im_start|>assistant\n"


def test_command_mode_errors_are_one_line_with_a_nonzero_exit(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    unknown = run_wasm(app_module, tmp_path, args=["render-template", "nope"], stdin=b"{}")
    assert unknown.exit_code == 1 and "unknown template 'nope'" in unknown.stderr
    bad_input = run_wasm(app_module, tmp_path, args=["render-template", "chatml"], stdin=b'{"messages": 3}')
    assert bad_input.exit_code == 1 and "Invalid type for 'messages'" in bad_input.stderr
    assert len(bad_input.stderr.strip().splitlines()) == 1
    no_args = run_wasm(app_module, tmp_path)
    assert no_args.exit_code == 2 and "render-template" in no_args.stderr


# ---------------------------------------------------------------------------
# Routes and errors


def test_models_list_and_model_lookup(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    listing = request(app_module, tmp_path, "GET", "/v1/models")
    assert listing.status == 200 and listing.header("Content-Type") == "application/json"
    model = {"id": "tiny-chat", "object": "model", "created": 1700000000, "owned_by": "llamaedge",
             "capabilities": ["chat", "tools"], "context_length": 1024}
    assert listing.json() == {"object": "list", "data": [model]}
    assert request(app_module, tmp_path, "GET", "/v1/models/tiny-chat").json() == model
    missing = request(app_module, tmp_path, "GET", "/v1/models/gpt-4")
    assert_error(missing, 404, "model", "model_not_found")


def test_unknown_route_and_wrong_method(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    assert_error(request(app_module, tmp_path, "GET", "/v1/nothing"), 404, None, "unknown_url")
    wrong = request(app_module, tmp_path, "GET", "/v1/chat/completions")
    assert_error(wrong, 405, None, "method_not_allowed")
    assert wrong.header("Allow") == "POST"


def test_body_over_the_limit_is_413_before_reading(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN()
    result = request(
        app_module, tmp_path, "POST", "/v1/chat/completions", b"x" * 10, nn=nn, env={"LLAMAEDGE_MAX_BODY_BYTES": "5", "CONTENT_LENGTH": "10"}
    )
    assert_error(result, 413, None, "request_too_large")
    assert nn.graph_names == []


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{oops", None, "could not parse the JSON body"),
        (b"", None, "could not parse the JSON body"),
        ({"messages": []}, "messages", "at least one message"),
        ({}, "messages", "Missing required parameter"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "'wizard'"),
        ({"messages": [{"role": "user", "content": 1}]}, "messages[0].content", "expected a string"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages[0].content[0]", "data URL"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0]", "'input_audio'"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "warm"}, "temperature", "expected a number"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 9}, "n", "between 1 and 8"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "a b"}}]},
         "tools[0].function.name", "1 to 64 characters"),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, "top_logprobs", "needs 'logprobs'"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ],
)
def test_bad_requests_are_400_with_the_param_named(
    app_module: tuple[Engine, Module], tmp_path: Path, body: Any, param: str | None, fragment: str
) -> None:
    nn = FakeNN()
    result = request(app_module, tmp_path, "POST", "/v1/chat/completions", body, nn=nn)
    error = assert_error(result, 400, param)
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"
    assert nn.prompts == []


def test_unknown_model_is_404_and_never_generates(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN()
    assert_error(chat(app_module, tmp_path, nn, model="gpt-4o"), 404, "model", "model_not_found")
    assert nn.graph_names == [] and nn.computed == 0
    assert chat(app_module, tmp_path, FakeNN(), model="tiny-chat").status == 200


# ---------------------------------------------------------------------------
# Completions


def test_non_streaming_completion_has_the_openai_shape(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN(tokens=[b"Caf", b"\xc3", b"\xa9", b" ok"])
    result = chat(app_module, tmp_path, nn)
    assert result.status == 200 and result.header("Content-Type") == "application/json"
    completion = ChatCompletion.model_validate(result.json(), strict=True)
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == "tiny-chat"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "Café ok"
    assert choice.finish_reason == "stop" and choice.logprobs is None
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    assert completion.usage.prompt_tokens == nn.input_tokens
    assert completion.usage.total_tokens == nn.input_tokens + 4
    assert nn.graph_names == ["default"] and nn.finished


def test_stream_framing_role_content_finish_usage_done(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN(tokens=[b"A", b"\xf0\x9f", b"\x98\x80", b"B"])
    result = chat(app_module, tmp_path, nn, stream=True, stream_options={"include_usage": True})
    assert result.status == 200 and result.header("Content-Type") == "text/event-stream"
    events = result.events()
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(e), strict=True) for e in events[:-1]]
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-1])
    content = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert content == ["A", "😀", "B"]  # the emoji arrives whole, in one chunk
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].delta.content is None
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_the_host_info_is_read_once_after_the_prompt_and_once_at_the_end(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN()
    result = chat(app_module, tmp_path, nn, stream=True, stream_options={"include_usage": True})
    assert result.status == 200
    # the prompt's token count, then how the sequence ended, with the cached tokens of the same answer
    assert nn.info_reads == 2


def test_no_usage_chunk_without_include_usage(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    events = chat(app_module, tmp_path, FakeNN(), stream=True).events()
    assert all('"usage"' not in e for e in events)
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"


def test_stop_strings_are_held_back_and_end_the_completion(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN(tokens=[b"one ", b"tw", b"o thr", b"ee"])
    result = chat(app_module, tmp_path, nn, stream=True, stop=["two", "zzz"])
    chunks = [json.loads(e) for e in result.events()[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "one "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert nn.computed == 3  # generation stopped at the stop string


def test_max_tokens_sets_n_predict_and_finishes_with_length(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN(tokens=[b"a", b"b", b"c", b"d"])
    body = chat(app_module, tmp_path, nn, max_completion_tokens=2).json()
    assert body["choices"][0]["message"]["content"] == "ab"
    assert body["choices"][0]["finish_reason"] == "length"
    assert nn.metadata[-1]["n-predict"] == 2


def test_end_of_sequence_with_length_reported_by_the_host(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN(tokens=[b"a"], finish_reason="length")
    assert chat(app_module, tmp_path, nn).json()["choices"][0]["finish_reason"] == "length"
    full = FakeNN(tokens=[b"a"], end_code=101)
    assert chat(app_module, tmp_path, full).json()["choices"][0]["finish_reason"] == "length"


def test_sampling_options_and_response_format_reach_the_metadata(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fields = {"temperature": 0.25, "top_p": 0.5, "seed": 7, "presence_penalty": 1.5, "frequency_penalty": -0.5}
    chat(app_module, tmp_path, nn, **fields, response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    meta = nn.metadata[-1]
    assert meta["temp"] == 0.25 and meta["top-p"] == 0.5 and meta["seed"] == 7
    assert meta["presence-penalty"] == 1.5 and meta["frequency-penalty"] == -0.5
    assert json.loads(meta["json-schema"]) == schema
    # without max_tokens the completion may use the rest of the context
    assert meta["n-predict"] == 1024 - nn.input_tokens
    # the options are set before the prompt that is generated from
    assert nn.prompts[-1] == nn.prompts[-2]

    json_nn = FakeNN()
    chat(app_module, tmp_path, json_nn, response_format={"type": "json_object"})
    assert "root ::=" in json_nn.metadata[-1]["grammar"]


def test_old_turns_are_dropped_to_fit_the_context(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN()
    filler = "x" * 2000  # 500 tokens in the fake
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": filler},
        {"role": "assistant", "content": filler},
        {"role": "user", "content": "latest question"},
    ]
    result = request(app_module, tmp_path, "POST", "/v1/chat/completions", {"messages": messages}, nn=nn)
    assert result.status == 200, result.stdout
    assert "You are terse." in nn.prompts[-1] and "latest question" in nn.prompts[-1]
    assert "xxxx" not in nn.prompts[-1]
    assert "dropped the 2 oldest message(s)" in result.stderr
    assert result.json()["usage"]["prompt_tokens"] <= 1024 - 1024 // 5


def test_a_prompt_that_cannot_fit_is_context_length_exceeded(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN()
    result = chat(app_module, tmp_path, nn, messages=[{"role": "user", "content": "y" * 8000}])
    error = assert_error(result, 400, "messages", "context_length_exceeded")
    assert "1024" in error["message"]
    assert nn.computed == 0
    too_many = chat(app_module, tmp_path, FakeNN(), max_tokens=5000)
    assert_error(too_many, 400, "max_tokens", "context_length_exceeded")


def test_auto_template_is_rendered_by_the_host(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN(template=lambda req: "RENDERED:" + "|".join(m["content"] for m in req["messages"]))
    result = chat(app_module, tmp_path, nn, env={"LLAMAEDGE_PROMPT_TEMPLATE": "auto"})
    assert result.status == 200
    assert nn.template_requests[-1] == {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True}
    assert nn.prompts[-1] == "RENDERED:Hi"


def test_auto_template_falls_back_to_chatml_and_says_so(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN(template=None)
    result = chat(app_module, tmp_path, nn, env={"LLAMAEDGE_PROMPT_TEMPLATE": "auto"})
    assert result.status == 200
    assert nn.prompts[-1] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert "no chat template" in result.stderr and "chatml" in result.stderr


def test_a_failure_mid_stream_is_an_error_event_then_done(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    nn = FakeNN(tokens=[b"a", b"b"], compute_fails_at=1)
    events = chat(app_module, tmp_path, nn, stream=True).events()
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and error["message"]
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "a"


def test_misconfigured_template_is_a_500_naming_the_problem(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    result = chat(app_module, tmp_path, FakeNN(), env={"LLAMAEDGE_PROMPT_TEMPLATE": "klingon"})
    assert result.status == 500
    assert "unknown prompt template 'klingon'" in result.stderr


def test_each_sse_event_is_one_write(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    writes = StdoutWrites()
    nn = FakeNN(tokens=[b"a", b"\xc3", b"\xa9", b"b"])
    result = chat(app_module, tmp_path, nn, stdout_writes=writes, stream=True, stream_options={"include_usage": True})
    assert result.status == 200
    head, *events = writes.writes
    assert head.endswith(b"\n\n") and head.startswith(b"Status: 200")
    # role, "a", "é", "b", finish, usage, [DONE]: one write each, each a whole event
    assert len(events) == 7
    for event in events:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n\n") == 1


def test_a_client_that_left_stops_the_generation(app_module: tuple[Engine, Module], tmp_path: Path) -> None:
    writes = StdoutWrites(fail_from=3)  # head, role chunk, one content chunk, then EPIPE
    nn = FakeNN(tokens=[b"t"] * 50)
    result = chat(app_module, tmp_path, nn, stdout_writes=writes, stream=True)
    assert result.exit_code == 0
    assert writes.failed == 1  # no write after the failed one
    assert nn.computed == 2  # and no token generated after it
    assert "client disconnected" in b"".join(writes.stderr).decode()
