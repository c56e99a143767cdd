"""The measured side: one streamed /v1/chat/completions request to a server (`llamaedge
serve` or llama-server), timed as a client sees it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from benchmarks.raw_llama import StreamRun


def stream_chat(
    client: httpx.Client,
    model: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    on_content: Callable[[int], None] | None = None,
) -> StreamRun:
    """Greedy (temperature 0) so the tokens match the raw loop's. TTFT runs from sending the
    request to the first event that carries content; the token count is the server's own
    (`usage.completion_tokens`), since one event may carry more than one token.
    `on_content(n)` is called as the n-th event with content arrives (n from 1)."""
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    content_times_s: list[float] = []
    pieces: list[str] = []
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"server answered {response.status_code}: {response.text}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                break
            event = json.loads(data)
            for choice in event.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    content_times_s.append(time.perf_counter() - start)
                    pieces.append(content)
                    if on_content is not None:
                        on_content(len(pieces))
            if event.get("usage"):
                completion_tokens = event["usage"]["completion_tokens"]
                prompt_tokens = event["usage"].get("prompt_tokens")
    if completion_tokens is None:
        raise RuntimeError("the stream ended without a usage event (stream_options.include_usage)")
    return StreamRun(
        ttft_s=content_times_s[0] if content_times_s else float("nan"),
        token_times_s=content_times_s,
        completion_tokens=completion_tokens,
        text="".join(pieces),
        prompt_tokens=prompt_tokens,
    )
