"""`llamaedge.serve()`: a real `llamaedge serve` child process on the tiny model, used through
the openai SDK, stopped by leaving the `with` block; failed starts raise with the server's
own error line."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import openai
import psutil
import pytest

import llamaedge
from llamaedge import process
from llamaedge.errors import ServerStartError

TINY = {"ctx_size": 256, "threads": 2, "parallel": 1}


def test_serve_starts_a_ready_server_and_stops_it_cleanly(tiny_model: Path) -> None:
    with llamaedge.serve(tiny_model, api_key="s3cret", extra_args=["--allowed-host", "llm.example"], **TINY) as server:
        assert server.returncode is None
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.openai_base_url == server.base_url + "/v1"
        assert server.api_key == "s3cret"
        assert httpx.get(f"{server.base_url}/health").json()["status"] == "ok"  # ready on return
        with openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0) as client:
            assert [m.id for m in client.models.list()] == ["tiny-chat"]
            reply = client.chat.completions.create(model="tiny-chat", max_tokens=2,
                                                   messages=[{"role": "user", "content": "hi"}])
            assert reply.usage is not None and reply.usage.completion_tokens <= 2
        # The options reached the server: the key (through its environment), the context
        # and the extra arguments.
        assert httpx.get(f"{server.openai_base_url}/models").status_code == 401
        assert "s3cret" not in " ".join(server.process.args)  # type: ignore[arg-type]
        assert "256 tokens, 1 parallel" in server.output
        assert httpx.get(f"{server.base_url}/health", headers={"Host": "llm.example"}).status_code == 200
    assert server.returncode == 0  # SIGTERM: drained and exited 0, not killed
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/health")
    assert server.stop() == 0  # again: a no-op


def test_a_failed_start_raises_the_servers_error_line(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF but not really")
    with pytest.raises(ServerStartError) as failed:
        llamaedge.serve(bogus, **TINY)
    assert str(failed.value).startswith("the server did not start: error: ")
    assert "could not load bogus.gguf" in str(failed.value)
    assert failed.value.returncode == 1
    assert "could not load bogus.gguf" in failed.value.output


def test_a_server_not_ready_in_time_is_stopped_and_raises(tiny_model: Path) -> None:
    children_before = {child.pid for child in psutil.Process().children()}
    with pytest.raises(ServerStartError) as failed:
        llamaedge.serve(tiny_model, ready_timeout_s=0, **TINY)  # the deadline has passed at the first look
    assert str(failed.value).startswith("the server was not ready within 0s")
    assert failed.value.returncode is None and "ready_timeout_s" in (failed.value.hint or "")
    assert {child.pid for child in psutil.Process().children()} <= children_before


def test_a_taken_port_given_fails_and_a_taken_port_picked_is_picked_again(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(ServerStartError) as failed:
            llamaedge.serve(tiny_model, port=taken, **TINY)
        assert f"cannot listen on 127.0.0.1:{taken}" in str(failed.value)
        # A picked port that someone else took meanwhile: the next pick is used.
        picks = iter([taken])
        monkeypatch.setattr(process, "_free_port", lambda host: next(picks, 0) or _any_free_port())
        with llamaedge.serve(tiny_model, **TINY) as server:
            assert server.port != taken
            assert httpx.get(f"{server.base_url}/health").status_code == 200


def _any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("output", "line"), [
    ("loading x ...\nerror: could not load x.gguf (is it a GGUF file?)\n", "error: could not load x.gguf (is it a GGUF file?)"),
    ("a\nerror: first\nb\nerror: second\nc\n", "error: second"),
    ("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n", "RuntimeError: boom"),
    ("", "(no output)"),
])
def test_the_error_line_is_the_last_error_or_the_last_line(output: str, line: str) -> None:
    assert process.error_line(output) == line
