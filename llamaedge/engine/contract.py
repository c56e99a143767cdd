"""What the runtime may use of a loaded model: the engine's contract with its callers.

`Model` is its one implementation on llama.cpp. The runtime (runtime/nn, runtime/imports), the
policy wrappers (runtime/guard.py), tests and benchmarks type against these protocols, so a
stand-in or a wrapper implements exactly this much, and a loader (`ModelLoader`) is passed in
wherever models are made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llamaedge.engine.types import FinishReason, LoadOptions, SamplingOptions, Token

if TYPE_CHECKING:
    import numpy as np


class Generation(Protocol):
    """A sequence being generated, as its reader sees it (the engine's `Sequence`)."""

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why it ended; None while it runs."""

    @property
    def error(self) -> str | None:
        """What went wrong, when it ended with FinishReason.ERROR."""

    @property
    def n_cached(self) -> int:
        """Prompt tokens found in the KV cache, not decoded again."""

    @property
    def n_drafted(self) -> int:
        """Drafted tokens the model checked (speculative decoding)."""

    @property
    def n_accepted(self) -> int:
        """Of those, the tokens it kept."""

    def next_token(self, timeout_s: float | None = None) -> Token | None:
        """The next token, waiting for it; None once the sequence has ended."""

    def cancel(self) -> None:
        """Stop generating; the engine drops the sequence at its next step."""


class LoadedModel(Protocol):
    """A model ready to generate and embed. Every method may be called from any thread."""

    @property
    def n_ctx(self) -> int:
        """The context, in tokens: a prompt must be shorter."""

    @property
    def n_embd(self) -> int:
        """The length of an embedding."""

    def tokenize(self, text: bytes, *, special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> bytes: ...

    def check_tokens(self, tokens: list[int]) -> None:
        """BadInput unless every token is in the vocabulary."""

    def preserved_tokens(self, texts: list[str]) -> frozenset[int]:
        """The ids of those of `texts` that are one token each."""

    def check_sampling(self, sampling: SamplingOptions) -> None:
        """BadInput or GrammarError when a sequence could not be sampled with `sampling`."""

    def generate(self, prompt: list[int], sampling: SamplingOptions, *, group: object = None,
                 images: dict[int, Any] | None = None) -> Generation:
        """Start a sequence (`images`: a MediaPrompt's, for its tokens; a caller with none
        passes none, so that text-only stand-ins need not take it). BadInput, PromptTooLong,
        GrammarError."""

    @property
    def vision(self) -> bool:
        """Whether the model reads images (it was loaded with a projector)."""

    @property
    def media_marker(self) -> bytes:
        """What stands for an image in the text given to `tokenize_media`."""

    def read_image(self, data: bytes) -> Any:
        """An image decoded (a vision.Image: `width`, `height`). BadInput."""

    def tokenize_media(self, text: bytes, images: list[Any]) -> Any:
        """A vision.MediaPrompt: `tokens`, `images` (for `generate`), `n_tokens` (what the
        model reads, the images' embeddings included). BadInput."""

    def check_embedding_inputs(self, inputs: list[list[int]]) -> None:
        """BadInput or PromptTooLong for inputs `embed` would refuse."""

    def embed(self, inputs: list[list[int]], *, norm: int = 2) -> np.ndarray:
        """One embedding per input (float32 rows of n_embd). BadInput, PromptTooLong."""

    @property
    def can_rank(self) -> bool:
        """Whether the model is a reranker (llama.cpp's rank pooling)."""

    def rank_input(self, query: bytes, document: bytes) -> list[int]:
        """The tokens `rank` scores for a (query, document) pair."""

    def rank(self, inputs: list[list[int]]) -> list[float]:
        """A reranker's score of each input. BadInput, PromptTooLong."""

    def render_chat(self, messages: list[dict[str, object]], *, add_generation_prompt: bool = True,
                    tools: list[object] | None = None, template_kwargs: dict[str, object] | None = None) -> str:
        """The prompt the model's own chat template makes. NoChatTemplate, TemplateError."""

    def close(self) -> None: ...


ModelLoader = Callable[[Path, LoadOptions], LoadedModel]
"""Makes a model of a GGUF file (the engine's: `Model`). EngineError when it cannot."""
