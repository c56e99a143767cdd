"""The columns bench_server compares: which server, with which knobs, in which environment.

A ratio only compares the same knob on both sides:

- same settings: llamaedge `--threads T --parallel P` against llama-server
  `-t T -tb T -np P --kv-unified --cache-ram 0` (one unified KV cache on both, no prompt cache
  in RAM on either), the same context;
- defaults: neither gets a thread, slot or cache flag, only the same context; each side's
  defaults are stated (`stated_defaults`) and read back from its log (`log_facts`).

Every server gets an environment built from harness.measured_env, not inherited.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import REPO_ROOT, ServerProcess, git_commit, llamaedge_argv, measured_env
from llamaedge.engine.cpus import count_cpus
from llamaedge.engine.types import SLOT_CELLS, LoadOptions, default_parallel, default_threads

OURS = "llamaedge"
THEIRS = "llama-server"
OURS_DEFAULTS = "llamaedge-defaults"
THEIRS_DEFAULTS = "llama-server-defaults"
# llamaedge at the same settings as OURS, run from another checkout (--ours-tree): a
# before/after comparison in one run, against the same llama-server.
OURS_TREE = "llamaedge-tree"
VARIANTS = (OURS, OURS_DEFAULTS, THEIRS, THEIRS_DEFAULTS, OURS_TREE)
TABLE_VARIANTS = VARIANTS[:4]
SERVER = {OURS: OURS, OURS_DEFAULTS: OURS, THEIRS: THEIRS, THEIRS_DEFAULTS: THEIRS, OURS_TREE: OURS}
# (numerator column, denominator column, what the ratio compares)
PAIRS = ((OURS, THEIRS, "same settings"), (OURS_DEFAULTS, THEIRS_DEFAULTS, "defaults"),
         (OURS_TREE, THEIRS, "other tree, same settings"), (OURS, OURS_TREE, "this tree / other tree"))
ROWS = ("concurrency", "new_prompt", "conversation", "interference", "cold_start")
TABLE_ROWS = ("concurrency", "cold_start")
LIMIT = "llama-batched-bench"
# llama-server's defaults in the vendored llama.cpp (tools/server/README.md, server.cpp):
# -np -1 is 4 slots with a unified KV cache; --cache-ram 8192 MiB; -b 2048; -t/-tb the
# physical cores (common_cpu_get_num_math).
THEIRS_SLOTS_AUTO = 4
THEIRS_CACHE_RAM_MIB = 8192
THEIRS_BATCH = 2048
SLEEP_BETWEEN_SIDES_S = 0.3  # lets the previous server's threads go idle; not a measurement


@dataclass
class Config:
    model: Path
    threads: int = 2  # same settings: llamaedge --threads, llama-server -t and -tb
    ctx: int = 4096  # every column
    parallel: int = 8  # same settings: llamaedge --parallel, llama-server -np
    reps: int = 3
    stream_tokens: int = 128
    concurrency: tuple[int, ...] = (1, 4, 8)
    new_prompt_tokens: int = 400
    turns: int = 8
    turn_tokens: int = 32
    long_prompt_tokens: int = 2000
    interfered_stream_tokens: int = 256
    cold_start_tokens: int = 16
    rows: tuple[str, ...] = ROWS
    variants: tuple[str, ...] = (OURS, THEIRS)
    limit: bool = False  # llama-batched-bench in every repetition
    env: dict[str, str] = field(default_factory=dict)  # for every measured process
    ours_env: dict[str, str] = field(default_factory=dict)
    ours_args: list[str] = field(default_factory=list)
    ours_tune: list[str] = field(default_factory=list)  # KEY=VALUE for benchmarks.serve_tuned
    llama_server_args: list[str] = field(default_factory=list)
    ours_tree: Path | None = None  # the checkout OURS_TREE runs from


def ours_argv(cfg: Config, *, defaults: bool = False) -> Callable[[int], list[str]]:
    knobs = [] if defaults else ["--threads", str(cfg.threads), "--parallel", str(cfg.parallel)]
    launcher = ("-m", "benchmarks.serve_tuned", *cfg.ours_tune, "--") if cfg.ours_tune else ("-m", "llamaedge")
    return llamaedge_argv("--model", str(cfg.model), "--ctx-size", str(cfg.ctx), *knobs, *cfg.ours_args,
                          launcher=launcher)


def llama_server_argv(binary: Path, cfg: Config, *, defaults: bool = False) -> Callable[[int], list[str]]:
    knobs = [] if defaults else ["-t", str(cfg.threads), "-tb", str(cfg.threads), "-np", str(cfg.parallel),
                                 "--kv-unified", "--cache-ram", "0"]
    common = ["-m", str(cfg.model), "-c", str(cfg.ctx), *knobs, "--no-webui", *cfg.llama_server_args]
    return lambda port: [str(binary), "--host", "127.0.0.1", "--port", str(port), *common]


def column_label(variant: str, cfg: Config) -> str:
    if variant == OURS_TREE:
        tree = cfg.ours_tree or REPO_ROOT
        return f"llamaedge at {git_commit(tree) or tree} `--threads {cfg.threads} --parallel {cfg.parallel}`"
    return {
        OURS: f"llamaedge `--threads {cfg.threads} --parallel {cfg.parallel}`",
        OURS_DEFAULTS: "llamaedge defaults",
        THEIRS: f"llama-server `-t {cfg.threads} -tb {cfg.threads} -np {cfg.parallel} --kv-unified --cache-ram 0`",
        THEIRS_DEFAULTS: "llama-server defaults",
    }[variant]


def stated_defaults(variant: str, cfg: Config) -> str | None:
    """What a defaults column runs with, as each side's code chooses it on this machine."""
    cores = count_cpus()
    if variant == OURS_DEFAULTS:
        return (f"{default_threads(cores.usable)} threads for every decode (the usable CPUs), "
                f"{default_parallel(cfg.ctx)} slots (one per {SLOT_CELLS} cells), one unified KV cache, "
                f"batch {LoadOptions().batch_size}, no prompt cache in RAM")
    if variant == THEIRS_DEFAULTS:
        return ("-t/-tb the machine's physical cores as llama.cpp counts them (not its affinity or cgroup quota), "
                f"-np auto ({THEIRS_SLOTS_AUTO} slots, unified KV cache), -b {THEIRS_BATCH}, "
                f"--cache-ram {THEIRS_CACHE_RAM_MIB} MiB (idle slots saved to it)")
    return None


# What the servers' logs say they chose: llamaedge's banner, llama-server's slot and threadpool lines.
LOG_FACTS = {
    OURS: {"banner": re.compile(r"context\s+(\d+ tokens, \d+ parallel, .*threads.*)")},
    THEIRS: {"slots": re.compile(r"initializing, (n_slots = \d+, n_ctx_slot = \d+, kv_unified = '\w+')"),
             "threads": re.compile(r"llama threadpool init, (n_threads = \d+)")},
}


def log_facts(server: str, log: str) -> dict[str, str]:
    facts = {}
    for key, pattern in LOG_FACTS[server].items():
        found = pattern.search(log)
        if found:
            facts[key] = found.group(1).strip()
    return facts


def server_maker(variant: str, cfg: Config, binary: Path | None, work: Path) -> Callable[[], ServerProcess]:
    """Makes the server process of one column (not started): its argv, and its environment
    built from the whitelist, cfg.env and (llamaedge) cfg.ours_env and a home of its own in
    `work`, so the compiled-app cache is warm for its cold starts. `binary`: llama-server's."""
    defaults = variant in (OURS_DEFAULTS, THEIRS_DEFAULTS)
    cwd = REPO_ROOT
    if variant == OURS_TREE:
        if cfg.ours_tree is None:
            raise ValueError(f"{variant} needs --ours-tree")
        cwd = cfg.ours_tree
    if SERVER[variant] == OURS:
        home = work / f"home-{variant}"
        home.mkdir(exist_ok=True)
        env = measured_env({**cfg.env, **cfg.ours_env}, home=home)
        argv = ours_argv(cfg, defaults=defaults)
    else:
        if binary is None:
            raise ValueError(f"{variant} needs the llama-server binary")
        env, argv = measured_env(cfg.env), llama_server_argv(binary, cfg, defaults=defaults)
    return lambda: ServerProcess(variant, argv, env, work, cwd=cwd)
