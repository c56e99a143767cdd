"""Every `wasi_ephemeral_nn` function (and `llamaedge.chat_template`), called from wasm
through real wasmtime on the real engine with the tiny model, error paths included."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llamaedge.engine import LoadOptions, Model, Sequence
from llamaedge.runtime import GraphRegistry, NNSession, Preload, Runtime
from llamaedge.runtime.nn import Errno
from tests.nn_harness import Harness, StandInModel, harness, harness_app, new_runtime, preloaded
from tests.tiny_gguf import GEMMA4_MARKERS, write_tiny_gguf, write_tiny_reranker
from tests.wat_apps import nn_compute_app, write_app

PROMPT = b"<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
GREEDY = {"temp": 0, "seed": 1}


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[Runtime]:
    with preloaded(tiny_model) as (_, runtime):
        yield runtime


@pytest.fixture
def nn(runtime: Runtime) -> Iterator[Harness]:
    with harness(runtime, harness_app(runtime)) as h:
        yield h


def ready_context(nn: Harness, metadata: dict | None = None) -> int:
    rc, graph = nn.load_by_name("default")
    assert rc == Errno.SUCCESS
    rc, ctx = nn.init_context(graph)
    assert rc == Errno.SUCCESS
    assert nn.set_input(ctx, 1, {**GREEDY, **(metadata or {})}) == Errno.SUCCESS
    assert nn.set_input(ctx, 0, PROMPT) == Errno.SUCCESS
    return ctx


# -- load, load_by_name, load_by_name_with_config ------------------------------------------------


def test_load_by_name_returns_the_same_graph_each_time(nn: Harness) -> None:
    first, second = nn.load_by_name("default"), nn.load_by_name("default")
    assert first[0] == second[0] == Errno.SUCCESS
    assert first[1] == second[1]


def test_load_by_name_unknown_is_not_found(nn: Harness) -> None:
    assert nn.load_by_name("nope")[0] == Errno.NOT_FOUND


def test_load_by_name_with_config_applies_load_keys_on_first_load(tmp_path: Path, tiny_model: Path) -> None:
    registry = GraphRegistry(LoadOptions(threads=2), [Preload("small", "GGML", "AUTO", tiny_model)], loader=Model)
    runtime = new_runtime(registry)
    try:
        with harness(runtime, harness_app(runtime)) as h:
            rc, graph = h.load_by_name("small", {"ctx-size": 512, "n-gpu-layers": 0})
            assert rc == Errno.SUCCESS
            assert registry.get(graph).n_ctx == 512
            assert h.load_by_name("small", {"ctx-size": 1024}) == (Errno.SUCCESS, graph)
            assert registry.get(graph).n_ctx == 512
    finally:
        registry.close()


def test_load_by_name_with_config_rejects_bad_json(nn: Harness) -> None:
    out, name, cfg = nn.alloc(4), nn.alloc(b"default"), nn.alloc(b"{not json")
    assert nn.call("load_by_name_with_config", name, 7, cfg, 9, out) == Errno.INVALID_ARGUMENT


def builders(nn: Harness, *entries: bytes) -> int:
    pairs = b"".join(struct.pack("<II", nn.alloc(e), len(e)) for e in entries)
    return nn.alloc(pairs)


def test_load_preload_path_and_raw_bytes(nn: Harness, tiny_model: Path) -> None:
    out = nn.alloc(4)
    by_path = builders(nn, b"preload:" + str(tiny_model).encode(), b'{"ctx-size": 64}')
    assert nn.call("load", by_path, 2, 6, 0, out) == Errno.SUCCESS
    graph = nn.u32(out)
    rc, ctx = nn.init_context(graph)
    assert rc == Errno.SUCCESS
    by_bytes = builders(nn, tiny_model.read_bytes())
    assert nn.call("load", by_bytes, 1, 6, 3, out) == Errno.SUCCESS
    assert nn.u32(out) != graph
    assert nn.call("unload", nn.u32(out)) == Errno.SUCCESS


def test_load_errors(nn: Harness, tmp_path: Path) -> None:
    out = nn.alloc(4)
    assert nn.call("load", builders(nn, b"preload:/x.gguf"), 1, 1, 0, out) == Errno.INVALID_ENCODING
    assert nn.call("load", nn.alloc(8), 0, 6, 0, out) == Errno.INVALID_ARGUMENT
    missing = builders(nn, b"preload:" + str(tmp_path / "missing.gguf").encode())
    assert nn.call("load", missing, 1, 6, 0, out) == Errno.NOT_FOUND
    not_gguf = tmp_path / "junk.gguf"
    not_gguf.write_bytes(b"junk" * 100)
    assert nn.call("load", builders(nn, b"preload:" + str(not_gguf).encode()), 1, 6, 0, out) == Errno.INVALID_ARGUMENT
    assert nn.call("load", 2**20, 1, 6, 0, out) == Errno.INVALID_ARGUMENT  # builder array out of memory


# -- contexts and inputs -------------------------------------------------------------------------


def test_unknown_graph_and_context_ids(nn: Harness) -> None:
    assert nn.init_context(42)[0] == Errno.INVALID_ARGUMENT
    for name in ("compute", "compute_single", "fini_single", "finalize_execution_context"):
        assert nn.call(name, 99) == Errno.INVALID_ARGUMENT
    assert nn.set_input(99, 0, b"x") == Errno.INVALID_ARGUMENT
    assert nn.get_output(99, 0)[0] == Errno.INVALID_ARGUMENT
    assert nn.call("unload", 42) == Errno.INVALID_ARGUMENT


def test_bad_pointers_are_invalid_arguments_not_traps(nn: Harness) -> None:
    rc, graph = nn.load_by_name("default")
    outside = 10 * 2**20
    assert nn.call("init_execution_context", graph, outside) == Errno.INVALID_ARGUMENT
    assert nn.call("load_by_name", outside, 7, nn.alloc(4)) == Errno.INVALID_ARGUMENT
    ctx = ready_context(nn)
    assert nn.call("set_input", ctx, 0, outside) == Errno.INVALID_ARGUMENT
    tensor = nn.alloc(struct.pack("<5I", 0, 0, 0, outside, 16))  # data pointer outside memory
    assert nn.call("set_input", ctx, 0, tensor) == Errno.INVALID_ARGUMENT
    assert nn.call("get_output", ctx, 1, outside, 100, nn.alloc(4)) == Errno.INVALID_ARGUMENT
    # The instance is still usable afterwards.
    assert nn.call("compute_single", ctx) in (Errno.SUCCESS, Errno.END_OF_SEQUENCE)


def test_set_input_reports_prompt_tokens_before_compute(nn: Harness, runtime: Runtime) -> None:
    ctx = ready_context(nn)
    expected = len(runtime.registry.get(0).tokenize(PROMPT))
    meta = nn.metadata(ctx)
    assert meta["input_tokens"] == expected
    assert meta["output_tokens"] == 0
    assert {"llama_build_number", "llama_commit"} <= meta.keys()


def test_set_input_errors(nn: Harness, caplog: pytest.LogCaptureFixture) -> None:
    ctx = ready_context(nn)
    assert nn.set_input(ctx, 2, b"x") == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, b"{oops") == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, b"[1, 2]") == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, {"temp": "hot"}) == Errno.INVALID_ARGUMENT
    with caplog.at_level(logging.INFO, logger="llamaedge.wasi_nn"):
        assert nn.set_input(ctx, 1, {"no-such-key": 1, "n-predict": 3}) == Errno.SUCCESS
    assert "unknown metadata key 'no-such-key' ignored" in caplog.text


def test_an_image_for_a_model_without_a_projector_is_an_invalid_argument(nn: Harness) -> None:
    rc, graph = nn.load_by_name("default")
    rc, ctx = nn.init_context(graph)
    assert nn.set_input(ctx, 1, {"image": "/i.png", "mmproj": "/m.gguf"}) == Errno.SUCCESS  # mmproj: a load key
    assert nn.set_input(ctx, 0, PROMPT) == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, {"image": None}) == Errno.SUCCESS
    assert nn.set_input(ctx, 0, PROMPT) == Errno.SUCCESS


def test_prompt_longer_than_the_context(nn: Harness) -> None:
    rc, graph = nn.load_by_name("default")
    rc, ctx = nn.init_context(graph)
    assert nn.set_input(ctx, 0, b"word " * 400) == Errno.PROMPT_TOO_LONG
    assert nn.metadata(ctx)["input_tokens"] >= 256  # still counted, for budgeting
    assert nn.call("compute_single", ctx) == Errno.PROMPT_TOO_LONG


# -- generation ----------------------------------------------------------------------------------


def test_compute_single_honours_n_predict(nn: Harness) -> None:
    ctx = ready_context(nn, {"n-predict": 7, "ignore-eos": True})
    text, end = nn.stream(ctx)
    assert end == Errno.END_OF_SEQUENCE
    meta = nn.metadata(ctx)
    assert meta["output_tokens"] == 7
    assert meta["finish_reason"] == "length"
    assert nn.get_output(ctx, 0) == (Errno.SUCCESS, text)
    assert nn.call("compute_single", ctx) == Errno.END_OF_SEQUENCE  # stays ended


def test_compute_equals_the_streamed_text_for_the_same_greedy_run(nn: Harness) -> None:
    ctx = ready_context(nn, {"n-predict": 12})
    streamed, _ = nn.stream(ctx)
    assert nn.call("fini_single", ctx) == Errno.SUCCESS
    assert nn.call("compute", ctx) == Errno.SUCCESS
    assert nn.get_output(ctx, 0) == (Errno.SUCCESS, streamed)
    assert streamed


def test_reverse_prompt_stops_compute_and_is_not_in_the_output(nn: Harness) -> None:
    ctx = ready_context(nn, {"n-predict": 40, "ignore-eos": True})
    assert nn.call("compute", ctx) == Errno.SUCCESS
    full = nn.get_output(ctx, 0)[1].decode()
    stop = full[8:10]
    assert stop and stop not in full[:8]
    assert nn.set_input(ctx, 1, {"reverse-prompt": stop}) == Errno.SUCCESS
    assert nn.call("compute", ctx) == Errno.SUCCESS
    assert nn.get_output(ctx, 0)[1].decode() == full[: full.index(stop)]


def test_context_full(tmp_path: Path, tiny_model: Path) -> None:
    with preloaded(tiny_model) as (registry, runtime), harness(runtime, harness_app(runtime)) as h:
        ctx = ready_context(h, {"ignore-eos": True})
        _, end = h.stream(ctx)
        assert end == Errno.CONTEXT_FULL
        meta = h.metadata(ctx)
        assert meta["input_tokens"] + meta["output_tokens"] == registry.get(0).n_ctx
        assert meta["finish_reason"] == "length"


def test_output_buffer_too_small_says_how_much_is_needed(nn: Harness) -> None:
    ctx = ready_context(nn, {"n-predict": 3})
    assert nn.call("compute_single", ctx) == Errno.SUCCESS
    piece = nn.get_output(ctx, 0, single=True)[1]
    buf, written = nn.alloc(1), nn.alloc(4)
    assert nn.call("get_output_single", ctx, 0, buf, 0, written) == Errno.TOO_LARGE
    assert nn.u32(written) == len(piece)
    meta_len = len(nn.get_output(ctx, 1)[1])
    assert nn.call("get_output", ctx, 1, buf, 1, written) == Errno.TOO_LARGE
    assert nn.u32(written) == meta_len
    assert nn.get_output(ctx, 2)[0] == Errno.INVALID_ARGUMENT
    assert nn.get_output(ctx, 5, single=True)[0] == Errno.INVALID_ARGUMENT


def test_compute_without_a_prompt(nn: Harness) -> None:
    rc, graph = nn.load_by_name("default")
    rc, ctx = nn.init_context(graph)
    assert nn.call("compute_single", ctx) == Errno.INVALID_ARGUMENT
    assert nn.call("compute", ctx) == Errno.INVALID_ARGUMENT


def test_fini_single_then_a_new_generation(nn: Harness) -> None:
    ctx = ready_context(nn, {"n-predict": 5})
    first, _ = nn.stream(ctx)
    assert nn.call("fini_single", ctx) == Errno.SUCCESS
    second, _ = nn.stream(ctx)
    assert first == second  # greedy: the same prompt gives the same text


def test_finalize_execution_context(nn: Harness) -> None:
    ctx = ready_context(nn)
    assert nn.call("finalize_execution_context", ctx) == Errno.SUCCESS
    assert nn.call("compute_single", ctx) == Errno.INVALID_ARGUMENT
    assert nn.call("finalize_execution_context", ctx) == Errno.INVALID_ARGUMENT


def test_unload_keeps_host_registered_models(tiny_model: Path) -> None:
    registry = GraphRegistry(LoadOptions(threads=2), loader=Model)
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=128))
    graph = registry.register("default", model)
    runtime = new_runtime(registry)
    try:
        with harness(runtime, harness_app(runtime)) as h:
            assert h.call("unload", graph) == Errno.SUCCESS
            assert h.load_by_name("default") == (Errno.SUCCESS, graph)
            assert h.init_context(graph)[0] == Errno.SUCCESS
    finally:
        model.close()


def test_grammar_constrains_the_output(nn: Harness) -> None:
    ctx = ready_context(nn, {"grammar": 'root ::= ("yes" | "no") "."', "temp": 0.9, "seed": 3})
    text, end = nn.stream(ctx)
    assert end == Errno.END_OF_SEQUENCE
    assert text in (b"yes.", b"no.")


def test_json_schema_becomes_a_grammar(nn: Harness) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    ctx = ready_context(nn, {"json-schema": schema, "n-predict": 40})
    text, _ = nn.stream(ctx)
    assert re.fullmatch(rb'\{\s*"ok"\s*:\s*(true|false)\s*\}', text), text


def test_a_bad_grammar_is_an_invalid_argument_of_the_call_that_sets_it(nn: Harness) -> None:
    ctx = ready_context(nn)
    assert nn.set_input(ctx, 1, {"grammar": "root ::= ("}) == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, {"json-schema": {"type": "no-such-type"}}) == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, {"json-schema": "{not json"}) == Errno.INVALID_ARGUMENT


def test_cancelled_session_fails_the_next_call_and_stops_generating(tiny_model: Path) -> None:
    with preloaded(tiny_model, ctx_size=2048) as (_, runtime), harness(runtime, harness_app(runtime)) as h:
        ctx = ready_context(h, {"ignore-eos": True})
        assert h.call("compute_single", ctx) == Errno.SUCCESS
        sequence = h.session.contexts[ctx].sequence
        assert isinstance(sequence, Sequence)  # the engine's own: read its counters
        h.session.cancel()
        assert h.call("compute_single", ctx) == Errno.RUNTIME_ERROR
        list(sequence)  # drains at once: the scheduler dropped it
        assert sequence.finish_reason == "cancelled"
        assert sequence.n_generated < 2048 - 30


class _CancelledWhileStarting:
    """The model, but the request is cancelled as a sequence starts: after the host call's
    check, before the sequence exists (a wall time running out, or the client leaving, on
    another thread)."""

    def __init__(self, model: Any, session: NNSession) -> None:
        self._model, self._session = model, session

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self._session.cancel()
        return self._model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def test_a_cancel_while_the_sequence_starts_still_stops_it(tiny_model: Path) -> None:
    with preloaded(tiny_model, ctx_size=2048) as (_, runtime), harness(runtime, harness_app(runtime)) as h:
        ctx = ready_context(h, {"ignore-eos": True})
        context = h.session.contexts[ctx]
        context.model = _CancelledWhileStarting(context.model, h.session)  # stands in at the model seam
        assert h.call("compute_single", ctx) == Errno.RUNTIME_ERROR
        sequence = context.sequence
        assert isinstance(sequence, Sequence)
        list(sequence)  # drains at once: the scheduler dropped it
        assert sequence.finish_reason == "cancelled"
        assert sequence.n_generated < 2048 - 30


# -- llamaedge.chat_template -----------------------------------------------------------------


def render(nn: Harness, graph: int, body: bytes, size: int = 4096) -> tuple[int, bytes, int]:
    buf, written = nn.alloc(size), nn.alloc(4)
    rc = nn.call("chat_template", graph, nn.alloc(body), len(body), buf, size, written)
    return rc, nn.read(buf, nn.u32(written)) if rc == 0 else b"", nn.u32(written)


def test_chat_template_renders_the_embedded_template(nn: Harness) -> None:
    _, graph = nn.load_by_name("default")
    body = b'{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}'
    rc, prompt, _ = render(nn, graph, body)
    assert rc == Errno.SUCCESS
    assert prompt == b"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    rc, _, needed = render(nn, graph, body, size=8)
    assert rc == Errno.TOO_LARGE and needed == len(prompt)
    assert render(nn, graph, b"{bad")[0] == Errno.INVALID_ARGUMENT
    assert render(nn, graph, b'{"messages": 3}')[0] == Errno.INVALID_ARGUMENT
    assert render(nn, 77, body)[0] == Errno.INVALID_ARGUMENT


def test_chat_template_of_a_model_without_one_is_not_found(tmp_path: Path) -> None:
    bare = write_tiny_gguf(tmp_path / "bare.gguf", chat_template=None)
    with preloaded(bare, name="bare", ctx_size=128) as (_, runtime), harness(runtime, harness_app(runtime)) as h:
        _, graph = h.load_by_name("bare")
        assert render(h, graph, b'{"messages":[{"role":"user","content":"Hi"}]}')[0] == Errno.NOT_FOUND


# -- extensions: logit-bias, logprobs ------------------------------------------------------------


def first_token(nn: Harness, ctx: int) -> dict:
    assert nn.call("compute_single", ctx) == Errno.SUCCESS
    rc, raw = nn.get_output(ctx, 2, single=True)
    assert rc == Errno.SUCCESS
    return json.loads(raw)


def test_logit_bias_minus_100_changes_the_greedy_token(nn: Harness) -> None:
    ctx = ready_context(nn, {"n-predict": 1, "logprobs": True, "top-logprobs": 2})
    greedy = first_token(nn, ctx)
    assert nn.call("fini_single", ctx) == Errno.SUCCESS
    assert nn.set_input(ctx, 1, {"logit-bias": {str(greedy["id"]): -100}}) == Errno.SUCCESS
    biased = first_token(nn, ctx)
    assert biased["id"] != greedy["id"]
    assert biased["id"] == greedy["top_logprobs"][1]["id"]  # the runner-up takes its place
    assert greedy["id"] not in [t["id"] for t in biased["top_logprobs"]]


@pytest.mark.parametrize("bias", [{"x": 1}, {"999999": 1}, {"-1": 1}, {"5": "high"}, {"5": True}, [5]])
def test_a_bad_logit_bias_is_an_invalid_argument(nn: Harness, bias: object) -> None:
    ctx = ready_context(nn)
    raw = json.dumps({"logit-bias": bias}).encode()
    assert nn.set_input(ctx, 1, raw) == Errno.INVALID_ARGUMENT


def test_logprobs_of_each_token_and_of_the_whole_generation(nn: Harness) -> None:
    ctx = ready_context(nn, {"n-predict": 6, "ignore-eos": True, "logprobs": True, "top-logprobs": 5})
    records = []
    while nn.call("compute_single", ctx) == Errno.SUCCESS:
        piece = nn.get_output(ctx, 0, single=True)[1]
        record = json.loads(nn.get_output(ctx, 2, single=True)[1])
        assert bytes(record["bytes"]) == piece
        assert record["token"] == piece.decode("utf-8", errors="replace")
        top = record["top_logprobs"]
        assert len(top) == 5 and len({t["id"] for t in top}) == 5
        assert top[0]["id"] == record["id"]  # greedy: the sampled token is the likeliest
        assert top[0]["logprob"] == record["logprob"]
        logprobs = [t["logprob"] for t in top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert all(lp <= 0 for lp in logprobs)
        assert sum(math.exp(lp) for lp in logprobs) <= 1 + 1e-6
        records.append(record)
    assert len(records) == 6
    assert json.loads(nn.get_output(ctx, 2)[1]) == records


def test_logprobs_are_off_unless_asked_for(nn: Harness) -> None:
    ctx = ready_context(nn, {"n-predict": 2})
    assert nn.call("compute_single", ctx) == Errno.SUCCESS
    assert nn.get_output(ctx, 2, single=True)[0] == Errno.INVALID_ARGUMENT
    assert nn.get_output(ctx, 2)[0] == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, {"top-logprobs": 21}) == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, {"logprobs": "yes"}) == Errno.INVALID_ARGUMENT


# -- extensions: the prompt as tokens, and as text -----------------------------------------------


def test_a_token_prompt_generates_what_its_text_does(nn: Harness, runtime: Runtime) -> None:
    tokens = runtime.registry.get(0).tokenize(PROMPT)
    text_ctx = ready_context(nn, {"n-predict": 8})
    by_text, _ = nn.stream(text_ctx)
    _, graph = nn.load_by_name("default")
    _, ctx = nn.init_context(graph)
    assert nn.set_input(ctx, 1, {**GREEDY, "n-predict": 8}) == Errno.SUCCESS
    assert nn.set_input(ctx, 2, struct.pack(f"<{len(tokens)}I", *tokens)) == Errno.SUCCESS
    assert nn.metadata(ctx)["input_tokens"] == len(tokens)
    assert nn.get_output(ctx, 3) == (Errno.SUCCESS, PROMPT)
    assert nn.stream(ctx)[0] == by_text


def test_token_prompt_errors(nn: Harness, runtime: Runtime) -> None:
    model = runtime.registry.get(0)
    assert isinstance(model, Model)  # the engine's own: read its vocabulary
    n_vocab = model.n_vocab
    ctx = ready_context(nn)
    assert nn.set_input(ctx, 2, struct.pack("<2I", 5, n_vocab)) == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 2, b"\x01\x00\x00") == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 2, b"") == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 2, struct.pack("<300I", *[40] * 300)) == Errno.PROMPT_TOO_LONG


# -- extensions: grammar prefix and suffix, lazy grammars ----------------------------------------

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def test_grammar_prefix_and_suffix_wrap_the_json_schema(nn: Harness) -> None:
    ctx = ready_context(nn, {"json-schema": SCHEMA, "grammar-prefix": "<tool_call>\n",
                             "grammar-suffix": "\n</tool_call>", "temp": 0.9, "seed": 7, "n-predict": 120})
    text, end = nn.stream(ctx)
    assert end == Errno.END_OF_SEQUENCE
    decoded = text.decode()
    assert decoded.startswith("<tool_call>\n") and decoded.endswith("\n</tool_call>"), decoded
    value = json.loads(decoded[len("<tool_call>\n"):-len("\n</tool_call>")])
    assert isinstance(value["ok"], bool)


def unconstrained(nn: Harness, n: int) -> list[bytes]:
    ctx = ready_context(nn, {"n-predict": n, "ignore-eos": True})
    pieces = []
    while nn.call("compute_single", ctx) == Errno.SUCCESS:
        pieces.append(nn.get_output(ctx, 0, single=True)[1])
    return pieces


def test_a_lazy_grammar_is_free_until_its_trigger_then_constrains(nn: Harness) -> None:
    pieces = unconstrained(nn, 4)
    before, trigger = b"".join(pieces[:2]).decode(), b"".join(pieces[2:4]).decode()
    assert trigger not in before + trigger[:-1]
    ctx = ready_context(nn, {"grammar-triggers": [trigger], "grammar-prefix": trigger,
                             "json-schema": {"type": "boolean"}, "n-predict": 30})
    text, end = nn.stream(ctx)
    assert end == Errno.END_OF_SEQUENCE
    assert re.fullmatch(re.escape(before + trigger) + r"(true|false)\s*", text.decode()), text


def test_a_lazy_grammar_whose_trigger_never_comes_leaves_the_text_free(nn: Harness) -> None:
    free = b"".join(unconstrained(nn, 10))
    ctx = ready_context(nn, {"grammar-triggers": ["<never said>"], "grammar-prefix": "<never said>",
                             "json-schema": SCHEMA, "n-predict": 10, "ignore-eos": True})
    assert nn.stream(ctx)[0] == free


def test_bad_grammar_triggers_are_invalid_arguments(nn: Harness) -> None:
    ctx = ready_context(nn)
    assert nn.set_input(ctx, 1, {"grammar-triggers": "x"}) == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, {"grammar-triggers": [""]}) == Errno.INVALID_ARGUMENT


# -- extensions: embedding mode ------------------------------------------------------------------


def embedding_context(nn: Harness, metadata: dict | None = None) -> int:
    _, graph = nn.load_by_name("default")
    rc, ctx = nn.init_context(graph)
    assert nn.set_input(ctx, 1, {"embedding": True, **(metadata or {})}) == Errno.SUCCESS
    return ctx


def test_embedding_of_one_input_in_wasmedge_shape(nn: Harness) -> None:
    ctx = embedding_context(nn)
    assert nn.set_input(ctx, 0, b"hello there") == Errno.SUCCESS
    assert nn.call("compute", ctx) == Errno.SUCCESS
    rc, raw = nn.get_output(ctx, 0)
    body = json.loads(raw)
    assert set(body) == {"n_embedding", "embedding"}
    vector = np.array(body["embedding"])
    assert body["n_embedding"] == len(vector) == 64
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    rc, floats = nn.get_output(ctx, 2)
    assert rc == Errno.SUCCESS
    assert np.allclose(np.frombuffer(floats, dtype="<f4"), vector, atol=1e-7)
    meta = nn.metadata(ctx)
    assert meta["n_embedding"] == 64
    assert meta["input_tokens_each"] == [meta["input_tokens"]] and meta["input_tokens"] > 0
    assert nn.call("compute_single", ctx) == Errno.UNSUPPORTED_OPERATION


def test_embedding_a_batch_equals_embedding_each_alone(nn: Harness, runtime: Runtime) -> None:
    texts = ["hello there", "good night", "the quick brown fox jumps over the lazy dog"]
    tokens = runtime.registry.get(0).tokenize(b"walk to the station")
    singles = []
    for text in texts:
        ctx = embedding_context(nn)
        assert nn.set_input(ctx, 0, text.encode()) == Errno.SUCCESS
        assert nn.call("compute", ctx) == Errno.SUCCESS
        singles.append(json.loads(nn.get_output(ctx, 0)[1])["embedding"])
    ctx = embedding_context(nn)
    assert nn.set_input(ctx, 3, json.dumps([*texts, tokens]).encode()) == Errno.SUCCESS
    assert nn.call("compute", ctx) == Errno.SUCCESS
    body = json.loads(nn.get_output(ctx, 0)[1])
    assert body["n_embedding"] == 64 and len(body["embeddings"]) == 4
    assert np.allclose(body["embeddings"][:3], singles, atol=1e-4)
    raw = np.frombuffer(nn.get_output(ctx, 2)[1], dtype="<f4").reshape(4, 64)
    assert np.allclose(raw, body["embeddings"], atol=1e-7)
    assert np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-5)
    meta = nn.metadata(ctx)
    assert meta["input_tokens_each"][3] == len(tokens)
    assert meta["input_tokens"] == sum(meta["input_tokens_each"])


def test_embedding_without_normalization(nn: Harness) -> None:
    ctx = embedding_context(nn, {"embd-normalize": -1})
    assert nn.set_input(ctx, 0, b"hello there") == Errno.SUCCESS
    assert nn.call("compute", ctx) == Errno.SUCCESS
    assert np.linalg.norm(json.loads(nn.get_output(ctx, 0)[1])["embedding"]) > 1.5


def test_embedding_input_errors(nn: Harness, runtime: Runtime) -> None:
    model = runtime.registry.get(0)
    assert isinstance(model, Model)  # the engine's own: read its embedding context
    n_ctx_embed = model.n_ctx_embed
    ctx = embedding_context(nn)
    assert nn.set_input(ctx, 3, b"[]") == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 3, b'["a", ""]') == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 3, b'["a", [1, -2]]') == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 3, b'[3]') == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 3, b'{"a": 1}') == Errno.INVALID_ARGUMENT
    too_long = json.dumps(["a", [40] * (n_ctx_embed + 1)]).encode()
    assert nn.set_input(ctx, 3, too_long) == Errno.PROMPT_TOO_LONG
    assert nn.set_input(ctx, 0, b"word " * (n_ctx_embed + 10)) == Errno.PROMPT_TOO_LONG
    assert nn.call("compute", ctx) == Errno.PROMPT_TOO_LONG


# -- extensions: chat templates with tools -------------------------------------------------------

NL = "{{ '\\n' }}"  # the formatter trims the newline after a block tag
TOOLS_TEMPLATE = (
    "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}" + NL + "{% endif %}"
    "{% for m in messages %}{{ m.role }}"
    "{% if m.name %}({{ m.name }}){% endif %}"
    "{% if m.tool_call_id %}[{{ m.tool_call_id }}]{% endif %}: {{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %} CALL {{ c.function.name }}"
    "{% if c.function.arguments is mapping %} city={{ c.function.arguments.city }}"
    "{% else %} raw={{ c.function.arguments }}{% endif %}{% endfor %}" + NL + "{% endfor %}"
    "{% if greeting is defined %}{{ greeting }}" + NL + "{% endif %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def test_chat_template_gets_tools_tool_calls_and_kwargs(tmp_path: Path) -> None:
    default = "{% for m in messages %}{{ m.role }}: {{ m.content }}" + NL + "{% endfor %}"
    path = write_tiny_gguf(tmp_path / "tools.gguf", chat_template=[  # type: ignore[arg-type]
        {"name": "default", "template": default}, {"name": "tool_use", "template": TOOLS_TEMPLATE}])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
    ]
    with preloaded(path, name="tools", ctx_size=128) as (_, runtime), harness(runtime, harness_app(runtime)) as h:
        _, graph = h.load_by_name("tools")
        body = json.dumps({"messages": messages, "tools": tools,
                           "chat_template_kwargs": {"greeting": "hi"}}).encode()
        rc, prompt, _ = render(h, graph, body)
        assert rc == Errno.SUCCESS
        assert prompt.decode() == (
            "TOOLS:get_weather;\nuser: Weather?\n"
            "assistant:  CALL get_weather city=Oslo CALL get_weather raw=not json\n"
            "tool(get_weather)[c1]: sunny\nhi\nassistant:")
        # Without tools, the default template.
        rc, prompt, _ = render(h, graph, json.dumps({"messages": messages[:1]}).encode())
        assert (rc, prompt) == (Errno.SUCCESS, b"user: Weather?\n")
        assert render(h, graph, json.dumps({"messages": [], "tools": {}}).encode())[0] == Errno.INVALID_ARGUMENT
        bad_kwargs = json.dumps({"messages": [], "chat_template_kwargs": []}).encode()
        assert render(h, graph, bad_kwargs)[0] == Errno.INVALID_ARGUMENT


def test_the_registry_loads_models_with_the_loader_it_is_given(tmp_path: Path) -> None:
    loaded: list[tuple[Path, LoadOptions]] = []
    made: list[StandInModel] = []

    def loader(path: Path, options: LoadOptions) -> StandInModel:
        loaded.append((path, options))
        made.append(StandInModel())
        return made[-1]

    (tmp_path / "x.gguf").write_bytes(b"not read by the stand-in")
    registry = GraphRegistry(LoadOptions(threads=1), [Preload("x", "GGML", "AUTO", tmp_path / "x.gguf")],
                             loader=loader)
    runtime = new_runtime(registry)
    with harness(runtime, harness_app(runtime)) as h:
        rc, graph = h.load_by_name("x", {"ctx-size": 64, "threads": 2})
        assert rc == Errno.SUCCESS
        assert h.call("unload", graph) == Errno.SUCCESS
    assert [(p.name, o.ctx_size, o.threads) for p, o in loaded] == [("x.gguf", 64, 2)]
    assert [model.closed for model in made] == [True]


def test_a_registry_without_a_loader_offers_only_the_hosts_models(tiny_model: Path) -> None:
    registry = GraphRegistry()
    registry.register("default", StandInModel())
    runtime = new_runtime(registry)
    with harness(runtime, harness_app(runtime)) as h:
        assert h.load_by_name("default")[0] == Errno.SUCCESS
        out = h.alloc(4)
        by_path = builders(h, b"preload:" + str(tiny_model).encode())
        assert h.call("load", by_path, 1, 6, 0, out) == Errno.NOT_FOUND


# -- WasmEdge fidelity: options at load, stream-stdout --------------------------------------------


def test_options_given_at_load_are_where_every_context_starts(nn: Harness) -> None:
    rc, graph = nn.load_by_name("default", {**GREEDY, "n-predict": 3, "ignore-eos": True})
    assert rc == Errno.SUCCESS
    _, first = nn.init_context(graph)
    _, second = nn.init_context(graph)
    for ctx in (first, second):
        assert nn.set_input(ctx, 0, PROMPT) == Errno.SUCCESS
    assert nn.set_input(second, 1, {"n-predict": 5}) == Errno.SUCCESS  # for this context only
    one, _ = nn.stream(first)
    two, _ = nn.stream(second)
    assert nn.metadata(first)["output_tokens"] == 3
    assert nn.metadata(second)["output_tokens"] == 5
    assert two.startswith(one)  # both greedy, from the load-time temp
    _, third = nn.init_context(graph)
    assert nn.set_input(third, 0, PROMPT) == Errno.SUCCESS
    assert nn.stream(third)[0] == one


def test_a_bad_option_at_load_fails_the_load(nn: Harness, runtime: Runtime, tiny_model: Path) -> None:
    assert nn.load_by_name("default", {"grammar": "root ::= ("})[0] == Errno.INVALID_ARGUMENT
    assert nn.load_by_name("default", {"temp": "hot"})[0] == Errno.INVALID_ARGUMENT
    out = nn.alloc(4)
    by_path = builders(nn, b"preload:" + str(tiny_model).encode(), b'{"ctx-size": 64, "top-k": "many"}')
    n_graphs = len(runtime.registry._graphs)
    assert nn.call("load", by_path, 2, 6, 0, out) == Errno.INVALID_ARGUMENT
    assert runtime.registry._graphs[n_graphs:] == [None]  # loaded, then let go


def test_a_preloaded_model_whose_file_is_gone_is_model_not_found(tmp_path: Path) -> None:
    preloads = [Preload("gone", "GGML", "AUTO", tmp_path / "gone.gguf"), Preload("dir", "GGML", "AUTO", tmp_path)]
    registry = GraphRegistry(LoadOptions(threads=2), preloads, loader=Model)
    runtime = new_runtime(registry)
    with harness(runtime, harness_app(runtime)) as h:
        assert h.load_by_name("gone")[0] == Errno.MODEL_NOT_FOUND
        assert h.load_by_name("gone", {"ctx-size": 64})[0] == Errno.MODEL_NOT_FOUND
        assert h.load_by_name("dir")[0] == Errno.MODEL_NOT_FOUND


def run_compute_app(runtime: Runtime, tmp_path: Path, config: dict) -> tuple[bytes, bytes]:
    """The app passes `config` at load only and calls compute; (what the host streamed to its
    stdout, what the app printed of get_output(0))."""
    app = runtime.load_app(write_app(tmp_path, "nn.wasm", nn_compute_app(PROMPT.decode(), json.dumps(config),
                                                                           at_load=True)))
    host_stdout = io.BytesIO()
    printed = runtime.run_command(app, [], NNSession(runtime.registry, host_stdout=host_stdout))
    return host_stdout.getvalue(), printed


def test_a_wasmedge_app_with_options_at_load_streams_compute_to_stdout(runtime: Runtime, tmp_path: Path) -> None:
    with harness(runtime, harness_app(runtime)) as h:  # the reference texts, before the app runs
        reference, _ = h.stream(ready_context(h, {"n-predict": 40, "ignore-eos": True}))
        twelve, _ = h.stream(ready_context(h, {"n-predict": 12, "ignore-eos": True}))
    config = {**GREEDY, "n-predict": 12, "ignore-eos": True, "stream-stdout": True}
    streamed, printed = run_compute_app(runtime, tmp_path, config)
    assert streamed == printed == twelve
    assert reference.startswith(twelve)
    text = reference.decode()
    stop = text[20:23]
    assert stop and stop not in text[:22]
    streamed, printed = run_compute_app(runtime, tmp_path, {**config, "n-predict": 40, "reverse-prompt": stop})
    assert streamed == printed == text[:20].encode()


def test_a_lazy_grammar_must_start_with_its_trigger(nn: Harness) -> None:
    ctx = ready_context(nn)
    metadata = {"grammar": 'root ::= "abc"', "grammar-triggers": ["xyz"]}
    assert nn.set_input(ctx, 1, metadata) == Errno.INVALID_ARGUMENT


def test_a_token_running_past_a_trigger_against_the_grammar_is_passed_over(nn: Harness) -> None:
    # llama.cpp would abort the process on such a token; the host draws another instead.
    pieces = unconstrained(nn, 12)
    k = next(i for i, piece in enumerate(pieces) if len(piece) >= 3)
    trigger = pieces[k][:-1].decode()
    grammar = f'root ::= "{trigger}" "Q" [a-z]*'
    ctx = ready_context(nn, {"grammar": grammar, "grammar-triggers": [trigger], "n-predict": 12, "ignore-eos": True})
    text, end = nn.stream(ctx)
    assert end == Errno.END_OF_SEQUENCE
    assert text.startswith(b"".join(pieces[:k])) and not text.startswith(b"".join(pieces[: k + 1]))
    decoded = text.decode()
    if trigger in decoded:
        assert re.fullmatch(re.escape(trigger) + "Q[a-z]*", decoded[decoded.index(trigger):])


# -- extensions: preserved-tokens ------------------------------------------------------------------


@pytest.fixture(scope="module")
def markers_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """The tiny model with Gemma 4's markers as control tokens, preloaded as `default`."""
    path = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-markers.gguf", control_tokens=GEMMA4_MARKERS)
    with preloaded(path) as (_, runtime):
        yield runtime


@pytest.fixture
def nn_markers(markers_runtime: Runtime) -> Iterator[Harness]:
    with harness(markers_runtime, harness_app(markers_runtime)) as h:
        yield h


def forcing_the_call_marker(nn: Harness) -> dict:
    """Metadata that makes the next token `<|tool_call>` (a control token the model never says)."""
    rc, graph = nn.load_by_name("default")
    assert rc == Errno.SUCCESS
    marker = nn.session.registry.get(graph).tokenize(b"<|tool_call>")
    assert len(marker) == 1
    return {"n-predict": 1, "logit-bias": {str(marker[0]): 100}, "logprobs": True, "top-logprobs": 1}


def test_a_preserved_control_token_is_in_the_text_and_its_logprobs(nn_markers: Harness) -> None:
    ctx = ready_context(nn_markers, {**forcing_the_call_marker(nn_markers), "preserved-tokens": ["<|tool_call>"]})
    assert nn_markers.call("compute", ctx) == Errno.SUCCESS
    assert nn_markers.get_output(ctx, 0) == (Errno.SUCCESS, b"<|tool_call>")
    [record] = json.loads(nn_markers.get_output(ctx, 2)[1])
    assert record["token"] == "<|tool_call>" and bytes(record["bytes"]) == b"<|tool_call>"
    assert record["top_logprobs"][0]["token"] == "<|tool_call>"
    # streamed token by token, the same
    assert nn_markers.set_input(ctx, 0, PROMPT) == Errno.SUCCESS
    assert nn_markers.stream(ctx) == (b"<|tool_call>", Errno.END_OF_SEQUENCE)


def test_without_preserved_tokens_a_control_token_leaves_no_text(nn_markers: Harness) -> None:
    ctx = ready_context(nn_markers, forcing_the_call_marker(nn_markers))
    assert nn_markers.call("compute", ctx) == Errno.SUCCESS
    assert nn_markers.get_output(ctx, 0) == (Errno.SUCCESS, b"")
    assert nn_markers.metadata(ctx)["output_tokens"] == 1  # generated, not shown
    [record] = json.loads(nn_markers.get_output(ctx, 2)[1])
    assert record["token"] == "" and record["bytes"] == []


def test_preserved_strings_that_are_not_one_token_are_ignored(nn_markers: Harness) -> None:
    # Hermes' `<tool_call>` is several tokens of this vocabulary; so is the marker with a space
    metadata = {**forcing_the_call_marker(nn_markers), "preserved-tokens": ["<tool_call>", " <|tool_call>", "", "[TOOL_CALLS]"]}
    ctx = ready_context(nn_markers, metadata)
    assert nn_markers.call("compute", ctx) == Errno.SUCCESS
    assert nn_markers.get_output(ctx, 0) == (Errno.SUCCESS, b"")
    # set again with the marker itself: this context's next generation shows it
    assert nn_markers.set_input(ctx, 1, {"preserved-tokens": ["<tool_call>", "<|tool_call>"]}) == Errno.SUCCESS
    assert nn_markers.call("compute", ctx) == Errno.SUCCESS
    assert nn_markers.get_output(ctx, 0) == (Errno.SUCCESS, b"<|tool_call>")


def test_preserved_tokens_given_at_load_are_where_every_context_starts(nn_markers: Harness) -> None:
    config = {**GREEDY, **forcing_the_call_marker(nn_markers), "preserved-tokens": ["<|tool_call>"]}
    rc, graph = nn_markers.load_by_name("default", config)
    assert rc == Errno.SUCCESS
    _, ctx = nn_markers.init_context(graph)
    assert nn_markers.set_input(ctx, 0, PROMPT) == Errno.SUCCESS
    assert nn_markers.stream(ctx) == (b"<|tool_call>", Errno.END_OF_SEQUENCE)


@pytest.mark.parametrize("value", ["<|tool_call>", [1], ["<|tool_call>", None], {"<|tool_call>": True}, True, None])
def test_bad_preserved_tokens_are_invalid_arguments(nn_markers: Harness, value: object) -> None:
    ctx = ready_context(nn_markers)
    assert nn_markers.set_input(ctx, 1, {"preserved-tokens": value}) == Errno.INVALID_ARGUMENT
    assert nn_markers.load_by_name("default", {"preserved-tokens": value})[0] == Errno.INVALID_ARGUMENT


def test_the_same_prompt_set_again_is_not_tokenized_again(tiny_model: Path) -> None:
    calls: list[bytes] = []

    class CountingModel(Model):
        def tokenize(self, text: bytes, *, special: bool = True) -> list[int]:
            calls.append(text)
            return super().tokenize(text, special=special)

    with preloaded(tiny_model, loader=CountingModel) as (_, runtime), harness(runtime, harness_app(runtime)) as nn:
        ctx = ready_context(nn)
        assert calls == [PROMPT]
        first = nn.metadata(ctx)["input_tokens"]
        assert nn.set_input(ctx, 1, {"n-predict": 2}) == Errno.SUCCESS
        assert nn.set_input(ctx, 0, PROMPT) == Errno.SUCCESS
        assert nn.metadata(ctx)["input_tokens"] == first
        assert calls == [PROMPT]
        assert nn.call("compute", ctx) == Errno.SUCCESS
        assert nn.metadata(ctx)["output_tokens"] == 2
        assert nn.set_input(ctx, 0, PROMPT + b" more") == Errno.SUCCESS  # another text: tokenized
        assert calls == [PROMPT, PROMPT + b" more"] and nn.metadata(ctx)["input_tokens"] > first


# -- extension: rank pooling ---------------------------------------------------------------------


def test_rank_pooling_on_a_model_that_cannot_rank_is_unsupported(nn: Harness) -> None:
    _, graph = nn.load_by_name("default")
    _, ctx = nn.init_context(graph)
    assert nn.set_input(ctx, 1, {"embedding": True, "pooling": "rank"}) == Errno.UNSUPPORTED_OPERATION
    assert nn.set_input(ctx, 1, {"embedding": True, "pooling": "mean"}) == Errno.INVALID_ARGUMENT
    assert nn.set_input(ctx, 1, {"embedding": True, "pooling": "model"}) == Errno.SUCCESS


def test_rank_pooling_scores_pairs_as_the_engine_does(tmp_path: Path) -> None:
    reranker = write_tiny_reranker(tmp_path / "reranker.gguf")
    pairs = [["where is the cat?", "the cat sat on the mat"], ["where is the cat?", "stock markets fell"]]
    with preloaded(reranker, name="reranker", ctx_size=128) as (registry, runtime), \
            harness(runtime, harness_app(runtime)) as h:
        _, graph = h.load_by_name("reranker")
        _, ctx = h.init_context(graph)
        assert h.set_input(ctx, 1, {"embedding": True, "pooling": "rank"}) == Errno.SUCCESS
        assert h.set_input(ctx, 0, b"a prompt") == Errno.INVALID_ARGUMENT  # pairs only
        assert h.set_input(ctx, 3, json.dumps(["not a pair"]).encode()) == Errno.INVALID_ARGUMENT
        assert h.set_input(ctx, 3, json.dumps(pairs).encode()) == Errno.SUCCESS
        assert h.call("compute", ctx) == Errno.SUCCESS
        scores = json.loads(h.get_output(ctx, 0)[1])["scores"]
        model = registry.get(graph)
        assert scores == model.rank([model.rank_input(q.encode(), d.encode()) for q, d in pairs])
        rc, raw = h.get_output(ctx, 2)
        assert rc == Errno.SUCCESS and np.frombuffer(raw, dtype="<f4").tolist() == scores
        meta = h.metadata(ctx)
        assert meta["n_embedding"] == 1 and len(meta["input_tokens_each"]) == 2
        # Pairs are no input of the model's own pooling: switching drops them.
        assert h.set_input(ctx, 1, {"pooling": "model"}) == Errno.SUCCESS
        assert h.call("compute", ctx) == Errno.INVALID_ARGUMENT
