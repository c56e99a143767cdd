"""Continuous batching over slots of one context.

A single scheduler thread alone decodes and samples: callers submit sequences (see sequence.py)
and read their tokens from each one's queue. Every step decodes one batch holding the next
token of every running sequence plus a chunk of the prompts still being read (generating
sequences first, so a long prompt never stalls them; then prompts, shortest first, so short
ones answer first; a prompt alone is read a whole batch at a time). Each sequence runs in a
slot (a sequence id of the context) whose KV cells are kept after it ends: the next sequence
that starts with the same tokens (the same conversation, one turn later) reuses that prefix
instead of reading it again, and sequences that start alike at the same time (n > 1) share the
cells of their common prefix.

A prompt may hold images (see vision.py): each is a run of placeholder ids (negative), read
whole by `Decoder.decode_image` in a step of its own, alone (the streams wait for it, as in
llama-server); its cells are shared and reused like text's, never from the middle of a run.

With speculative decoding (SpecOptions), a generating sequence's token may come with a draft,
decoded in the same batch and kept as far as the model agrees with it (see speculative.py):
several tokens for one step.

The scheduler speaks to the model through `Decoder` (and to a draft model through
`speculative.Drafter`), so it can be tested without one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, NamedTuple, Protocol

from llamaedge.engine.errors import ModelClosed
from llamaedge.engine.prefix import common_prefix
from llamaedge.engine.sequence import Sequence
from llamaedge.engine.speculative import Drafter, DraftWant, SpecState, ngram_draft
from llamaedge.engine.types import (LOOKAHEAD_TOKENS_MAX, PREFILL_CHUNK_TOKENS, EngineStats, FinishReason,
                                    SamplingOptions, SpecOptions, Token)

log = logging.getLogger("llamaedge.engine")

# How long an idle wait lasts while sequences run but none can step (their readers are
# behind): a safety net only, since readers wake the scheduler.
_WAIT_S = 0.1


class BatchEntry(NamedTuple):
    slot: int
    pos: int
    token: int
    logits: bool  # whether to compute logits here (the entry's index is its output index)


class Decoder(Protocol):
    """What the scheduler needs of a model's context."""

    n_ctx: int  # KV cells
    n_batch: int  # most entries in one decode

    def decode(self, batch: list[BatchEntry]) -> bool:
        """Decode the batch; False when the KV cache has no room for it (nothing changed).
        Raises RuntimeError on any other failure."""

    def sample(self, sampler: Any, index: int, sampling: SamplingOptions) -> tuple[Token, bool]:
        """Sample (and accept) the token at output `index` of the last decode with
        `sampler`; True when it ends the generation (end of generation token)."""

    def free_sampler(self, sampler: Any) -> None: ...

    def seq_rm(self, slot: int, p0: int, p1: int) -> None:
        """Forget `slot`'s cells at positions [p0, p1) (-1: open end)."""

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        """Give `dst` the cells of `src` at positions [p0, p1) (shared, not copied)."""

    def decode_image(self, slot: int, pos: int, image: Any) -> bool:
        """Read `image` (a vision.ImageChunk: `n_pos` positions) into `slot`'s cells from
        `pos`; False when the KV cache has no room for it (nothing kept). Raises RuntimeError
        on any other failure."""


class Scheduler:
    """Sequences in `n_slots` slots of `decoder`'s context. With `thread=False` nothing runs
    by itself: the owner calls `run_once` (tests do)."""

    def __init__(self, decoder: Decoder, n_slots: int, *, thread: bool = True,
                 prefill_chunk: int = PREFILL_CHUNK_TOKENS, speculative: SpecOptions = SpecOptions(),
                 drafter: Drafter | None = None) -> None:
        self.decoder = decoder
        self.n_slots = n_slots
        self.prefill_chunk = max(1, prefill_chunk)
        # Every draft is verified whole or not at all: an empty one is no draft.
        self.speculative = dataclasses.replace(speculative, draft_min=max(1, speculative.draft_min))
        self.drafter = drafter  # the draft model, when SpecOptions.draft_model names one
        self.n_tokens_decoded = 0  # entries fed to decodes: prompts, generated and drafted tokens
        self.n_drafted = 0  # drafted tokens verified
        self.n_accepted = 0  # of those, the tokens the model took
        # What the thread's loop did, so that a test can see it idle by events, not CPU time:
        # rounds it ran, and wakeups from its wait (each followed by a look for work).
        self.n_rounds = 0
        self.n_wakeups = 0
        self._cond = threading.Condition()
        # Touched only by the scheduler's thread, except under _cond.
        self._incoming: list[Sequence] = []
        self._running: list[Sequence] = []
        self._slot_tokens: list[list[int]] = [[] for _ in range(n_slots)]  # what each slot's cells hold
        self._slot_busy = [False] * n_slots
        self._jobs: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        if thread:
            self._thread = threading.Thread(target=self._loop, name="llamaedge-engine", daemon=True)
            self._thread.start()

    # -- callers -----------------------------------------------------------------------------

    def submit(self, seq: Sequence) -> None:
        seq._wake = self.wake
        with self._cond:
            if self._closing:
                raise ModelClosed("the model is shutting down")
            self._incoming.append(seq)
            self._cond.notify()

    def run_job(self, job: Callable[[], Any]) -> Any:
        """Run `job` on the scheduler's thread, between two decodes; return its result."""
        future: Future[Any] = Future()
        with self._cond:
            if self._closing:
                raise ModelClosed("the model is shutting down")
            self._jobs.append((job, future))
            self._cond.notify()
        return future.result()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(
                slots_total=self.n_slots,
                slots_busy=sum(self._slot_busy),
                sequences_running=len(self._running),
                sequences_waiting=len(self._incoming),
                sequences_paused=len(self._running) - len(self._runnable()),
                kv_cells_used=sum(len(tokens) for tokens in self._slot_tokens),
                kv_cells_total=self.decoder.n_ctx,
                draft_tokens=self.n_drafted,
                draft_tokens_accepted=self.n_accepted,
            )

    def close(self) -> None:
        """Cancel everything and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        else:
            with self._cond:
                self._shut_down()

    # -- the scheduler's thread --------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._ready():
                    # Idle, or every sequence is waiting for its reader (who wakes us).
                    self._cond.wait(timeout=_WAIT_S if self._running else None)
                    self.n_wakeups += 1
                if self._closing:
                    self._shut_down()
                    return
                self.n_rounds += 1
            self.run_once()

    def _ready(self) -> bool:
        self._admit()
        return bool(self._jobs or self._runnable())

    def _shut_down(self) -> None:
        for seq in self._incoming + self._running:
            self._finish(seq, FinishReason.CANCELLED)
        self._incoming.clear()
        for _job, future in self._jobs:
            future.set_exception(ModelClosed("the model is shutting down"))
        self._jobs.clear()

    def run_once(self) -> None:
        """One round: drop cancelled sequences, admit queued ones (into the slots just
        freed too), run jobs, decode."""
        with self._cond:
            for seq in [s for s in self._running if s._cancelled]:
                self._finish(seq, FinishReason.CANCELLED)
            self._admit()
            jobs, self._jobs = self._jobs, []
        for job, future in jobs:
            try:
                future.set_result(job())
            except Exception as exc:  # the caller gets it; the thread goes on
                future.set_exception(exc)
        if not self._runnable():
            return
        try:
            self._step()
        except Exception as exc:  # keep the thread alive; fail what was running
            log.exception("decode step failed")
            for seq in list(self._running):
                seq.error = str(exc)
                self._finish(seq, FinishReason.ERROR)

    def _runnable(self) -> list[Sequence]:
        # A reader waiting for a queued sequence of its group reads none of the group's
        # running ones meanwhile: those run on past the lookahead to their end, so that slots
        # come free. Otherwise apps reading several choices in turn (n > 1) could each hold
        # slots while they wait for one more.
        waiting = {s.group for s in self._incoming if s.group is not None}
        return [s for s in self._running
                if s._cancelled or s._pieces.qsize() < LOOKAHEAD_TOKENS_MAX or s.group in waiting]

    def _admit(self) -> None:
        """Drop queued sequences that were cancelled, then move queued sequences into free
        slots, preferring the slot whose cells hold the longest prefix of the prompt. A
        longer prefix held by a busy slot is shared (its cells given to the new slot too); a
        sequence whose prefix another sequence is reading right now waits for that read."""
        for seq in [s for s in self._incoming if s._cancelled]:
            self._incoming.remove(seq)
            self._finish(seq, FinishReason.CANCELLED)
        for seq in list(self._incoming):
            if all(self._slot_busy):
                break
            free = [slot for slot, busy in enumerate(self._slot_busy) if not busy]
            # The longest prefix; on a tie, the slot holding least (keep others' caches).
            best = max(free, key=lambda slot: (common_prefix(self._slot_tokens[slot], seq.prompt),
                                               -len(self._slot_tokens[slot])))
            best_len = common_prefix(self._slot_tokens[best], seq.prompt)
            source, source_len = -1, best_len
            for slot, busy in enumerate(self._slot_busy):
                common = common_prefix(self._slot_tokens[slot], seq.prompt) if busy else 0
                if common > source_len:
                    source, source_len = slot, common
            held = max(best_len, source_len)
            if any(other.prefilling and common_prefix(other.prompt, seq.prompt) > held for other in self._running):
                continue  # reading those tokens twice would be waste: take them once read
            self._incoming.remove(seq)
            # At least one token must be decoded to get logits for the first sample.
            if source >= 0:
                reuse = _image_start(seq.prompt, min(source_len, len(seq.prompt) - 1))
                self.decoder.seq_rm(best, -1, -1)
                self.decoder.seq_cp(source, best, 0, reuse)
                self._slot_tokens[best] = self._slot_tokens[source][:reuse]
            else:
                reuse = _image_start(seq.prompt, min(best_len, len(seq.prompt) - 1))
                self.decoder.seq_rm(best, reuse, -1)
                del self._slot_tokens[best][reuse:]
            self._slot_busy[best] = True
            seq._slot = best
            seq._n_past = reuse
            seq.n_cached = reuse
            seq._pending = seq.prompt[reuse:]
            self._running.append(seq)

    def _step(self) -> None:
        n_batch = self.decoder.n_batch
        runnable = self._runnable()
        # An image first, alone (one a step, so that the streams go on between images).
        imaging = next((s for s in runnable if s._pending and s._pending[0] < 0 and not s._cancelled), None)
        if imaging is not None:
            self._read_image(imaging)
            runnable = self._runnable()
        # Sequences that are generating add one token each first (keeps their latency low),
        # with their drafts, then prompts, shortest first. A prompt alone is read a whole
        # batch at a time (fastest); beside streams or other prompts, a chunk at a time.
        generating = [s for s in runnable if len(s._pending) == 1][:n_batch]
        prompts = sorted((s for s in runnable if len(s._pending) > 1), key=lambda s: len(s._pending))
        prompt_room = n_batch if not generating and len(prompts) == 1 else self.prefill_chunk
        prompt_room = min(prompt_room, n_batch - len(generating))
        # Drafts take what room in the batch the prompts leave.
        prompt_tokens = min(prompt_room, sum(len(s._pending) for s in prompts))
        drafts = self._drafts(generating, n_batch - len(generating) - prompt_tokens)
        takes, batch, outputs = self._plan(generating, prompts, prompt_room, drafts)
        if not batch:
            return
        ok = self.decoder.decode(batch)
        if not ok and drafts:  # no room for the drafts: the tokens alone may fit
            drafts = {}
            takes, batch, outputs = self._plan(generating, prompts, prompt_room, drafts)
            ok = self.decoder.decode(batch)
        if not ok and self._evict_idle_slots():
            ok = self.decoder.decode(batch)
        if not ok:
            # The context is full: end the longest sequence; the others go on next step.
            victim = max(self._running, key=lambda s: s._n_past)
            self._finish(victim, FinishReason.CONTEXT_FULL)
            return
        self.n_tokens_decoded += len(batch)
        for seq, take in takes:
            fed = take[:len(seq._pending)]  # a draft's tokens are kept as they are verified
            seq._n_past += len(fed)
            del seq._pending[: len(fed)]
            self._slot_tokens[seq._slot].extend(fed)
        for seq, indices in outputs:
            try:
                self._sample_outputs(seq, indices, drafts.get(seq, []))
            except Exception as exc:  # one sequence's sampler: fail that sequence alone
                log.exception("sampling failed")
                seq.error = str(exc)
                self._finish(seq, FinishReason.ERROR)

    def _plan(self, generating: list[Sequence], prompts: list[Sequence], prompt_room: int,
              drafts: dict[Sequence, list[int]]) -> tuple[list[tuple[Sequence, list[int]]], list[BatchEntry],
                                                          list[tuple[Sequence, list[int]]]]:
        """The step's batch: what each sequence feeds, the entries, and each sequence's
        output indices (one per drafted token too: every draft position is sampled)."""
        takes = [(seq, seq._pending + drafts.get(seq, [])) for seq in generating]
        room = prompt_room
        for seq in prompts:
            if room <= 0:
                break
            take = seq._pending[:room]
            if seq.images:  # text up to the next image (read by _read_image)
                take = take[:next((i for i, token in enumerate(take) if token < 0), len(take))]
            if take:
                takes.append((seq, take))
                room -= len(take)
        batch: list[BatchEntry] = []
        outputs: list[tuple[Sequence, list[int]]] = []
        for seq, take in takes:
            # Logits for a sequence's last prompt token, its generated token and every
            # drafted token after it.
            first_output = len(seq._pending) - 1 if len(take) >= len(seq._pending) else len(take)
            for i, token in enumerate(take):
                batch.append(BatchEntry(seq._slot, seq._n_past + i, token, i >= first_output))
            if first_output < len(take):
                outputs.append((seq, list(range(len(batch) - len(take) + first_output, len(batch)))))
        return takes, batch, outputs

    def _drafts(self, generating: list[Sequence], room: int) -> dict[Sequence, list[int]]:
        """Drafts for the generating sequences that want one, `room` tokens in all at most:
        prompt lookup first (it costs nothing), then the draft model for the rest."""
        spec = self.speculative
        if not spec.enabled or room < spec.draft_min:
            return {}
        wants: list[tuple[Sequence, DraftWant]] = []
        for seq in generating:
            n_max = self._draft_room(seq)
            if n_max < spec.draft_min or seq._cancelled or seq.images:
                continue  # (a draft of a prompt with images could hold placeholders)
            if seq._spec is None:
                seq._spec = SpecState.start(self._slot_tokens[seq._slot] + seq._pending, spec)
            n_max = min(n_max, seq._spec.length.wanted())
            if n_max >= spec.draft_min:
                wants.append((seq, DraftWant(seq._slot, seq._spec.tokens, n_max)))
        drafts: dict[Sequence, list[int]] = {}

        def take(seq: Sequence, draft: list[int]) -> None:
            nonlocal room
            if spec.draft_min <= len(draft) <= room:
                drafts[seq] = draft
                room -= len(draft)

        if spec.ngram:
            for seq, want in wants:
                take(seq, ngram_draft(want.tokens, min(want.n_max, room)))
        rest = [(seq, want._replace(n_max=min(want.n_max, room))) for seq, want in wants if seq not in drafts]
        if self.drafter is not None and rest and room >= spec.draft_min:
            for (seq, _want), draft in zip(rest, self.drafter.draft([want for _seq, want in rest])):
                take(seq, draft[:room])
        return drafts

    def _draft_room(self, seq: Sequence) -> int:
        """The most tokens `seq` may draft this step: its tokens stay within the lookahead,
        n_predict and the context."""
        n_max = min(self.speculative.draft_max, LOOKAHEAD_TOKENS_MAX - 1 - seq._pieces.qsize(),
                    self.decoder.n_ctx - seq._n_past - 2)
        if seq.sampling.n_predict >= 0:
            n_max = min(n_max, seq.sampling.n_predict - seq.n_generated - 1)
        return n_max

    def _sample_outputs(self, seq: Sequence, indices: list[int], draft: list[int]) -> None:
        """Sample `seq`'s outputs in turn, keeping drafted tokens while they equal what is
        sampled; then forget the cells of the drafted tokens not kept."""
        accepted = 0
        try:
            for i, index in enumerate(indices):
                token = self._sample(seq, index)
                if i == len(draft) or token != draft[i]:
                    break
                accepted += 1  # the draft was right (even where the sequence ends with it)
                if seq.done:
                    break
                seq._n_past += 1  # its cells were filled by this decode: they are the sequence's now
                self._slot_tokens[seq._slot].append(token)
        finally:
            if draft:
                self.decoder.seq_rm(seq._slot, seq._n_past, -1)
                seq.n_drafted += len(draft)
                seq.n_accepted += accepted
                self.n_drafted += len(draft)
                self.n_accepted += accepted
                if seq._spec is not None:
                    seq._spec.length.verified(len(draft), accepted)

    def _sample(self, seq: Sequence, index: int) -> int:
        """Sample `seq`'s next token at output `index` (it may end the sequence)."""
        token, ends = self.decoder.sample(seq._sampler, index, seq.sampling)
        if ends and not seq.sampling.ignore_eos:
            self._finish(seq, FinishReason.STOP)
            return token.id
        seq.n_generated += 1
        seq._pieces.put(token)
        if seq._spec is not None:
            seq._spec.tokens.append(token.id)
        if seq.sampling.n_predict >= 0 and seq.n_generated >= seq.sampling.n_predict:
            self._finish(seq, FinishReason.LENGTH)
        elif seq._n_past + 1 >= self.decoder.n_ctx:
            self._finish(seq, FinishReason.CONTEXT_FULL)
        else:
            seq._pending = [token.id]
        return token.id

    def _read_image(self, seq: Sequence) -> None:
        """Read the image at the head of `seq`'s pending prompt into its slot's cells; when
        the context has no room for it even without the idle slots' cells, `seq` ends."""
        image = seq.images[seq._pending[0]]
        try:
            ok = self.decoder.decode_image(seq._slot, seq._n_past, image)
            if not ok and self._evict_idle_slots():
                ok = self.decoder.decode_image(seq._slot, seq._n_past, image)
        except Exception as exc:  # this image's failure: fail its sequence alone
            log.exception("image decode failed")
            seq.error = str(exc)
            self._finish(seq, FinishReason.ERROR)
            return
        if not ok:
            self._finish(seq, FinishReason.CONTEXT_FULL)
            return
        run = seq._pending[:image.n_pos]
        del seq._pending[:image.n_pos]
        seq._n_past += len(run)
        self._slot_tokens[seq._slot].extend(run)
        self.n_tokens_decoded += image.n_tokens

    def _evict_idle_slots(self) -> bool:
        evicted = False
        for slot, busy in enumerate(self._slot_busy):
            if not busy and self._slot_tokens[slot]:
                self.decoder.seq_rm(slot, -1, -1)
                self._slot_tokens[slot].clear()
                evicted = True
        return evicted

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        if seq in self._running:
            self._running.remove(seq)
        if seq._slot >= 0:
            self._slot_busy[seq._slot] = False
        if seq._sampler is not None:
            self.decoder.free_sampler(seq._sampler)
            seq._sampler = None
        seq.finish_reason = reason
        seq._pieces.put(None)
        if reason in (FinishReason.CANCELLED, FinishReason.ERROR):
            log.info("sequence %s after %d tokens; slot %d is free", reason.value, seq.n_generated, seq._slot)


def _image_start(prompt: list[int], n: int) -> int:
    """`n`, or the start of the image run it falls inside: an image's cells are read whole."""
    while 0 < n < len(prompt) and prompt[n] < 0 and prompt[n - 1] == prompt[n]:
        n -= 1
    return n
