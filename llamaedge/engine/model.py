"""A GGUF model on llama.cpp: one llama context served by one scheduler, the tokenizer, the
chat templates, and (on first use) an embedding context on the same weights.

Tokenizing and detokenizing read only the vocabulary, which llama.cpp never mutates, so they
run on the caller's thread; everything that computes runs on the scheduler's thread.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import time
from array import array
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import llama_cpp as lc

from llamaedge.engine import vocab
from llamaedge.engine.backend import init_backend
from llamaedge.engine.chat_template import ChatTemplates, preload
from llamaedge.engine.cpus import usable_cpus
from llamaedge.engine.embedding import Embedder, check_inputs, decode_groups, normalize, rank_prompt
from llamaedge.engine.errors import BadInput, LoadError, ModelClosed, PromptTooLong
from llamaedge.engine.gguf import pooling_is_defined, pooling_is_rank, read_metadata
from llamaedge.engine.llama_decoder import LlamaDecoder, LlamaDrafter
from llamaedge.engine.sampling import Sampler
from llamaedge.engine.scheduler import Scheduler
from llamaedge.engine.sequence import Sequence
from llamaedge.engine.speculative import DraftWant
from llamaedge.engine.types import (EMBED_CTX_MAX, EngineStats, LoadOptions, SamplingOptions, context_size,
                                    default_parallel, default_threads)

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from llamaedge.engine.vision import Image, MediaPrompt, Projector

log = logging.getLogger("llamaedge.engine")

# preserved_tokens strings remembered per model: apps send the same short list every time; an
# app that sends ever new strings gets them resolved each time rather than growing the cache.
_SINGLE_TOKENS_CACHED_MAX = 1024


def _embed_with(embedder: Callable[[], Embedder], inputs: list[list[int]]) -> np.ndarray:
    """A scheduler job: `embedder` is called here, so that the embedding context is made on
    first use on the scheduler's thread, as every llama.cpp call of the model is."""
    return embedder().embed(inputs)


class Model:
    """A GGUF model loaded into one llama context, served by one scheduler thread."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        init_backend()
        self.path = Path(path)
        self.options = options
        if not self.path.is_file():
            raise LoadError(f"model file not found: {self.path}", hint="check the path")
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers
        mparams.main_gpu = options.main_gpu
        mparams.use_mmap = options.use_mmap
        started = time.monotonic()
        preload()
        self._model = lc.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise LoadError(
                f"llama.cpp could not load {self.path.name}",
                hint="is it a GGUF file of an architecture this llama.cpp supports? (run with -v for details)",
            )
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_ctx_train = lc.llama_model_n_ctx_train(self._model)
        self.n_layers = lc.llama_model_n_layer(self._model)
        self.n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        self.size_bytes = lc.llama_model_size(self._model)

        ctx_size = context_size(options.ctx_size, self.n_ctx_train)
        threads = threads_batch = options.threads or default_threads(usable_cpus())
        parallel = max(1, options.parallel) if options.parallel is not None else default_parallel(ctx_size)
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = ctx_size
        cparams.n_batch = options.batch_size
        cparams.n_ubatch = min(options.ubatch_size, options.batch_size)
        cparams.n_seq_max = parallel
        cparams.kv_unified = True  # every sequence may use the whole context
        cparams.n_threads = threads
        cparams.n_threads_batch = threads_batch  # llama.cpp: for every decode of more than one token
        cparams.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lc.llama_model_free(self._model)
            raise LoadError(
                f"llama.cpp could not create a context of {ctx_size} tokens for {self.path.name}",
                hint="try a smaller --ctx-size",
            )
        self.n_ctx = lc.llama_n_ctx(self._ctx)
        self.threads = threads
        self.threads_batch = threads_batch
        self.parallel = parallel
        self.drafter: LlamaDrafter | None = None  # the draft model (SpecOptions.draft_model)
        if options.speculative.draft_model is not None:
            try:
                self.drafter = LlamaDrafter(Path(options.speculative.draft_model), mparams, cparams, self._vocab,
                                            read_max=options.prefill_chunk)
            except LoadError:
                lc.llama_free(self._ctx)
                lc.llama_model_free(self._model)
                raise
        self.projector: Projector | None = None
        if options.mmproj is not None:
            from llamaedge.engine.vision import Projector  # loads libmtmd: only for a model that reads images

            try:
                self.projector = Projector(Path(options.mmproj), self._model, use_gpu=options.n_gpu_layers != 0,
                                           threads=threads_batch)
            except LoadError:
                if self.drafter is not None:
                    self.drafter.close()
                lc.llama_free(self._ctx)
                lc.llama_model_free(self._model)
                raise
        self.load_s = time.monotonic() - started

        self.metadata = read_metadata(self._model)
        self.chat_template: str | None = self.metadata.get("tokenizer.chat_template")
        self.bos_token = self._special_text(lc.llama_vocab_bos(self._vocab))
        self.eos_token = self._special_text(lc.llama_vocab_eos(self._vocab))
        self._bos = lc.llama_vocab_bos(self._vocab)
        self._single_tokens: dict[str, int | None] = {}  # preserved_tokens' strings, resolved
        self.templates = ChatTemplates(self.chat_template, self.metadata.get("tokenizer.chat_template.tool_use"),
                                       bos_token=self.bos_token, eos_token=self.eos_token)

        self.n_embd = lc.llama_model_n_embd_out(self._model)
        self.n_ctx_embed = min(self.n_ctx_train or EMBED_CTX_MAX, EMBED_CTX_MAX)
        self._embedder: Embedder | None = None
        self.can_rank = pooling_is_rank(self.metadata)
        self._ranker: Embedder | None = None  # a reranker's rank-pooling context, on first use

        self._decoder = LlamaDecoder(self._ctx, self._vocab, self.n_vocab, options.batch_size, self.token_piece,
                                     self.projector)
        self._scheduler = Scheduler(self._decoder, parallel, prefill_chunk=options.prefill_chunk,
                                    speculative=options.speculative, drafter=self.drafter)

    # -- information -----------------------------------------------------------------------

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.token_piece(token, special=True).decode(errors="replace")

    @property
    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        lc.llama_model_desc(self._model, buf, len(buf))
        return buf.value.decode(errors="replace")

    def stats(self) -> EngineStats:
        return self._scheduler.stats()

    @property
    def n_tokens_decoded(self) -> int:
        """Tokens fed through decodes so far (generation and embedding contexts)."""
        embedded = sum(e.n_tokens_decoded for e in (self._embedder, self._ranker) if e is not None)
        return self._scheduler.n_tokens_decoded + embedded

    def render_chat(self, messages: list[dict[str, object]], *, add_generation_prompt: bool = True,
                    tools: list[object] | None = None, template_kwargs: dict[str, object] | None = None) -> str:
        """The prompt the model's own chat template makes of `messages` (see ChatTemplates).
        NoChatTemplate, TemplateError."""
        return self.templates.render(messages, add_generation_prompt=add_generation_prompt,
                                     tools=tools, template_kwargs=template_kwargs)

    # -- tokens ----------------------------------------------------------------------------

    def tokenize(self, text: bytes, *, special: bool = True) -> list[int]:
        """Tokens of `text`, with the model's BOS when it wants one (never twice: chat
        templates often write the BOS text themselves)."""
        result = vocab.tokenize(self._vocab, text, add_special=True, parse_special=special)
        if len(result) >= 2 and result[0] == result[1] == self._bos:
            del result[0]
        return result

    def token_piece(self, token: int, *, special: bool = False) -> bytes:
        return vocab.token_piece(self._vocab, token, special=special)

    def preserved_tokens(self, texts: list[str]) -> frozenset[int]:
        """The ids of those of `texts` that are one token each (the others are left out), for
        SamplingOptions.preserved_tokens. Resolved once per string (up to
        _SINGLE_TOKENS_CACHED_MAX of them): apps send one list with every request."""
        ids: set[int] = set()
        for text in texts:
            if text in self._single_tokens:
                token = self._single_tokens[text]
            else:
                token = vocab.single_token(self._vocab, text.encode())
                if len(self._single_tokens) < _SINGLE_TOKENS_CACHED_MAX:
                    self._single_tokens[text] = token
            if token is not None:
                ids.add(token)
        return frozenset(ids)

    def detokenize(self, tokens: list[int]) -> bytes:
        """The text of `tokens` as the model writes it, special tokens included; an image's
        placeholders (see vision.py) as one media marker."""
        if not tokens:
            return b""
        if any(token < 0 for token in tokens):
            return self._detokenize_media(tokens)
        array = (lc.llama_token * len(tokens))(*tokens)
        size = max(64, len(tokens) * 8)
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_detokenize(self._vocab, array, len(tokens), buf, size, False, True)
            if n >= 0:
                return buf.raw[:n]
            size = -n
        raise RuntimeError("llama_detokenize did not fit its buffer")

    def _detokenize_media(self, tokens: list[int]) -> bytes:
        marker = self.projector.marker if self.projector is not None else b"<__media__>"
        out, text = bytearray(), []
        for i, token in enumerate(tokens):
            if token >= 0:
                text.append(token)
            elif i == 0 or tokens[i - 1] != token:
                out += self.detokenize(text) + marker
                text = []
        return bytes(out + self.detokenize(text))

    # -- images ----------------------------------------------------------------------------

    @property
    def vision(self) -> bool:
        """Whether the model reads images (it was loaded with a projector)."""
        return self.projector is not None

    @property
    def media_marker(self) -> bytes:
        """What stands for an image in a prompt's text (mtmd's marker)."""
        return self.projector.marker if self.projector is not None else b""

    def read_image(self, data: bytes) -> Image:
        """An image decoded (its `width` and `height` in pixels). BadInput when the model
        reads no images, or `data` is not an image it can decode."""
        return self._vision().image(data)

    def tokenize_media(self, text: bytes, images: list[Image]) -> MediaPrompt:
        """`text` with each media marker standing for the next of `images`, as the model
        reads it (for `generate(prompt.tokens, images=prompt.images)`). BadInput."""
        return self._vision().tokenize(text, images, self._bos)

    def _vision(self) -> Projector:
        if self.projector is None:
            raise BadInput(f"{self.path.name} reads no images: it was loaded without a projector (mmproj)")
        return self.projector

    def check_tokens(self, tokens: list[int]) -> None:
        """BadInput unless every token is in the vocabulary."""
        for token in tokens:
            if not 0 <= token < self.n_vocab:
                raise BadInput(f"{token} is not a token id of this model (vocabulary of {self.n_vocab})")

    # -- generation ------------------------------------------------------------------------

    def check_sampling(self, sampling: SamplingOptions) -> None:
        """BadInput or GrammarError when a sequence could not be sampled with `sampling`."""
        Sampler(self._vocab, self.n_vocab, sampling).free()

    def generate(self, prompt: list[int], sampling: SamplingOptions, *, group: object = None,
                 images: dict[int, object] | None = None) -> Sequence:
        """Queue a sequence; read it with `Sequence.next_token`, `next_piece` or by
        iterating. `group`: sequences one reader reads in turn (see `Sequence.group`);
        `images`: a MediaPrompt's, for its tokens. BadInput, PromptTooLong, GrammarError."""
        if not prompt:
            raise BadInput("empty prompt")
        if images and (prompt[-1] < 0 or any(token < 0 and token not in images for token in prompt)):
            raise BadInput("a prompt with images must end with text, and each image must come with it")
        if len(prompt) >= self.n_ctx:
            raise PromptTooLong(f"prompt of {len(prompt)} tokens does not fit a context of {self.n_ctx}")
        sampling = dataclasses.replace(sampling)  # the caller may change its own meanwhile
        seq = Sequence(prompt=list(prompt), sampling=sampling, group=group, images=dict(images or {}))
        seq._sampler = Sampler(self._vocab, self.n_vocab, sampling)
        try:
            self._scheduler.submit(seq)
        except ModelClosed:
            seq._sampler.free()
            raise
        return seq

    def warm_up_drafter(self) -> None:
        """Draft one token from a short text with the draft model, if there is one: its first
        decode faults its weights in and starts its threads, here rather than in the first
        request that drafts."""
        if self.drafter is not None:
            drafter, text = self.drafter, array("i", self.tokenize(b"Hello"))
            try:
                self._scheduler.run_job(lambda: drafter.draft([DraftWant(0, text, 1)]))
            except RuntimeError as exc:  # a decode failed: the first draft will meet it too, and say so
                log.warning("draft model warm-up failed: %s", exc)

    # -- embeddings ------------------------------------------------------------------------

    def check_embedding_inputs(self, inputs: list[list[int]]) -> None:
        """BadInput for an empty input, PromptTooLong for one the embedding context cannot hold."""
        check_inputs(inputs, self.n_ctx_embed)

    def embed(self, inputs: list[list[int]], *, norm: int = 2) -> np.ndarray:
        """One pooled embedding per input (float32 rows of n_embd), normalized as
        llama.cpp's `embd_normalize` says (see embedding.normalize). Inputs are decoded
        several at a time on the scheduler's thread, one decode per job, so that generation
        steps go on between them. BadInput, PromptTooLong."""
        import numpy as np  # not at import: it is not needed to load a model and start (40 ms)

        check_inputs(inputs, self.n_ctx_embed)
        rows = [self._scheduler.run_job(partial(_embed_with, self._embedding, [inputs[i] for i in group]))
                for group in decode_groups(inputs, self.n_ctx_embed)]
        return normalize(np.concatenate(rows), norm)

    def _embedding(self) -> Embedder:
        if self._embedder is None:
            # A reranker's own pooling (rank) gives scores, not embeddings: it embeds by mean.
            pooling = lc.LLAMA_POOLING_TYPE_UNSPECIFIED if pooling_is_defined(self.metadata) else lc.LLAMA_POOLING_TYPE_MEAN
            self._embedder = Embedder(self._model, n_ctx=self.n_ctx_embed, n_out=self.n_embd,
                                      threads=self.threads_batch, pooling=pooling)
        return self._embedder

    # -- reranking -------------------------------------------------------------------------

    def rank_input(self, query: bytes, document: bytes) -> list[int]:
        """The tokens of a (query, document) pair, as llama-server formats it for rank
        pooling (see embedding.rank_prompt)."""
        template = lc.llama_model_chat_template(self._model, b"rerank")
        return rank_prompt(self._vocab, template.decode() if template else None, query, document)

    def rank(self, inputs: list[list[int]]) -> list[float]:
        """A reranker's score of each input (from `rank_input`): its classification head's
        first output, unnormalized, as llama-server's /rerank reports it. BadInput (also for
        a model that is not a reranker), PromptTooLong."""
        if not self.can_rank:
            raise BadInput("this model cannot rerank: its pooling type is not rank")
        check_inputs(inputs, self.n_ctx_embed)
        scores: list[float] = []
        for group in decode_groups(inputs, self.n_ctx_embed):
            rows = self._scheduler.run_job(partial(_embed_with, self._ranking, [inputs[i] for i in group]))
            scores += [float(row[0]) for row in rows]
        return scores

    def _ranking(self) -> Embedder:
        if self._ranker is None:
            self._ranker = Embedder(self._model, n_ctx=self.n_ctx_embed, n_out=lc.llama_model_n_cls_out(self._model),
                                    threads=self.threads_batch, pooling=lc.LLAMA_POOLING_TYPE_RANK)
        return self._ranker

    def close(self) -> None:
        self._scheduler.close()
        for embedder in (self._embedder, self._ranker):
            if embedder is not None:
                embedder.close()
        self._decoder.close()
        if self.drafter is not None:
            self.drafter.close()
        if self.projector is not None:
            self.projector.close()
        lc.llama_free(self._ctx)
        lc.llama_model_free(self._model)
