"""`llamaedge run`: the model picked when none is named, the fallback to the built-in model
when the hub cannot be reached, and the browser step (with a stand-in opener)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llamaedge import catalog, gpu, settings
from llamaedge.cli import main
from llamaedge.commands import run as run_command
from tests.conftest import REPO_ROOT, free_port, stop_process


def test_no_name_and_no_hub_falls_back_to_the_built_in_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    model = run_command.choose_model(None, None)
    out, err = capsys.readouterr()
    assert model.model_id == catalog.EMBEDDED_NAME
    assert "no model named: using" in " ".join(out.split())
    flat_err = " ".join(err.split())
    assert "cannot be reached" in flat_err and f"built-in {catalog.EMBEDDED_NAME} instead" in flat_err


def test_no_name_uses_the_picked_model_when_it_is_already_here(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_model: Path
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    budget = catalog.MemoryBudget.from_devices(gpu.probe_devices(), gpu.gpu_offload_supported())
    picked, reason = catalog.pick_default(budget)
    if picked.embedded:
        pytest.skip("this machine is too small for any downloadable model")
    assert picked.repo
    dest = settings.models_dir() / picked.repo / picked.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(tiny_model.read_bytes())
    if picked.mmproj is not None:  # a vision model is here when its projector is too (else run fetches it)
        dest.with_name(picked.mmproj.file).write_bytes(b"projector")
    model = run_command.choose_model(None, None)
    assert (model.model_id, model.path) == (picked.name, dest)
    assert model.mmproj == (dest.with_name(picked.mmproj.file) if picked.mmproj is not None else None)
    assert reason in " ".join(capsys.readouterr().out.split())


def test_a_vision_model_here_without_its_projector_serves_text_when_offline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tiny_model: Path
) -> None:
    """A model pulled before projectors came with it, on a machine that is offline now: run
    serves it, text only, and says how to get images, rather than falling back or failing."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    entry = next(e for e in catalog.load_catalog() if e.mmproj is not None and e.repo)
    dest = settings.models_dir() / entry.repo / entry.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(tiny_model.read_bytes())
    with caplog.at_level("WARNING", logger="llamaedge.catalog"):
        model = run_command.choose_model(entry.name, None)
    assert (model.model_id, model.path, model.mmproj) == (entry.name, dest, None)
    assert f"llamaedge pull {entry.name}" in caplog.text and "text only" in caplog.text


def test_named_model_that_cannot_be_downloaded_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from llamaedge.errors import OfflineError

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OfflineError):
        run_command.choose_model("qwen3.5-0.8b", None)


def test_no_display_means_no_browser(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert not run_command.browser_available()
    run_command.open_browser("http://127.0.0.1:8080")
    assert "open http://127.0.0.1:8080/ in your browser" in capsys.readouterr().out


def _recording_browser(tmp_path: Path) -> tuple[Path, Path]:
    """An executable that stands in for the browser: it writes the URL it was given."""
    record = tmp_path / "opened-url.txt"
    script = tmp_path / "fake-browser"
    script.write_text(f"#!/bin/sh\nprintf '%s' \"$1\" > '{record}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, record


def _start_run(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "llamaedge", "run", *args],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_browser_opens_on_the_chat_once_the_server_answers(tmp_path: Path) -> None:
    browser, record = _recording_browser(tmp_path)
    port = free_port()
    env = {**os.environ, "BROWSER": str(browser)}
    log = tmp_path / "run.log"
    proc = _start_run(["smollm2-135m", "--port", str(port)], env, log)
    try:
        deadline = time.monotonic() + 120
        while not record.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert record.exists(), log.read_text()
        assert record.read_text() == f"http://127.0.0.1:{port}/"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
    finally:
        stop_process(proc)


@pytest.mark.parametrize(("flags", "opens"), [([], True), (["--no-browser"], False)])
def test_no_browser_flag_keeps_the_browser_closed(monkeypatch: pytest.MonkeyPatch, flags: list[str], opens: bool) -> None:
    # What `run` hands the server to call once it answers: with --no-browser, nothing. (Checked
    # where it is decided: a real server could only show it by a browser not opening in time.)
    handed: list[object] = []

    def fake_launch(model: object, args: object, *, on_ready: object = None) -> int:
        handed.append(on_ready)
        return 0

    monkeypatch.setattr("llamaedge.launch.launch", fake_launch)
    monkeypatch.setattr(run_command, "pause_gc_for_startup", lambda: None)  # a real launch turns it back on
    assert main(["run", "smollm2-135m", *flags]) == 0
    assert handed == [run_command.open_browser if opens else None]
