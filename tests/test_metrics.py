"""/metrics over real HTTP with the real chat app and the tiny model: the text parses as
Prometheus' exposition format, and the numbers move as requests run."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from llamaedge.metrics import HostSnapshot, ModelSnapshot, ServerMetrics
from llamaedge.runtime import RunLimits
from llamaedge.server import ServerState, default_app_path
from tests.test_server_http import config_for, running
from tests.wat_apps import write_app


def scrape(url: str, **kwargs: object) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample by name, then by its labels (sorted)."""
    response = httpx.get(f"{url}/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for key, v in samples.get(name, {}).items() if wanted <= set(key))


FAMILIES = [
    "llamaedge_requests_total", "llamaedge_requests_rejected_total", "llamaedge_client_disconnects_total",
    "llamaedge_prompt_tokens_total", "llamaedge_generation_tokens_total",
    "llamaedge_time_to_first_byte_seconds_count", "llamaedge_time_to_first_token_seconds_count",
    "llamaedge_time_per_output_chunk_seconds_count", "llamaedge_request_duration_seconds_count",
    "llamaedge_requests_in_flight", "llamaedge_requests_running", "llamaedge_requests_waiting",
    "llamaedge_queue_capacity", "llamaedge_draining", "llamaedge_responses_stalled", "llamaedge_model_load_seconds",
]


@pytest.fixture
def chat_url(tiny_model: Path) -> str:
    with running(ServerState(config_for(tiny_model, default_app_path(), parallel=2))) as url:
        yield url  # type: ignore[misc]


def test_the_metrics_text_parses_and_has_every_family_once_requests_ran(chat_url: str) -> None:
    with OpenAI(base_url=f"{chat_url}/v1", api_key="unused") as client:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        for chunk in client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}],
                                                    max_tokens=8, stream=True):
            pass
        samples = scrape(chat_url)
        missing = [name for name in FAMILIES if name not in samples and name not in (
            "llamaedge_requests_rejected_total", "llamaedge_client_disconnects_total")]
        assert not missing
        assert value(samples, "llamaedge_queue_capacity") == 8  # 4 per --parallel slot
        assert value(samples, "llamaedge_model_load_seconds", model="tiny-chat") > 0


def test_counters_and_histograms_move_as_requests_run(chat_url: str) -> None:
    with OpenAI(base_url=f"{chat_url}/v1", api_key="unused") as client:
        before = scrape(chat_url)
        completion = client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=6)
        chunks = list(client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hello again"}], max_tokens=6, stream=True,
            stream_options={"include_usage": True}))
        bad = httpx.post(f"{chat_url}/v1/chat/completions", content=b"{not json")
        assert bad.status_code == 400
        after = scrape(chat_url)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        route = {"route": "/v1/chat/completions"}
        assert moved("llamaedge_requests_total", **route, app="chat-server", status="200") == 2
        assert moved("llamaedge_requests_total", **route, app="chat-server", status="400") == 1
        stream_usage = chunks[-1].usage
        assert completion.usage is not None and stream_usage is not None
        assert moved("llamaedge_prompt_tokens_total", **route) == completion.usage.prompt_tokens + stream_usage.prompt_tokens
        assert moved("llamaedge_generation_tokens_total", **route) == (
            completion.usage.completion_tokens + stream_usage.completion_tokens)
        assert moved("llamaedge_time_to_first_byte_seconds_count", **route, stream="false") == 2  # incl. the 400
        assert moved("llamaedge_time_to_first_byte_seconds_count", **route, stream="true") == 1
        text_chunks = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
        assert moved("llamaedge_time_to_first_token_seconds_count", **route) == (1 if text_chunks else 0)
        body_chunks = len(chunks) + 1  # the chunks, then [DONE]
        assert moved("llamaedge_time_per_output_chunk_seconds_count", **route) == body_chunks - 1
        assert moved("llamaedge_request_duration_seconds_count", **route, app="chat-server") == 3
        assert value(after, "llamaedge_requests_in_flight") == 0
        # Paths the app does not know are one label, not one series each.
        for i in range(3):
            assert httpx.get(f"{chat_url}/v1/nothing-{i}").status_code == 404
        unmatched = scrape(chat_url)
        assert value(unmatched, "llamaedge_requests_total", route="unmatched", status="404") == 3
        assert not any(dict(key).get("route", "").startswith("/v1/nothing") for key in unmatched["llamaedge_requests_total"])


def slow_stream(n_events: int) -> str:
    """A stream of `n_events` events, 0.1 s apart (poll_oneoff sleeps): a request that stays
    in flight. It ends early when a write fails (the client left)."""
    return """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "Content-Type: text/event-stream\\0a\\0a")
  (data (i32.const 128) "data: {}\\0a\\0a")
  (func $write (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
  (func $sleep
    ;; subscription at 256: userdata u64, tag u8 = 0 (clock), clock id u32 = 1 (monotonic),
    ;; timeout u64 = 100 ms, precision u64, flags u16 = 0 (relative)
    (i64.store (i32.const 256) (i64.const 0))
    (i32.store8 (i32.const 264) (i32.const 0))
    (i32.store (i32.const 272) (i32.const 1))
    (i64.store (i32.const 280) (i64.const 100000000))
    (i64.store (i32.const 288) (i64.const 0))
    (i32.store16 (i32.const 296) (i32.const 0))
    (drop (call $poll (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600))))
  (func (export "_start") (local $i i32)
    (drop (call $write (i32.const 64) (i32.const 33)))
    (block $gone
      (loop $next
        (call $sleep)
        (br_if $gone (call $write (i32.const 128) (i32.const 10)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $i) (i32.const N_EVENTS)))))))""".replace("N_EVENTS", str(n_events))


def test_requests_in_flight_running_and_waiting_follow_the_requests(tmp_path: Path, tiny_model: Path) -> None:
    app = write_app(tmp_path, "slow.wasm", slow_stream(12))
    config = config_for(tiny_model, app, parallel=1, limits=RunLimits(wasm_slice_max_s=30))
    with running(ServerState(config)) as url:
        opened = threading.Barrier(4)
        release = threading.Event()
        bodies: list[bytes] = []

        def client() -> None:
            with httpx.stream("GET", f"{url}/v1/slow", timeout=30) as response:
                chunks = response.iter_raw()
                next(chunks)
                opened.wait()
                release.wait(30)
                bodies.append(b"".join(chunks))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for thread in threads:
            thread.start()
        opened.wait(30)
        during = scrape(url)
        release.set()
        for thread in threads:
            thread.join(30)
        after = scrape(url)
    assert value(during, "llamaedge_requests_in_flight") == 3
    assert value(during, "llamaedge_requests_running") == 1
    assert value(during, "llamaedge_requests_waiting") == 2
    assert value(after, "llamaedge_requests_in_flight") == 0
    assert len(bodies) == 3 and all(body.count(b"data: {}") == 11 for body in bodies)
    assert value(after, "llamaedge_time_per_output_chunk_seconds_count", route="/v1/slow") == 3 * 11


def test_engine_gauges_are_reported_when_the_engine_has_stats(chat_url: str) -> None:
    samples = scrape(chat_url)
    from llamaedge.engine import Model

    if not hasattr(Model, "stats"):
        assert "llamaedge_slots_total" not in samples
        pytest.skip("this engine reports no EngineStats yet")
    assert value(samples, "llamaedge_slots_total", model="tiny-chat") == 2
    assert value(samples, "llamaedge_slots_busy", model="tiny-chat") == 0
    assert value(samples, "llamaedge_kv_cache_cells_total", model="tiny-chat") >= 512
    assert 0 <= value(samples, "llamaedge_kv_cache_usage_ratio", model="tiny-chat") <= 1
    # The requests the fixture's server ran so far were decoded by the engine.
    with OpenAI(base_url=f"{chat_url}/v1", api_key="unused") as client:
        completion = client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "count"}], max_tokens=4)
        assert completion.usage is not None
        decoded = value(scrape(chat_url), "llamaedge_tokens_decoded_total", model="tiny-chat")
        assert decoded >= completion.usage.prompt_tokens


def test_metrics_are_public_unless_metrics_auth(tmp_path: Path, tiny_model: Path) -> None:
    with running(ServerState(config_for(tiny_model, default_app_path(), api_key="k"))) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200
    with running(ServerState(config_for(tiny_model, default_app_path(), api_key="k", metrics_auth=True))) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert scrape(url, headers={"Authorization": "Bearer k"})["llamaedge_requests_total"]
        assert httpx.get(f"{url}/health").status_code == 200


def test_engine_stats_become_gauges_per_model() -> None:
    # The seam: what Model.stats() returns (EngineStats), here for two models.
    @dataclasses.dataclass
    class EngineStats:
        slots_total: int
        slots_busy: int
        sequences_running: int
        sequences_waiting: int
        kv_cells_used: int
        kv_cells_total: int
        sequences_paused: int

    snapshot = HostSnapshot(in_flight=6, parallel=4, queue_max=16, draining=True, models=[
        ModelSnapshot("chat", "default", 1.5, EngineStats(4, 3, 3, 2, 300, 1200, 1), tokens_decoded=4321),
        ModelSnapshot("embed", "embedding", 0.25, None),
    ], responses_stalled=1)
    metrics = ServerMetrics(lambda: snapshot)
    text, content_type = metrics.exposition("")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    assert content_type.startswith("text/plain; version=0.0.4")
    assert value(samples, "llamaedge_requests_running") == 4 and value(samples, "llamaedge_requests_waiting") == 2
    assert value(samples, "llamaedge_draining") == 1 and value(samples, "llamaedge_queue_capacity") == 16
    assert value(samples, "llamaedge_slots_busy", model="chat") == 3
    assert value(samples, "llamaedge_sequences_waiting", model="chat") == 2
    assert value(samples, "llamaedge_sequences_paused", model="chat") == 1
    assert value(samples, "llamaedge_responses_stalled") == 1
    assert value(samples, "llamaedge_kv_cache_usage_ratio", model="chat") == 0.25
    assert value(samples, "llamaedge_model_load_seconds", model="embed") == 0.25
    assert value(samples, "llamaedge_tokens_decoded_total", model="chat") == 4321
    # A model without stats has no engine series, rather than zeros that would look real.
    assert not any(dict(key)["model"] == "embed" for key in samples["llamaedge_slots_busy"])
    openmetrics, om_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert om_type.startswith("application/openmetrics-text") and openmetrics.endswith(b"# EOF\n")


def test_metrics_show_no_path_of_a_refused_or_unmatched_request(tiny_model: Path) -> None:
    config = config_for(tiny_model, default_app_path(), api_key="k", cors_origins=["http://app.example"])
    key = {"Authorization": "Bearer k"}
    with running(ServerState(config)) as url:
        strangers = [
            httpx.post(f"{url}/v1/secret-no-key"),  # 401
            httpx.get(f"{url}/v1/secret-host", headers={**key, "Host": "attacker.example"}),  # 403
            httpx.get(f"{url}/metrics", headers={"Host": "attacker.example"}),  # 403
            httpx.post(f"{url}/v1/secret-origin", headers={**key, "Origin": "http://evil.example"}),  # 403
            httpx.request("OPTIONS", f"{url}/v1/secret-method", headers=key),  # 405: no such method
            httpx.get(f"{url}/v1/secret-app-404", headers=key),  # the app has no such route
            httpx.get(f"{url}/secret-no-route"),  # the host has no such route
            # A CORS preflight, answered before any route.
            httpx.request("OPTIONS", f"{url}/v1/secret-preflight", headers={
                "Origin": "http://app.example", "Access-Control-Request-Method": "POST"}),
        ]
        assert [r.status_code for r in strangers] == [401, 403, 403, 403, 405, 404, 404, 200]
        assert httpx.get(f"{url}/v1/models", headers=key).status_code == 200
        samples = scrape(url)
    labels = {v for series in samples.values() for key_ in series for _, v in key_}
    assert not [v for v in labels if "secret" in v]
    assert value(samples, "llamaedge_requests_total", route="unauthorized", status="401") == 1
    assert value(samples, "llamaedge_requests_total", route="unauthorized", status="403") == 3
    assert value(samples, "llamaedge_requests_total", route="unmatched") == 4
    assert value(samples, "llamaedge_requests_total", route="/v1/models", status="200") == 1


def test_metrics_show_no_path_the_server_answered_before_the_app_ran(tiny_model: Path) -> None:
    """Without a key, a made-up /v1 path answered by the server itself (503 while the model
    loads, 404 for a model the library lacks) is no route label: only the app confirms one."""
    state = ServerState(config_for(tiny_model, default_app_path()))
    with running(state, load=False) as url:
        assert httpx.get(f"{url}/v1/secret-while-loading").status_code == 503
        state.load()
        assert httpx.get(f"{url}/v1/models").status_code == 200
        samples = scrape(url)
    labels = {v for series in samples.values() for key_ in series for _, v in key_}
    assert not [v for v in labels if "secret" in v]
    assert value(samples, "llamaedge_requests_total", route="unmatched", status="503") == 1
