"""The generated test model loads in real llama.cpp and has the properties other tests rely on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from tests.tiny_gguf import CHATML, IM_END, IM_START, write_tiny_gguf


def _load(path: Path, n_ctx: int = 512) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, verbose=False)


@pytest.fixture(scope="module")
def llm(tiny_model: Path) -> Iterator[llama_cpp.Llama]:
    model = _load(tiny_model, n_ctx=2048)
    yield model
    model.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_arguments_write_identical_bytes(tmp_path: Path) -> None:
    first = write_tiny_gguf(tmp_path / "a.gguf")
    second = write_tiny_gguf(tmp_path / "b.gguf")
    assert _sha256(first) == _sha256(second)
    other_seed = write_tiny_gguf(tmp_path / "c.gguf", seed=1)
    assert _sha256(other_seed) != _sha256(first)


def test_loads_as_a_small_llama_model(llm: llama_cpp.Llama, tiny_model: Path) -> None:
    assert tiny_model.stat().st_size < 1_000_000
    assert llm.metadata["general.architecture"] == "llama"
    assert llm.metadata["llama.block_count"] == "2"
    assert llm.metadata["llama.context_length"] == "2048"
    assert llm.metadata["tokenizer.ggml.model"] == "gpt2"
    assert llm.n_embd() == 64
    assert llm.n_ctx() == 2048


def test_context_length_is_configurable(tmp_path: Path) -> None:
    model = _load(write_tiny_gguf(tmp_path / "ctx.gguf", ctx_len=4096))
    try:
        assert model.metadata["llama.context_length"] == "4096"
        assert model.n_ctx() == 512
    finally:
        model.close()


def test_chatml_template_and_special_tokens(llm: llama_cpp.Llama) -> None:
    assert llm.metadata["tokenizer.chat_template"] == CHATML
    im_start = llm.tokenize(IM_START.encode(), add_bos=False, special=True)
    im_end = llm.tokenize(IM_END.encode(), add_bos=False, special=True)
    assert im_start == [llm.token_bos()]
    assert im_end == [llm.token_eos()]
    # add_bos is false: plain text tokenizes to itself, with no BOS in front.
    tokens = llm.tokenize(b"Hello there! How are you today?", add_bos=True)
    assert tokens[0] != llm.token_bos()
    assert llm.detokenize(tokens) == b"Hello there! How are you today?"
    # The BPE merges are real: common words are fewer tokens than bytes.
    assert len(tokens) < len("Hello there! How are you today?")


def test_no_template_when_asked(tmp_path: Path) -> None:
    model = _load(write_tiny_gguf(tmp_path / "plain.gguf", chat_template=None))
    try:
        assert "tokenizer.chat_template" not in model.metadata
    finally:
        model.close()


@pytest.mark.parametrize("temperature", [0.0, 0.8, 1.5])
def test_generation_is_printable_ascii(llm: llama_cpp.Llama, temperature: float) -> None:
    messages = [{"role": "user", "content": "Say something."}]
    # Greedy decoding ignores the seed: one run says all it can.
    for seed in range(1 if temperature == 0.0 else 3):
        reply = llm.create_chat_completion(messages, max_tokens=64, temperature=temperature, seed=seed)
        text = reply["choices"][0]["message"]["content"]
        assert text, "the model said nothing"
        assert all(" " <= ch <= "~" for ch in text), repr(text)


def test_generation_ends_sometimes_and_runs_long_sometimes(llm: llama_cpp.Llama) -> None:
    messages = [{"role": "user", "content": "Hello, who are you?"}]
    natural, by_length = 0, 0
    for seed in range(20):
        reply = llm.create_chat_completion(messages, max_tokens=64, temperature=0.8, seed=seed)
        finish = reply["choices"][0]["finish_reason"]
        tokens = reply["usage"]["completion_tokens"]
        if finish == "stop":
            assert tokens < 64
            natural += 1
        else:
            assert finish == "length"
            by_length += 1
    assert natural >= 3, "the end token is (almost) never sampled"
    assert by_length >= 3, "generations (almost) never reach 64 tokens"


def test_same_seed_same_reply(llm: llama_cpp.Llama) -> None:
    messages = [{"role": "user", "content": "Tell me a story."}]
    replies = [
        llm.create_chat_completion(messages, max_tokens=32, temperature=0.8, seed=7)["choices"][0]["message"]["content"]
        for _ in range(2)
    ]
    assert replies[0] == replies[1]
