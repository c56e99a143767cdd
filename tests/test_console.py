"""What the CLI draws: tables and download progress fit an 80-column terminal, and output that
is piped is plain text (no box drawing, no colour, nothing redrawn)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from llamaedge import console as term
from llamaedge.console import Column
from llamaedge.download import ProgressEvent

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOX_DRAWING = re.compile("[\u2500-\u257f]")


def _terminal(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system="standard", highlight=False)


def _pipe() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, highlight=False)


def _screen_lines(screen: Console) -> list[str]:
    """What a terminal shows, line by line: escape codes dropped, redraws (\\r) split."""
    assert isinstance(screen.file, io.StringIO)
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", screen.file.getvalue())) if line.strip()]


COLUMNS = [Column("name"), Column("keep", priority=5), Column("drop-first", priority=0), Column("drop-next", priority=1)]
ROWS = [["alpha", "k" * 8, "f" * 12, "n" * 12], ["beta", "k", "f", "n"]]


def test_a_table_too_wide_leaves_out_its_least_important_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = _terminal(40)  # all four need 45 columns; without drop-first they need 31
    monkeypatch.setattr(term, "console", screen)
    term.print_table(None, COLUMNS, ROWS, caption="A caption.")
    lines = _screen_lines(screen)
    assert max(len(line) for line in lines) <= 40
    header = next(line for line in lines if "name" in line)
    assert header.split() == ["name", "keep", "drop-next"]
    assert any(line.split() == ["alpha", "k" * 8, "n" * 12] for line in lines)
    assert "Left out to fit 40 columns: drop-first" in " ".join(" ".join(lines).split())


def test_the_first_column_stays_however_narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = _terminal(12)
    monkeypatch.setattr(term, "console", screen)
    term.print_table(None, COLUMNS, ROWS)
    header = next(line for line in _screen_lines(screen) if "name" in line)
    assert header.split() == ["name"]
    assert any(line.split() == ["alpha"] for line in _screen_lines(screen))


def test_a_wrapping_column_wraps_at_spaces_before_any_column_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = _terminal(30)  # "one two three four five" needs 23: the whole table 32
    monkeypatch.setattr(term, "console", screen)
    term.print_table(None, [Column("name"), Column("words", wrap_width=10), Column("n", priority=9)],
                     [["alpha", "one two three four five", "1"]])
    lines = _screen_lines(screen)
    assert max(len(line) for line in lines) <= 30
    text = " ".join(lines)
    assert "Left out" not in text
    words = [word for line in lines[2:] for word in line.split() if word not in ("alpha", "1")]
    assert words == ["one", "two", "three", "four", "five"]  # each whole, none cut in two


def test_a_piped_table_is_plain_aligned_columns_with_notes_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = _pipe(), _pipe()
    monkeypatch.setattr(term, "console", out)
    monkeypatch.setattr(term, "err_console", err)
    term.print_table("A title", COLUMNS, [["[bold]alpha[/] *", "k", "f", "[red]no[/]"]], caption="A [dim]note[/].")
    assert isinstance(out.file, io.StringIO) and isinstance(err.file, io.StringIO)
    text = out.file.getvalue()
    assert not BOX_DRAWING.search(text) and "\x1b" not in text and "[bold]" not in text
    assert text.splitlines() == ["name     keep  drop-first  drop-next", "alpha *  k     f           no"]
    assert err.file.getvalue().splitlines() == ["A title", "A note."]


def test_download_bars_fit_an_80_column_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = _terminal(80)
    monkeypatch.setattr(term, "err_console", screen)
    name = "Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_XL-with-a-long-name.gguf"
    with term.download_progress() as draw:
        draw(ProgressEvent(name, "resolving"))
        draw(ProgressEvent(name, "downloading", 1_000_000_000, 2_000_000_000))
    lines = _screen_lines(screen)
    assert lines and max(len(line) for line in lines) <= 80
    bar = lines[-1]
    assert bar.startswith("downloading Qwen3-Coder") and "…" in bar  # the name gives way, on one line
    assert "1.0/2.0 GB" in bar


def test_piped_downloads_write_a_few_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _pipe()
    monkeypatch.setattr(term, "err_console", log)
    with term.download_progress() as draw:
        draw(ProgressEvent("m.gguf", "resolving"))
        for done in (250_000, 400_000, 500_000, 990_000, 1_000_000):
            draw(ProgressEvent("m.gguf", "downloading", done, 1_000_000))
        draw(ProgressEvent("m.gguf", "verifying", 1_000_000, 1_000_000))
        draw(ProgressEvent("m.gguf", "done", 1_000_000, 1_000_000))
    assert isinstance(log.file, io.StringIO)
    assert log.file.getvalue().splitlines() == [
        "downloading m.gguf (1.0 MB), resuming at 250.0 KB",
        "downloading m.gguf: 50%",
        "downloading m.gguf: 75%",
        "verifying m.gguf",
        "downloaded m.gguf",
    ]
