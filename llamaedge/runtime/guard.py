"""How one run enforces its policy (policy.py).

    RunGuard        one per request: the deadline, the token budget, the first breach
    PolicyBreach    a limit hit or a thing not granted: fails that request (403, 504, 500;
                    breaches.py)

The guard enforces the policy at the WASI-NN seam without the WASI-NN layer knowing: the
session's registry is replaced by a view that loads only the granted graph names
(PolicyRegistry), and the models it hands out cap the tokens generated (BudgetedModel,
BudgetedSequence). The runtime (host.py) consults the guard on every host call and stops
renewing a run that breached.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamaedge.engine import FinishReason, Generation, LoadedModel, SamplingOptions, Token
from llamaedge.runtime.breaches import ModelNotAllowed, PolicyBreach, WallTimeExceeded
from llamaedge.runtime.nn import Errno, Graphs, NNError, NNSession
from llamaedge.runtime.policy import AppPolicy

if TYPE_CHECKING:
    import numpy as np

# The logger's name is the one docs/apps.md gives for breach warnings: it stays "policy".
log = logging.getLogger("llamaedge.policy")


class RunGuard:
    """One request of a mounted app: its deadline, its token budget and its first breach.
    `stop` is called once on a breach (the WAGI layer refuses further output with it)."""

    def __init__(self, app_name: str, policy: AppPolicy, session: NNSession, *, stop: Any = None) -> None:
        self.app_name = app_name
        self.policy = policy
        self.session = session
        self.deadline = time.monotonic() + policy.wall_time_s
        self.tokens_left = policy.max_tokens
        self.breach: PolicyBreach | None = None
        self._stop = stop
        self._lock = threading.Lock()
        session.registry = PolicyRegistry(session.registry, self)
        self._timer = threading.Timer(policy.wall_time_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def seconds_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _expire(self) -> None:
        self.fail(WallTimeExceeded(f"{self.app_name} ran past its wall-time limit of {self.policy.wall_time_s:g}s",
                                   hint="raise wall-time in its policy"))

    def fail(self, breach: PolicyBreach) -> None:
        """Record the first breach, stop the app's generation and its output."""
        with self._lock:
            if self.breach is not None:
                return
            self.breach = breach
        log.warning("%s: %s", self.app_name, breach)
        self.session.cancel()
        if self._stop is not None:
            self._stop()

    def take_token(self) -> bool:
        """Whether one more generated token fits the request's budget (and count it)."""
        with self._lock:
            if self.tokens_left is None:
                return True
            if self.tokens_left <= 0:
                return False
            self.tokens_left -= 1
            return True

    def close(self) -> None:
        self._timer.cancel()


class PolicyRegistry:
    """The registry as a mounted app sees it: only the graph names its policy grants, no
    model files by path, and models that stop generating at the request's token budget."""

    def __init__(self, registry: Graphs, guard: RunGuard) -> None:
        self._registry = registry
        self._guard = guard
        self._granted: set[int] = set()

    def load_by_name(self, name: str, metadata: dict[str, Any]) -> int:
        if name not in self._guard.policy.models:
            self._guard.fail(ModelNotAllowed(
                f"{self._guard.app_name} may not load the model {name!r} (allowed: {', '.join(self._guard.policy.models)})",
                hint="grant it with models in the app's policy"))
            raise NNError(Errno.NOT_FOUND, f"model {name!r} is not granted to this app")
        graph = self._registry.load_by_name(name, metadata)
        self._granted.add(graph)
        return graph

    def load_path(self, path: Path, metadata: dict[str, Any]) -> int:
        self._guard.fail(ModelNotAllowed(f"{self._guard.app_name} may not load model files, only granted graph names",
                                         hint="preload the model and grant its name"))
        raise NNError(Errno.NOT_FOUND, "loading a model file is not granted to this app")

    def get(self, graph: int) -> LoadedModel:
        if graph not in self._granted:
            raise NNError(Errno.INVALID_ARGUMENT, f"unknown graph id {graph}")
        return BudgetedModel(self._registry.get(graph), self._guard)

    def unload(self, graph: int) -> None:
        if graph not in self._granted:
            raise NNError(Errno.INVALID_ARGUMENT, f"unknown graph id {graph}")
        self._granted.discard(graph)  # the host's models stay loaded: the app only lets go


class BudgetedModel:
    """A model whose generations end (finish reason length) when the request's token budget
    is spent. Everything but `generate` is the model's own."""

    def __init__(self, model: LoadedModel, guard: RunGuard) -> None:
        self._model = model
        self._guard = guard

    def generate(self, prompt: list[int], sampling: SamplingOptions, *, group: object = None,
                 images: dict[int, Any] | None = None) -> BudgetedSequence:
        left = self._guard.tokens_left
        if left is not None and (sampling.n_predict < 0 or sampling.n_predict > left):
            sampling = dataclasses.replace(sampling, n_predict=left)  # ends the engine's work there too
        extra = {"images": images} if images else {}  # (text-only stand-ins take no images)
        return BudgetedSequence(self._model.generate(prompt, sampling, group=group, **extra), self._guard)

    @property
    def vision(self) -> bool:
        return getattr(self._model, "vision", False)

    @property
    def media_marker(self) -> bytes:
        return self._model.media_marker

    def read_image(self, data: bytes) -> Any:
        return self._model.read_image(data)

    def tokenize_media(self, text: bytes, images: list[Any]) -> Any:
        return self._model.tokenize_media(text, images)

    @property
    def n_ctx(self) -> int:
        return self._model.n_ctx

    @property
    def n_embd(self) -> int:
        return self._model.n_embd

    def tokenize(self, text: bytes, *, special: bool = True) -> list[int]:
        return self._model.tokenize(text, special=special)

    def detokenize(self, tokens: list[int]) -> bytes:
        return self._model.detokenize(tokens)

    def check_tokens(self, tokens: list[int]) -> None:
        self._model.check_tokens(tokens)

    def preserved_tokens(self, texts: list[str]) -> frozenset[int]:
        return self._model.preserved_tokens(texts)

    def check_sampling(self, sampling: SamplingOptions) -> None:
        self._model.check_sampling(sampling)

    def check_embedding_inputs(self, inputs: list[list[int]]) -> None:
        self._model.check_embedding_inputs(inputs)

    def embed(self, inputs: list[list[int]], *, norm: int = 2) -> np.ndarray:
        return self._model.embed(inputs, norm=norm)

    @property
    def can_rank(self) -> bool:
        return self._model.can_rank

    def rank_input(self, query: bytes, document: bytes) -> list[int]:
        return self._model.rank_input(query, document)

    def rank(self, inputs: list[list[int]]) -> list[float]:
        return self._model.rank(inputs)

    def render_chat(self, messages: list[dict[str, object]], *, add_generation_prompt: bool = True,
                    tools: list[object] | None = None, template_kwargs: dict[str, object] | None = None) -> str:
        return self._model.render_chat(messages, add_generation_prompt=add_generation_prompt, tools=tools,
                                       template_kwargs=template_kwargs)

    def close(self) -> None:
        pass  # the host's model outlives the request: the app only lets go of it


class BudgetedSequence:
    """A sequence that counts its tokens against the budget and ends when it is spent:
    several sequences of one request (n > 1) share it."""

    def __init__(self, sequence: Generation, guard: RunGuard) -> None:
        self._sequence = sequence
        self._guard = guard
        self._cut = False

    @property
    def finish_reason(self) -> FinishReason | None:
        return FinishReason.LENGTH if self._cut else self._sequence.finish_reason

    @property
    def error(self) -> str | None:
        return self._sequence.error

    @property
    def n_cached(self) -> int:
        return self._sequence.n_cached

    @property
    def n_drafted(self) -> int:
        return self._sequence.n_drafted

    @property
    def n_accepted(self) -> int:
        return self._sequence.n_accepted

    def cancel(self) -> None:
        self._sequence.cancel()

    def next_token(self, timeout_s: float | None = None) -> Token | None:
        if self._cut:
            return None
        token = self._sequence.next_token(timeout_s)
        if token is not None and not self._guard.take_token():
            self._cut = True
            self._sequence.cancel()
            log.info("%s: the request reached its max-tokens of %d; generation ends with finish reason length",
                     self._guard.app_name, self._guard.policy.max_tokens)
            return None
        if token is None and self._sequence.finish_reason == FinishReason.LENGTH and self._guard.tokens_left == 0:
            log.info("%s: the request reached its max-tokens of %d; generation ends with finish reason length",
                     self._guard.app_name, self._guard.policy.max_tokens)
        return token
