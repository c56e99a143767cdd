"""`llamaedge serve` from the command line: startup errors are one line with the fix."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from llamaedge import __version__
from llamaedge.catalog import find_entry
from tests.conftest import ServerProcess, free_port


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamaedge", "serve", *args],
                          capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "llamaedge", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"llamaedge {__version__}"


def test_unknown_prompt_template(tiny_model: Path) -> None:
    line = one_line_error(serve("--model", str(tiny_model), "--port", str(free_port()), "--prompt-template", "nope"))
    assert "unknown prompt template 'nope'" in line and "chatml" in line


def test_missing_model_file(tmp_path: Path) -> None:
    line = one_line_error(serve("--model", str(tmp_path / "absent.gguf")))
    assert "absent.gguf" in line


def test_not_a_gguf_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 100)
    line = one_line_error(serve("--model", str(junk), "--port", str(free_port())))
    assert "junk.gguf" in line


def test_mmproj_errors(tiny_model: Path, tmp_path: Path) -> None:
    line = one_line_error(serve("--model", str(tiny_model), "--mmproj", str(tmp_path / "absent.gguf"),
                                "--port", str(free_port())))
    assert "--mmproj" in line and "absent.gguf" in line
    line = one_line_error(serve("--model", str(tiny_model), "--model", str(tiny_model), "--mmproj", str(tiny_model),
                                "--port", str(free_port())))
    assert "--mmproj goes with one --model" in line
    # A projector that is no projector of this model: the load fails, one line.
    line = one_line_error(serve("--model", str(tiny_model), "--mmproj", str(tiny_model), "--port", str(free_port())))
    assert "projector" in line


def test_port_in_use(tiny_model: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(serve("--model", str(tiny_model), "--port", str(port), "--threads", "2"))
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_bad_port() -> None:
    assert "not a port" in one_line_error(serve("--model", "x.gguf", "--port", "70000"))


def test_a_named_template_is_used(start_server: Callable[..., ServerProcess], tiny_model: Path) -> None:
    server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "512",
                          "--prompt-template", "llama-3-chat")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    usage = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30).json()["usage"]
    # The llama-3 frame (header ids, eot) tokenizes longer than ChatML's for the same message.
    chatml = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "512")
    usage_chatml = httpx.post(f"{chatml.base_url}/v1/chat/completions", json=body, timeout=30).json()["usage"]
    assert usage["prompt_tokens"] != usage_chatml["prompt_tokens"]


def test_the_banner_shows_url_model_devices_offload_and_context(
        start_server: Callable[..., ServerProcess], tiny_model: Path) -> None:
    server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "512")
    banner = server.log()
    assert f"{server.base_url}/" in banner
    assert "serving tiny-chat" in banner
    assert "context   512 tokens" in banner
    assert "devices   CPU" in banner
    offload = next(line for line in banner.splitlines() if line.strip().startswith("offload"))
    assert "CPU" in offload or "GPU" in offload


def test_an_embedding_model_is_refused_before_any_download() -> None:
    line = one_line_error(serve("--model", "nomic-embed-text-v1.5"))
    assert "embedding model" in line and "llamaedge models" in line


def test_listening_beyond_this_machine_without_a_key_is_flagged(
        start_server: Callable[..., ServerProcess], tiny_model: Path) -> None:
    open_server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "256", "--host", "0.0.0.0")
    assert "without --api-key" in open_server.log()
    keyed = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "256", "--host", "0.0.0.0",
                         "--api-key", "k", "--allowed-host", "LLM.example")
    assert "without --api-key" not in keyed.log()
    # Bound beyond loopback: any address passes the Host check, a name only when allowed.
    for server, allowed in ((open_server, False), (keyed, True)):
        health = f"{server.base_url}/health"
        assert httpx.get(health, headers={"Host": f"192.0.2.7:{server.port}"}).status_code == 200
        assert httpx.get(health, headers={"Host": "attacker.example"}).status_code == 403
        assert httpx.get(health, headers={"Host": "llm.example"}).status_code == (200 if allowed else 403)


def test_a_bad_allowed_host_is_one_line_with_the_fix() -> None:
    line = one_line_error(serve("--model", "x.gguf", "--allowed-host", "llm.example:8080"))
    assert "--allowed-host 'llm.example:8080'" in line and "without a port" in line and "any port" in line


def test_an_embedding_model_is_served_beside_the_chat_model(
        start_server: Callable[..., ServerProcess], tiny_model: Path, tmp_path: Path) -> None:
    embed = tmp_path / "tiny-embed.gguf"
    shutil.copyfile(tiny_model, embed)
    server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "256",
                          "--embedding-model", str(embed))
    health = httpx.get(f"{server.base_url}/health").json()
    assert health == {"status": "ok", "model": "tiny-chat", "embedding_model": "tiny-embed"}
    embedding_line = next(line for line in server.log().splitlines() if line.strip().startswith("embedding"))
    assert "tiny-embed" in embedding_line and "context 2048 tokens" in embedding_line


def test_a_catalog_embedding_model_resolves_for_embedding_model(
        start_server: Callable[..., ServerProcess], tiny_model: Path, tmp_path: Path) -> None:
    # The catalog's file, already downloaded (the tiny model stands in for it): no hub is asked.
    entry = find_entry("nomic-embed-text-v1.5")
    assert entry is not None and entry.kind == "embedding" and entry.repo
    models = tmp_path / "models"
    local = models.joinpath(*entry.repo.split("/"), entry.file)
    local.parent.mkdir(parents=True)
    shutil.copyfile(tiny_model, local)
    server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "256",
                          "--models-dir", str(models), "--embedding-model", entry.name,
                          env={"HF_HUB_OFFLINE": "1"})
    assert httpx.get(f"{server.base_url}/health").json()["embedding_model"] == "nomic-embed-text-v1.5"
    assert "embedding nomic-embed-text-v1.5" in server.log()


def test_a_missing_embedding_model_file_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    line = one_line_error(serve("--model", str(tiny_model), "--embedding-model", str(tmp_path / "nope.gguf")))
    assert "nope.gguf" in line


def test_metrics_auth_without_a_key_is_refused() -> None:
    line = one_line_error(serve("--model", "x.gguf", "--metrics-auth"))
    assert "--metrics-auth" in line and "--api-key" in line


def test_a_negative_queue_max_is_refused() -> None:
    assert "--queue-max" in one_line_error(serve("--model", "x.gguf", "--queue-max", "-1"))


def test_the_banner_shows_the_queue_and_metrics(start_server: Callable[..., ServerProcess], tiny_model: Path) -> None:
    server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "256", "--parallel", "3")
    banner = server.log()
    assert "queue     12 waiting at most" in banner  # 4 per --parallel slot
    assert f"metrics   {server.base_url}/metrics" in banner


def _slots_and_queue(server: ServerProcess) -> tuple[int, float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.base_url}/metrics").text
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    return int(samples["llamaedge_slots_total"]), samples["llamaedge_queue_capacity"], samples["llamaedge_requests_in_flight"]


@pytest.mark.parametrize(("ctx", "slots"), [(4096, 8), (1024, 4)])
def test_without_parallel_the_slots_follow_the_context(start_server: Callable[..., ServerProcess], tiny_model: Path,
                                                      ctx: int, slots: int) -> None:
    from llamaedge.engine import default_parallel

    assert default_parallel(ctx) == slots  # the engine's rule is the default
    server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", str(ctx))
    assert _slots_and_queue(server) == (slots, 4 * slots, 0)
    banner = server.log()
    assert f"context   {ctx} tokens, {slots} parallel" in banner
    assert f"queue     {4 * slots} waiting at most" in banner


def test_parallel_given_wins_over_the_context(start_server: Callable[..., ServerProcess], tiny_model: Path) -> None:
    server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "4096", "--parallel", "2")
    assert _slots_and_queue(server) == (2, 8, 0)
    assert "context   4096 tokens, 2 parallel" in server.log()


def test_the_parallel_help_states_the_engines_rule() -> None:
    from llamaedge.engine.types import PARALLEL_MAX, PARALLEL_MIN, SLOT_CELLS

    result = subprocess.run([sys.executable, "-m", "llamaedge", "serve", "--help"], capture_output=True, text=True,
                            check=True, env={**os.environ, "COLUMNS": "400"})
    assert f"one per {SLOT_CELLS} context tokens, {PARALLEL_MIN} to {PARALLEL_MAX}" in result.stdout


def test_a_build_without_gpu_plans_without_reading_the_model(tmp_path: Path) -> None:
    from llamaedge import engine
    from llamaedge.launch import offload_plan
    from llamaedge.types import ResolvedModel

    if engine.supports_gpu_offload() and any(d.kind != "cpu" for d in engine.list_devices()):
        pytest.skip("this machine has a GPU: the plan reads the model's shape")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 100)  # reading its shape would fail
    plan = offload_plan(ResolvedModel(path=junk, model_id="junk"), None, None)
    assert (plan.n_gpu_layers, plan.mode) == (0, "cpu")


def test_launch_turns_the_collector_back_on_once_loaded(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    import argparse
    import gc

    import llamaedge.server
    from llamaedge.commands.serve import add_server_arguments, pause_gc_for_startup
    from llamaedge.launch import launch
    from llamaedge.types import ResolvedModel

    seen: dict[str, bool] = {}

    def loaded_at_once(config: object, *, on_loaded: Callable[[object], None], models: object, **_: object) -> int:
        models.wait()  # type: ignore[attr-defined]
        seen["off while starting"] = not gc.isenabled()
        on_loaded(llamaedge.server.ServerState(config))  # type: ignore[arg-type]  (its model is None: no banner)
        models.model.close()  # type: ignore[attr-defined]
        return 0

    monkeypatch.setattr(llamaedge.server, "serve", loaded_at_once)
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    args = parser.parse_args(["--threads", "1", "--ctx-size", "256", "--port", str(free_port())])
    pause_gc_for_startup()
    try:
        assert launch(ResolvedModel(path=tiny_model, model_id="tiny"), args) == 0
        assert seen == {"off while starting": True} and gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_draft_options_out_of_range_are_one_line(tiny_model: Path) -> None:
    assert "--draft-max must be 1 to 15" in one_line_error(serve("--model", str(tiny_model), "--spec-ngram",
                                                                 "--draft-max", "16"))
    assert "--draft-min must be 1 to --draft-max" in one_line_error(serve("--model", str(tiny_model), "--spec-ngram",
                                                                          "--draft-max", "4", "--draft-min", "5"))
    line = one_line_error(serve("--model", str(tiny_model), "--draft-max", "4"))
    assert "none are made" in line and "--spec-ngram" in line


def test_the_draft_help_states_the_engines_defaults() -> None:
    from llamaedge.commands import serve as serve_command
    from llamaedge.engine.types import DRAFT_MAX_DEFAULT, DRAFT_TOKENS_MAX

    assert (serve_command.DRAFT_MAX_DEFAULT, serve_command.DRAFT_TOKENS_MAX) == (DRAFT_MAX_DEFAULT, DRAFT_TOKENS_MAX)
    result = subprocess.run([sys.executable, "-m", "llamaedge", "serve", "--help"], capture_output=True, text=True,
                            check=True, env={**os.environ, "COLUMNS": "400"})
    assert f"(default {DRAFT_MAX_DEFAULT}, at most {DRAFT_TOKENS_MAX})" in result.stdout


def test_a_draft_model_of_another_vocabulary_is_one_line(tiny_model: Path, smollm2_model: Path) -> None:
    line = one_line_error(serve("--model", str(tiny_model), "--port", str(free_port()), "--threads", "2",
                                "--ctx-size", "256", "--draft-model", str(smollm2_model)))
    assert "does not have the model's vocabulary" in line and "same family" in line


def test_the_banner_shows_the_drafts(start_server: Callable[..., ServerProcess], tiny_model: Path) -> None:
    server = start_server("--model", str(tiny_model), "--threads", "2", "--ctx-size", "256", "--spec-ngram",
                          "--draft-model", str(tiny_model), "--draft-max", "6")
    drafts = next(line for line in server.log().splitlines() if line.strip().startswith("drafts"))
    assert "prompt lookup and tiny-chat.gguf" in drafts and "up to 6 tokens a step" in drafts
