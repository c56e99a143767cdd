"""Images: `llamaedge serve --mmproj` against llama-server's mtmd (`--mmproj`), same files, same run.

    python -m benchmarks.llama_server_build      # once: builds llama-server (minutes)
    python -m benchmarks.bench_images --model M.gguf --mmproj P.gguf --image a.png [--image b.jpg]

Per image and side, three streamed chat requests of one token each, timed as a client sees
them (time to the first token):

- `text`: the question alone, after a preamble no earlier request had (nothing cached);
- `image`: the question with the image, after such a preamble (the image is read afresh:
  its cells cannot be reused past a preamble that differs);
- `again`: the `image` request once more: what the prompt cache saves (the image's cells).

`image - text` stands for the image's cost (encode and decode of its embeddings), `again` for
a follow-up turn about the same image. Both sides get the same threads, context and slots
(columns.Config: llama-server `-t -tb -np --kv-unified --cache-ram 0`). Nothing here imports
tests/; figures are only worth reporting from a quiet machine.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import llama_server_build
from benchmarks.columns import OURS, SLEEP_BETWEEN_SIDES_S, THEIRS, Config, llama_server_argv, ours_argv
from benchmarks.harness import (RESULTS_DIR, ServerProcess, add_side_by_side_arguments, alternate, load_average,
                                measured_env, parse_env, result_head, write_json)
from benchmarks.server_client import stream_chat
from llamaedge.images import check_image

QUESTION = "Describe the picture in one sentence."


def _messages(image: bytes | None, kind: str, preamble: str) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": f"{preamble}\n{QUESTION}"}]
    if image is not None:
        url = f"data:image/{kind};base64,{base64.b64encode(image).decode()}"
        content.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "user", "content": content}]


def _ttft_s(server: ServerProcess, messages: list[dict[str, Any]]) -> float:
    assert server.client is not None
    return stream_chat(server.client, server.model, messages, max_tokens=1).ttft_s  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the vision model's GGUF")
    parser.add_argument("--mmproj", type=Path, required=True, help="its projector's GGUF")
    parser.add_argument("--image", type=Path, action="append", required=True, help="an image file (repeatable)")
    parser.add_argument("--reps", type=int, default=3, help="measured rounds per image and side (default 3)")
    parser.add_argument("--parallel", type=int, default=4, help="slots for both servers (default 4)")
    add_side_by_side_arguments(parser, ctx=4096, output=RESULTS_DIR / "images-latest.json")
    args = parser.parse_args(argv)

    images = [(path, path.read_bytes()) for path in args.image]
    kinds = {path: check_image(data) for path, data in images}  # refuse what neither side would read
    binary = llama_server_build.built_server()
    if binary is None:
        print(f"llama-server is not built for llama-cpp-python {llama_server_build.installed_version()}: "
              "run `python -m benchmarks.llama_server_build` first", file=sys.stderr)
        return 1
    extra_env = parse_env(args.env)
    projector = ["--mmproj", str(args.mmproj)]
    cfg = Config(model=args.model, threads=args.threads, ctx=args.ctx, parallel=args.parallel, env=extra_env,
                 ours_args=projector, llama_server_args=projector)
    scratch = Path(tempfile.mkdtemp(prefix="bench-images-"))
    (scratch / "home").mkdir()
    servers = {OURS: ServerProcess(OURS, ours_argv(cfg), measured_env(extra_env, home=scratch / "home"), scratch),
               THEIRS: ServerProcess(THEIRS, llama_server_argv(binary, cfg), measured_env(extra_env), scratch)}
    load_before = load_average()
    loads: list[dict[str, object]] = []
    rows: list[dict[str, object]] = []
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
            server.connect()
        for path, data in images:

            def side(name: str) -> Any:
                def run(rep: int) -> dict[str, float]:
                    server = servers[name]
                    preamble = f"Request {rep} about {path.name}."  # each round's own: never cached on its server
                    text = _ttft_s(server, _messages(None, kinds[path], preamble))
                    seen = _messages(data, kinds[path], preamble + " With a picture.")
                    image = _ttft_s(server, seen)
                    again = _ttft_s(server, seen)
                    time.sleep(SLEEP_BETWEEN_SIDES_S)
                    return {"text_ttft_s": text, "image_ttft_s": image, "again_ttft_s": again}
                return run

            measured = alternate(args.reps, [(OURS, side(OURS)), (THEIRS, side(THEIRS))], loads)
            for name, runs in measured.items():
                medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                rows.append({"image": path.name, "bytes": len(data), "side": name, "runs": runs, "median": medians,
                             "image_cost_s": medians["image_ttft_s"] - medians["text_ttft_s"]})
    finally:
        for server in servers.values():
            server.stop()
    load_after = load_average()
    print(f"model {args.model.name} + {args.mmproj.name}, {args.threads} threads, ctx {args.ctx}, "
          f"{args.parallel} slots, {args.reps} rounds")
    print(f"{'image':<24} {'side':<14} {'text ttft':>10} {'image ttft':>11} {'again':>8} {'image cost':>11}")
    for row in rows:
        m = row["median"]
        assert isinstance(m, dict)
        print(f"{row['image']!s:<24} {row['side']!s:<14} {m['text_ttft_s']:>9.3f}s {m['image_ttft_s']:>10.3f}s "
              f"{m['again_ttft_s']:>7.3f}s {row['image_cost_s']:>10.3f}s")
    write_json(args.output, {
        **result_head("benchmarks.bench_images", argv, load_before, load_after),
        "config": {"model": args.model.name, "mmproj": args.mmproj.name, "threads": args.threads, "ctx": args.ctx,
                   "parallel": args.parallel, "reps": args.reps, "question": QUESTION, "env": extra_env},
        "processes": {name: server.record() for name, server in servers.items()},
        "load_per_round": loads,
        "rows": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
