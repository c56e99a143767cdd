"""/metrics: the server's Prometheus metrics (names and meanings: docs/operations.md).

Requests are observed at the ASGI boundary (`MetricsMiddleware`): route, app, status,
timings, and the token counts the responses report in their `usage`. Queue, slot and
KV-cache gauges are read when scraped (`HostSnapshot`, from the server and the engine)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

disable_created_metrics()  # the `_created` series double every counter for no use here

# Distinct /v1 paths kept as route labels; later ones are counted as "other" (bounded series).
ROUTE_LABELS_MAX = 32
# Set in a request's scope by the server when it answered a request under the app's catch-all
# route itself, before the app ran: its path is then no route label (a stranger's made-up path).
ROUTE_UNCONFIRMED = "llamaedge.route_unconfirmed"
# A non-streamed JSON body is parsed for its usage only up to this size.
USAGE_BODY_MAX_BYTES = 1024 * 1024
FIRST_BYTE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CHUNK_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TOOL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class ModelSnapshot:
    model_id: str
    graph: str
    load_s: float
    stats: object | None  # the engine's EngineStats, when the engine reports them
    tokens_decoded: int | None = None  # Model.n_tokens_decoded, when the engine counts them


@dataclass
class HostSnapshot:
    in_flight: int
    parallel: int
    queue_max: int
    draining: bool
    models: list[ModelSnapshot] = field(default_factory=list)
    responses_stalled: int = 0  # app responses whose next write waits for the client


class _GaugeCollector(Collector):
    """Gauges computed at scrape time, so they are never stale."""

    def __init__(self, snapshot: Callable[[], HostSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._snapshot()
        running = min(s.in_flight, s.parallel)
        yield _gauge("llamaedge_requests_in_flight", "Requests admitted and not yet answered in full.", s.in_flight)
        yield _gauge("llamaedge_requests_running", "Requests in flight up to --parallel: decoded together.", running)
        yield _gauge("llamaedge_requests_waiting", "Requests in flight beyond --parallel: queued for a slot.",
                     s.in_flight - running)
        yield _gauge("llamaedge_queue_capacity", "--queue-max: requests that may wait before new ones get 503.",
                     s.queue_max)
        yield _gauge("llamaedge_draining", "1 after SIGTERM while in-flight requests finish, else 0.", int(s.draining))
        yield _gauge("llamaedge_responses_stalled", "App responses whose next write waits for the client to read "
                     "what was sent.", s.responses_stalled)
        load = GaugeMetricFamily("llamaedge_model_load_seconds", "Seconds the model took to load.", labels=["model"])
        for m in s.models:
            load.add_metric([m.model_id], m.load_s)
        yield load
        engine = {
            "slots_total": ("llamaedge_slots_total", "Sequence slots of the model's context (--parallel)."),
            "slots_busy": ("llamaedge_slots_busy", "Slots holding a sequence now."),
            "sequences_running": ("llamaedge_sequences_running", "Sequences being decoded."),
            "sequences_waiting": ("llamaedge_sequences_waiting", "Sequences waiting for a free slot."),
            "sequences_paused": ("llamaedge_sequences_paused", "Sequences paused until their reader catches up "
                                 "(a client that stopped reading)."),
            "kv_cells_used": ("llamaedge_kv_cache_cells_used", "KV-cache cells in use."),
            "kv_cells_total": ("llamaedge_kv_cache_cells_total", "KV-cache cells of the context."),
        }
        families = {key: GaugeMetricFamily(name, doc, labels=["model"]) for key, (name, doc) in engine.items()}
        usage = GaugeMetricFamily("llamaedge_kv_cache_usage_ratio", "KV-cache cells in use, from 0 to 1.",
                                  labels=["model"])
        for m in s.models:
            if m.stats is None:
                continue
            for key, family in families.items():
                value = getattr(m.stats, key, None)
                if value is not None:
                    family.add_metric([m.model_id], float(value))
            used, total = getattr(m.stats, "kv_cells_used", None), getattr(m.stats, "kv_cells_total", None)
            if used is not None and total:
                # Slots sharing a prompt prefix each count its cells: keep the ratio a ratio.
                usage.add_metric([m.model_id], min(1.0, used / total))
        yield from families.values()
        yield usage
        decoded = CounterMetricFamily("llamaedge_tokens_decoded", "Tokens the engine has decoded: prompts, "
                                      "generated tokens and embedding inputs.", labels=["model"])
        for m in s.models:
            if m.tokens_decoded is not None:
                decoded.add_metric([m.model_id], m.tokens_decoded)
        yield decoded
        # Speculative decoding: the acceptance rate is accepted / drafted.
        drafts = {
            "draft_tokens": CounterMetricFamily("llamaedge_draft_tokens", "Drafted tokens the model checked "
                                                "(speculative decoding).", labels=["model"]),
            "draft_tokens_accepted": CounterMetricFamily("llamaedge_draft_tokens_accepted",
                                                         "Drafted tokens the model took.", labels=["model"]),
        }
        for m in s.models:
            for key, counter in drafts.items():
                count = getattr(m.stats, key, None)
                if count is not None:
                    counter.add_metric([m.model_id], count)
        yield from drafts.values()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class ServerMetrics:
    """One registry per server (not prometheus_client's global one: tests run several)."""

    def __init__(self, snapshot: Callable[[], HostSnapshot]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llamaedge_requests", "Requests answered, by route, app and status.",
                                ["route", "app", "status"], registry=r)
        self.rejected = Counter("llamaedge_requests_rejected", "Requests refused at once: queue full or draining.",
                                ["reason"], registry=r)
        self.disconnects = Counter("llamaedge_client_disconnects", "Responses the client left before their end.",
                                   ["route"], registry=r)
        self.prompt_tokens = Counter("llamaedge_prompt_tokens", "Prompt tokens, as the responses' usage reports them.",
                                     ["route"], registry=r)
        self.generation_tokens = Counter("llamaedge_generation_tokens",
                                         "Generated tokens, as the responses' usage reports them.", ["route"], registry=r)
        self.first_byte = Histogram("llamaedge_time_to_first_byte_seconds",
                                    "From the request to the first body bytes (a stream's first event after its head).",
                                    ["route", "stream"], buckets=FIRST_BYTE_BUCKETS, registry=r)
        self.first_token = Histogram("llamaedge_time_to_first_token_seconds",
                                     "From the request to a stream's first event with generated text.",
                                     ["route"], buckets=FIRST_BYTE_BUCKETS, registry=r)
        self.chunk_interval = Histogram("llamaedge_time_per_output_chunk_seconds",
                                        "Between one body chunk of a stream and the next.",
                                        ["route"], buckets=CHUNK_BUCKETS, registry=r)
        self.duration = Histogram("llamaedge_request_duration_seconds", "From the request to the response's end.",
                                  ["route", "app"], buckets=DURATION_BUCKETS, registry=r)
        # Tools (docs/tools.md): every call, from the loop, /mcp or an app, by tool and outcome
        # ("ok" or the error's code); the tool names are the server's own, a bounded set.
        self.tool_calls = Counter("llamaedge_tool_calls", "Tool calls, by tool and result (ok or the error code).",
                                  ["tool", "result"], registry=r)
        self.tool_seconds = Histogram("llamaedge_tool_call_seconds", "One tool call: arguments checked, sandbox run.",
                                      ["tool"], buckets=TOOL_BUCKETS, registry=r)
        self.tool_loop_steps = Counter("llamaedge_tool_loop_steps",
                                       "Model steps of the server's tool loop (a step: one generation).", registry=r)
        r.register(_GaugeCollector(snapshot))
        self._routes: set[str] = set()

    def tool_result(self, name: str, ok: bool, code: str | None, duration_s: float) -> None:
        """One tool call ended."""
        self.tool_calls.labels(name, "ok" if ok else (code or "error")).inc()
        self.tool_seconds.labels(name).observe(duration_s)

    def route_label(self, path: str, status: int, routed: bool = True) -> str:
        """A request's `route` label. Its path becomes one only when the request was
        authorised and matched a route (`routed`: the router chose an endpoint; the endpoint
        did not answer 404 or 405): a stranger cannot write paths into the metrics, nor read
        back those of others who were refused."""
        if status in (401, 403):  # refused: the Host or Origin guard, the API key, an app's own check
            return "unauthorized"
        if not routed or status in (404, 405):
            return "unmatched"
        if path in ("/health", "/metrics"):
            return path
        if not path.startswith("/v1/"):
            return "web"
        if path not in self._routes and len(self._routes) >= ROUTE_LABELS_MAX:
            return "other"
        self._routes.add(path)
        return path

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The text format a scraper's Accept header asks for: Prometheus' text format
        0.0.4 by default, OpenMetrics when asked."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def _has_text(event: object) -> bool:
    """Whether a stream event carries generated text: an OpenAI chunk with content (chat) or
    text (completions), or an Anthropic content_block_delta."""
    if not isinstance(event, dict):
        return False
    if event.get("type") == "content_block_delta":
        return True
    for choice in event.get("choices") or []:
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if choice.get("text") or (isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls"))):
                return True
    return False


class _Usage:
    """What the host reads from a response body: the token counts it reports (OpenAI's
    `usage`, in a stream's last chunk with include_usage, or Anthropic's, in message_start
    then message_delta's running total), and when a stream's first text came."""

    def __init__(self) -> None:
        self.prompt: int | None = None
        self.generated: int | None = None
        self.first_text = False
        self._pending = b""
        self._json = bytearray()

    def feed_event_stream(self, chunk: bytes) -> bool:
        """Returns True when this chunk brought the stream's first generated text."""
        self._pending += chunk
        *events, self._pending = self._pending.split(b"\n\n")
        first_text = False
        for event in events:
            wanted = b'"usage"' in event or not self.first_text
            if not wanted:
                continue
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    obj = _parse(line[5:])
                    if not self.first_text and _has_text(obj):
                        self.first_text = first_text = True
                    self._take(obj)
        return first_text

    def feed_json(self, chunk: bytes) -> None:
        if len(self._json) + len(chunk) <= USAGE_BODY_MAX_BYTES:
            self._json += chunk

    def finish_json(self) -> None:
        if self._json:
            self._take(_parse(bytes(self._json)))

    def _take(self, obj: object) -> None:
        if not isinstance(obj, dict):
            return
        usage = obj.get("usage")
        message = obj.get("message")
        if not isinstance(usage, dict) and isinstance(message, dict):
            usage = message.get("usage")
        if not isinstance(usage, dict):
            return
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        generated = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(prompt, int):
            self.prompt = prompt
        if isinstance(generated, int):
            self.generated = generated


def _parse(data: bytes) -> object:
    try:
        return json.loads(data)
    except ValueError:
        return None


class _Observation:
    def __init__(self, metrics: ServerMetrics, scope: Scope, app: str) -> None:
        self.metrics, self.scope, self.path, self.app = metrics, scope, scope["path"], app
        self.started = time.monotonic()
        self.status: int | None = None
        self.stream = False
        self.json = False
        self.first_chunk_at: float | None = None
        self.last_chunk_at = 0.0
        self.complete = False
        self.usage = _Usage()
        self.route = ""

    @property
    def routed(self) -> bool:
        # Starlette's router puts the endpoint it chose into the scope, which the layers
        # inside share with this one; a request a guard refused never reaches it. A path the
        # app's catch-all route took, which the server answered itself before the app ran
        # (busy, loading, no such model), is not confirmed as a route by anyone.
        return "endpoint" in self.scope and not self.scope.get(ROUTE_UNCONFIRMED)

    def on_message(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.route = self.metrics.route_label(self.path, self.status, self.routed)
            headers = dict(message.get("headers") or [])
            content_type = headers.get(b"content-type", b"")
            self.stream = b"text/event-stream" in content_type
            self.json = b"application/json" in content_type
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            now = time.monotonic()
            if body:
                if self.first_chunk_at is None:
                    self.first_chunk_at = now
                    self.metrics.first_byte.labels(self.route, str(self.stream).lower()).observe(now - self.started)
                elif self.stream:
                    self.metrics.chunk_interval.labels(self.route).observe(now - self.last_chunk_at)
                self.last_chunk_at = now
                if self.stream:
                    if self.usage.feed_event_stream(body):
                        self.metrics.first_token.labels(self.route).observe(now - self.started)
                elif self.json:
                    self.usage.feed_json(body)

    def finish(self) -> None:
        m = self.metrics
        status = self.status if self.status is not None else 500
        route = self.route or m.route_label(self.path, status, self.routed)
        m.requests.labels(route, self.app, str(status)).inc()
        m.duration.labels(route, self.app).observe(time.monotonic() - self.started)
        if status == 499 or (self.status is not None and not self.complete):
            m.disconnects.labels(route).inc()
        if self.json:
            self.usage.finish_json()
        if self.usage.prompt:
            m.prompt_tokens.labels(route).inc(self.usage.prompt)
        if self.usage.generated:
            m.generation_tokens.labels(route).inc(self.usage.generated)


class MetricsMiddleware:
    """Observes every HTTP request and its response as they pass."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, app_name: str) -> None:
        self.app = app
        self.metrics = metrics
        self.app_name = app_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app = self.app_name if scope["path"].startswith("/v1/") else "host"
        observation = _Observation(self.metrics, scope, app)

        async def observed_send(message: Message) -> None:
            observation.on_message(message)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                observation.complete = True

        try:
            await self.app(scope, receive, observed_send)
        finally:
            observation.finish()
