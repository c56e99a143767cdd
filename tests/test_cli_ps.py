"""`llamaedge ps` and `llamaedge stop` against the library's routes on a real port (the scripted
loader behind them), through the CLI's main() and once as a subprocess: the table and its
JSON, unloading and waiting for it, and every error as one line with the fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import huggingface_hub.constants
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from llamaedge import catalog, settings
from llamaedge.cli import main
from llamaedge.client import server_url
from llamaedge.commands.ps import duration
from llamaedge.commands.serve import add_server_arguments
from llamaedge.download import human_bytes, partial_bytes
from llamaedge.errors import UsageError
from llamaedge.library import from_specs
from tests.conftest import REPO_ROOT, free_port
from tests.fakehub import FakeHub, hub  # noqa: F401 - the fixture
from tests.library_fakes import WAIT_S, FakeLoader, Listening, Served, bytes_arrived, next_event, serve  # noqa: F401 - the fixture
from tests.tiny_gguf import write_tiny_gguf

Serve = Callable[..., Served]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())  # rich wraps long lines: compare unwrapped


def table_rows(out: str) -> dict[str, list[str]]:
    """The table's rows by name, each as its cells (a terminal's box or piped plain columns)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]|\s{2,}", line) if c.strip()]
        if cells and not set(cells[0]) <= set("━─┡┩╇┼+-"):
            rows[cells[0]] = cells[1:]
    return rows


def model(served: Served, name: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{served.url}/v1/models/{name}", timeout=WAIT_S).json()
    return found


def test_ps_lists_the_loaded_models_with_memory_slots_busy_and_idle_time(
    serve: Serve, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    served = serve("a", "b", "c")
    with served.library.acquire("b"):
        pass  # b loaded, then idle
    lease = served.library.acquire("a")  # a answering one request
    try:
        code, out, err = run_cli(capsys, "ps", "--url", served.url)
        assert code == 0, err
        rows = table_rows(out)
        assert set(rows) >= {"a", "b"} and "c" not in rows
        assert rows["a"] == ["loaded", human_bytes(model(served, "a")["memory"]["ram_bytes"]), "512", "1/4", "-"]
        assert rows["b"][:4] == ["loaded", human_bytes(model(served, "b")["memory"]["ram_bytes"]), "512", "0/4"]
        assert re.fullmatch(r"\d+s", rows["b"][4]), rows["b"]
        assert rows["name"] == ["status", "memory", "context", "slots busy", "idle"]

        code, out, _ = run_cli(capsys, "ps", "--url", served.url + "/", "--json")
        assert code == 0
        listed = json.loads(out)
        assert listed["url"] == served.url
        assert [m["id"] for m in listed["models"]] == ["a", "b"]
        assert listed["models"][0]["runtime"]["requests_running"] == 1
        assert listed["models"][1]["runtime"]["requests_running"] == 0
    finally:
        lease.release()


def test_ps_shows_a_model_loading_and_one_waiting_for_its_requests_to_unload(
    serve: Serve, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    loader = FakeLoader(gates={"b": threading.Event()})
    served = serve(loader=loader)
    lease = served.library.acquire("a")
    served.post("/models/unload", {"model": "a"})
    served.post("/models/load", {"model": "b"})
    assert loader.started.wait(WAIT_S)
    try:
        code, out, _ = run_cli(capsys, "ps", "--url", served.url)
        rows = table_rows(out)
        assert code == 0 and rows["a"][0] == "unloading" and rows["a"][3] == "1/4"
        assert rows["b"][0] == "loading" and rows["b"][3:] == ["-", "-"]
    finally:
        loader.gates["b"].set()
        lease.release()


def test_ps_with_nothing_loaded_says_so_on_stderr(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    served = serve("a", "b")
    code, out, err = run_cli(capsys, "ps", "--url", served.url)
    assert code == 0 and out == ""
    assert err == f"No model is loaded on {served.url}: a request that names one loads it (2 in its library)."
    code, out, _ = run_cli(capsys, "ps", "--url", served.url, "--json")
    assert json.loads(out) == {"url": served.url, "models": []}


def test_stop_unloads_and_returns_once_the_memory_is_free(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    loader = FakeLoader()
    served = serve(loader=loader)
    with served.library.acquire("a"):
        pass
    code, out, err = run_cli(capsys, "stop", "a", "--url", served.url)
    assert (code, out.strip(), err) == (0, "stopped 'a'", "")
    assert loader.unloads == ["a"]  # freed before stop returned
    assert model(served, "a")["status"] == {"value": "unloaded"}
    code, out, err = run_cli(capsys, "ps", "--url", served.url)
    assert code == 0 and out == "" and "No model is loaded" in err


def test_stop_of_a_model_in_use_says_it_goes_when_its_requests_end(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    loader = FakeLoader()
    served = serve(loader=loader)
    events = served.library.subscribe()
    lease = served.library.acquire("a")
    code, out, _ = run_cli(capsys, "stop", "a", "--url", served.url)
    assert (code, out.strip()) == (0, "'a' is in use: it will be unloaded when its requests end (1 running or waiting)")
    assert loader.unloads == [] and model(served, "a")["status"] == {"value": "loaded", "unloading": True}
    lease.release()
    assert next_event(events, "a", status="unloaded").data == {"status": "unloaded", "reason": "asked"}
    assert loader.unloads == ["a"]


def test_stop_of_a_model_the_server_lacks_or_has_not_loaded_lists_the_loaded_ones(
    serve: Serve, capsys: pytest.CaptureFixture[str],
) -> None:
    served = serve("a", "b")
    code, out, err = run_cli(capsys, "stop", "b", "--url", served.url)
    assert (code, out) == (1, "")
    assert err == f"error: 'b' is not loaded on {served.url} (no model is loaded)"
    with served.library.acquire("a"):
        pass
    code, _, err = run_cli(capsys, "stop", "nope", "--url", served.url)
    assert code == 1 and err == f"error: the server at {served.url} has no model 'nope' (loaded: a)"
    code, _, err = run_cli(capsys, "stop", "b", "--url", served.url)
    assert code == 1 and err == f"error: 'b' is not loaded on {served.url} (loaded: a)"


def test_stop_cancels_a_download(
    serve: Serve, hub: FakeHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,  # noqa: F811
) -> None:
    # Small chunks, and the hub holds the file part way: the download is under way and has
    # reported progress; the hub lets the rest go once the stop has asked for the cancel (a
    # cancel takes effect at the next chunk the download receives).
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    hub.plain_files["far.gguf"] = write_tiny_gguf(tmp_path / "far.gguf").read_bytes()
    hub.hold_at_byte = 64 * 1024
    url = f"{hub.url}/files/far.gguf"
    served = serve(members=from_specs([url], settings.models_dir()))
    events = served.library.subscribe()
    assert served.post("/models/pull", {"model": "far"}).json() == {"success": True}
    bytes_arrived(events, "far")

    def release_once_cancelled() -> None:
        member = served.library._members["far"]  # the library's own record: its cancel flag
        assert member.cancel is not None and member.cancel.wait(60)
        hub.release.set()

    releaser = threading.Thread(target=release_once_cancelled, daemon=True)
    releaser.start()
    code, out, err = run_cli(capsys, "stop", "far", "--url", served.url)
    releaser.join(60)
    assert (code, err) == (0, "")
    assert out.strip() == "cancelled the download of 'far' (its partial file stays: pulling it again resumes it)"
    assert model(served, "far")["status"] == {"value": "unloaded"}
    assert partial_bytes(catalog.local_path(catalog.parse_spec(url), settings.models_dir())) > 0


def test_the_api_key_from_the_flag_or_the_environment(
    serve: Serve, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLAMAEDGE_API_KEY", raising=False)
    served = serve(api_key="sekret")
    with served.library.acquire("a"):
        pass
    code, _, err = run_cli(capsys, "ps", "--url", served.url)
    assert code == 1
    assert err == (f"error: the server at {served.url} needs an API key "
                   "(pass the key it was started with: --api-key KEY or LLAMAEDGE_API_KEY)")
    code, _, err = run_cli(capsys, "stop", "a", "--url", served.url, "--api-key", "wrong")
    assert code == 1 and err.startswith(f"error: the server at {served.url} refused the API key (pass")
    code, out, _ = run_cli(capsys, "ps", "--url", served.url, "--api-key", "sekret", "--json")
    assert code == 0 and [m["id"] for m in json.loads(out)["models"]] == ["a"]
    monkeypatch.setenv("LLAMAEDGE_API_KEY", "sekret")
    code, out, _ = run_cli(capsys, "stop", "a", "--url", served.url)
    assert (code, out.strip()) == (0, "stopped 'a'")


def test_no_server_there_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    for argv in (["ps", "--port", str(port)], ["stop", "a", "--url", f"http://127.0.0.1:{port}"]):
        code, out, err = run_cli(capsys, *argv)
        assert (code, out) == (1, "")
        assert err == (f"error: no server is running at http://127.0.0.1:{port} (start one with `llamaedge serve`, "
                       "or name yours with --url or --host/--port)")


def test_a_server_without_the_library_lists_its_models_as_loaded_and_cannot_stop_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server from before the model library: /v1/models without status, no /models routes."""
    monkeypatch.setenv("COLUMNS", "200")
    listing = {"object": "list", "data": [{"id": "only", "object": "model", "created": 0, "owned_by": "llamaedge",
                                           "context_length": 4096}]}

    async def models(request: object) -> JSONResponse:
        return JSONResponse(listing)

    served = Listening(Starlette(routes=[Route("/v1/models", models)]))
    try:
        code, out, _ = run_cli(capsys, "ps", "--url", served.url)
        assert code == 0 and table_rows(out)["only"] == ["loaded", "-", "4096", "-", "-"]
        code, _, err = run_cli(capsys, "stop", "only", "--url", served.url)
        assert code == 1 and err.startswith(f"error: the server at {served.url} has no model library to unload from")
    finally:
        served.stop()


def test_the_default_address_is_where_serve_listens() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    serve_args = parser.parse_args([])

    def url(**given: object) -> str:
        return server_url(argparse.Namespace(**{"url": None, "host": None, "port": None, **given}))

    assert url() == f"http://{serve_args.host}:{serve_args.port}"
    assert url(host="0.0.0.0", port=9000) == "http://127.0.0.1:9000"  # serve bound everywhere: ask this machine
    assert url(host="::") == f"http://[::1]:{serve_args.port}"
    assert url(url="https://example.test/llm/") == "https://example.test/llm"
    for given, message in (({"url": "http://x", "port": 1}, "--url and --host/--port"),
                           ({"url": "example.test:8080"}, "not an http:// or https:// address"),
                           ({"port": 70000}, "--port 70000 is not a port")):
        with pytest.raises(UsageError, match=message):
            url(**given)


def test_through_the_installed_command_piped(serve: Serve) -> None:
    served = serve("a", "b")
    with served.library.acquire("a"):
        pass
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    ps = subprocess.run([sys.executable, "-m", "llamaedge", "ps", "--url", served.url], capture_output=True,
                        text=True, env=env, cwd=REPO_ROOT, timeout=WAIT_S)
    assert ps.returncode == 0, ps.stderr
    assert table_rows(ps.stdout)["a"][0] == "loaded"
    stop = subprocess.run([sys.executable, "-m", "llamaedge", "stop", "nope", "--url", served.url],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=WAIT_S)
    assert stop.returncode == 1 and stop.stdout == ""
    assert stop.stderr.count("\n") == 1 and "has no model 'nope' (loaded: a)" in stop.stderr


def test_idle_time_reads_as_a_person_would_say_it() -> None:
    assert [duration(s) for s in (0, 59.9, 60, 245, 3599, 3600, 7380)] == [
        "0s", "59s", "1m 00s", "4m 05s", "59m 59s", "1h 00m", "2h 03m"]
