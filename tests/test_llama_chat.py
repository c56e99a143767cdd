"""`llamaedge chat` and the llama-chat WebAssembly app it runs: a multi-turn chat in the
terminal, driven here through stdin with the real SmolLM2 on llama.cpp in real wasmtime.
The app's conversation and budget logic has Zig unit tests against a fake backend
(wasm-apps/llama-chat/src/conversation.zig, run by test_wasm_build.py)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from wasmtime import Engine, Module, WasiConfig

from llamaedge.cli import build_parser
from llamaedge.commands.chat import app_arguments, default_app_path
from llamaedge.types import ResolvedModel
from tests.test_api_reasoning import THINKING_TEMPLATE
from tests.tiny_gguf import write_tiny_gguf

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "llamaedge" / "apps" / "llama-chat.wasm"
USER_CUE = "[USER]:\n"
ASSISTANT_CUE = "[ASSISTANT]:\n"
THINKING_CUE = "[THINKING]:\n"
THINKING_END = "\n[END OF THINKING]\n"
DIM, NORMAL = "\x1b[2m", "\x1b[0m"
# Greedy, short answers and a small context keep the real model quick and repeatable.
QUICK = ["--temp", "0", "--seed", "1", "-n", "24", "--threads", "2"]


@dataclass
class Chat:
    returncode: int
    stdout: str
    stderr: str

    @property
    def answers(self) -> list[str]:
        """The assistant's answers, in order, as shown on stdout."""
        return [part.split("\n" + USER_CUE, 1)[0] for part in self.stdout.split(ASSISTANT_CUE)[1:]]

    @property
    def prompts(self) -> list[str]:
        """The prompts as rendered (--log-prompts), in order."""
        return re.findall(r"\[prompt, \d+ tokens\]\n(.*?)\n\[end of prompt\]\n", self.stderr, flags=re.DOTALL)


def run_cli(*args: str, lines: list[str], timeout: float = 300) -> Chat:
    stdin = "".join(line + "\n" for line in lines)
    result = subprocess.run([sys.executable, "-m", "llamaedge", *args], input=stdin, capture_output=True,
                            text=True, timeout=timeout, cwd=REPO_ROOT)
    return Chat(result.returncode, result.stdout, result.stderr)


def chat(model: Path, *args: str, lines: list[str]) -> Chat:
    return run_cli("chat", "--model", str(model), "--ctx-size", "512", *QUICK, *args, lines=lines)


# ---------------------------------------------------------------------------
# Without a model


def test_the_module_is_a_wasi_command_with_only_the_host_imports() -> None:
    module = Module.from_file(Engine(), str(APP_PATH))
    assert {"_start", "memory"} <= {export.name for export in module.exports}
    assert {imp.module for imp in module.imports} == {"wasi_snapshot_preview1", "wasi_ephemeral_nn", "llamaedge"}
    assert default_app_path() == APP_PATH


def test_help_lists_the_options_and_the_commands() -> None:
    result = run_cli("run-wasm", str(APP_PATH), "--help", lines=[])
    assert result.returncode == 0
    for fragment in ("--prompt-template", "--system-prompt", "--n-predict", "--ctx-size", "/reset", "/exit"):
        assert fragment in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["-p", "klingon"], "unknown prompt template 'klingon'; use auto or one of: chatml"),
        (["-n", "0"], "-n must be at least 1"),
        (["--temp", "warm"], "--temp must be a number, got 'warm'"),
        (["--ctx-size"], "--ctx-size needs a value"),
    ],
)
def test_bad_flags_exit_non_zero_with_one_line(args: list[str], fragment: str) -> None:
    result = run_cli("run-wasm", str(APP_PATH), *args, lines=["hello"])
    assert result.returncode == 2
    assert result.stderr.startswith("llama-chat: ")
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert result.stdout == ""  # no chat began


def test_without_a_preloaded_model_it_says_how_to_give_one() -> None:
    result = run_cli("run-wasm", str(APP_PATH), lines=["hello"])
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == "llama-chat: no model is preloaded as 'default': run it with --nn-preload default:GGML:AUTO:model.gguf"
    assert "Traceback" not in result.stderr


def test_chat_rejects_bad_host_options_before_loading(tmp_path: Path) -> None:
    result = run_cli("chat", "--model", str(tmp_path / "absent.gguf"), "--ctx-size", "0", lines=[])
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "--ctx-size must be at least 1" in result.stderr
    typed = run_cli("chat", "--temp", "warm", lines=[])
    assert typed.returncode == 2 and "--temp: invalid float value: 'warm'" in typed.stderr


def test_chat_refuses_bad_app_options_before_loading_the_model(tiny_model: Path) -> None:
    result = run_cli("chat", "--model", str(tiny_model), "-p", "klingon", lines=["hello"])
    assert result.returncode == 2
    assert result.stderr.strip().startswith("llama-chat: unknown prompt template 'klingon'")
    assert len(result.stderr.strip().splitlines()) == 1  # no "loading ..." line: the model never loaded
    assert result.stdout == ""


def test_chat_passes_the_app_options_and_the_real_context_size() -> None:
    args = build_parser().parse_args(
        ["chat", "-s", "-be brief-", "-n", "12", "--temp", "0", "-r", "User:", "-r", "###", "--log-prompts"])
    model = ResolvedModel(path=Path("m.gguf"), model_id="m", prompt_template="chatml")
    assert app_arguments(args, model, 2048) == [
        "--ctx-size=2048", "--prompt-template=chatml", "--system-prompt=-be brief-", "--n-predict=12",
        "--reverse-prompt=User:", "--reverse-prompt=###", "--temp=0.0", "--log-prompts",
    ]
    # an asked-for template wins over the catalog's; "auto" models get none
    chosen = build_parser().parse_args(["chat", "-p", "zephyr"])
    assert app_arguments(chosen, model, 512) == ["--ctx-size=512", "--prompt-template=zephyr"]
    assert app_arguments(build_parser().parse_args(["chat"]), ResolvedModel(Path("m"), "m"), 512) == ["--ctx-size=512"]
    assert app_arguments(chosen, model, None) == ["--prompt-template=zephyr"]  # the size not known yet


# ---------------------------------------------------------------------------
# With SmolLM2


@pytest.mark.slow
def test_the_second_prompt_carries_the_first_turn_and_eof_exits_zero(smollm2_model: Path) -> None:
    result = chat(smollm2_model, "--log-prompts", "-s", "You are a helpful assistant.",
                  lines=["My name is Ada.", "What is my name?"])
    assert result.returncode == 0, result.stderr
    first, second = result.answers
    assert first.strip() and second.strip()
    assert len(result.prompts) == 2
    # the model's own (ChatML) template, with the whole conversation so far
    assert result.prompts[1].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert f"<|im_start|>user\nMy name is Ada.<|im_end|>\n<|im_start|>assistant\n{first}<|im_end|>\n" in result.prompts[1]
    assert result.prompts[1].endswith("<|im_start|>user\nWhat is my name?<|im_end|>\n<|im_start|>assistant\n")
    # end of input: the app waited for a third message and quit cleanly
    assert result.stdout.endswith(USER_CUE)


@pytest.mark.slow
def test_reset_forgets_the_conversation_and_keeps_the_system_prompt(smollm2_model: Path) -> None:
    result = chat(smollm2_model, "--log-prompts", "-s", "Answer in one sentence.",
                  lines=["Remember the word pineapple.", "/reset", "Which word?", "/exit", "never read"])
    assert result.returncode == 0, result.stderr
    assert "[the conversation is forgotten; the system prompt stays]" in result.stderr
    assert len(result.answers) == 2 and len(result.prompts) == 2
    assert "pineapple" not in result.prompts[1]
    assert result.prompts[1].startswith("<|im_start|>system\nAnswer in one sentence.<|im_end|>\n<|im_start|>user\nWhich word?")
    assert "never read" not in result.stderr  # /exit quit before it


@pytest.mark.slow
def test_a_full_context_drops_the_oldest_turns_says_so_and_goes_on(smollm2_model: Path) -> None:
    filler = " ".join(f"item{i}" for i in range(40))  # about 110 tokens: two turns overflow 256
    notes = [f"Note {n}: {filler}" for n in range(1, 4)]
    too_long = "word " * 1000  # more than the whole context
    result = run_cli("chat", "--model", str(smollm2_model), "--ctx-size", "256", *QUICK, "--log-prompts",
                     "-s", "Be brief.", lines=[notes[0], notes[1], too_long, notes[2]])
    assert result.returncode == 0, result.stderr
    assert re.search(r"\[context full: dropped the \d+ oldest turns? to make room; the system prompt stays\]", result.stderr)
    assert re.search(r"\[that message does not fit in the context of \d+ tokens; not sent\]", result.stderr)
    # every note was answered, the last one with the system prompt and without the first note
    assert len(result.answers) == 3 and result.answers[-1].strip()
    assert "word word" not in result.stderr  # the message that did not fit never became a prompt
    last = result.prompts[-1]
    assert last.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "Note 1:" not in last and "Note 3:" in last
    tokens = [int(n) for n in re.findall(r"\[prompt, (\d+) tokens\]", result.stderr)]
    assert max(tokens) <= 256 - 24  # the history never crowded out the answer


@pytest.mark.slow
def test_the_app_runs_under_run_wasm_with_a_preloaded_model(smollm2_model: Path) -> None:
    result = run_cli("run-wasm", "--nn-preload", f"default:GGML:AUTO:{smollm2_model}", str(APP_PATH),
                     "--temp", "0", "-n", "16", "-c", "256", "--log-stat", "-p", "chatml", lines=["Hi!", "/help"])
    assert result.returncode == 0, result.stderr
    # the host loaded the model with the context the app asked for
    assert re.search(r"loaded graph \d+ from SmolLM2\S*\.gguf \(ctx 256\)", result.stderr), result.stderr
    assert len(result.answers) == 1 and result.answers[0].strip()
    assert re.search(r"\[prompt \d+ tokens, answer \d+ tokens\]", result.stderr)
    assert "/reset  forget the conversation" in result.stderr
    assert "template chatml" in result.stderr


class Terminal:
    """A process on a pseudo-terminal, as a user at a keyboard would run it."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "llamaedge", *args], stdin=slave, stdout=slave,
                                     stderr=slave, close_fds=True, cwd=REPO_ROOT)
        os.close(slave)
        self.seen = b""

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait_for(self, text: bytes, count: int = 1, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while self.seen.count(text) < count:
            assert time.monotonic() < deadline, self.seen.decode(errors="replace")
            if select.select([self.master], [], [], 1)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # the process ended and closed the terminal
                    break
        assert self.seen.count(text) >= count, self.seen.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.mark.slow
def test_in_a_terminal_it_answers_each_line_and_ctrl_d_quits(smollm2_model: Path) -> None:
    term = Terminal(["chat", "--model", str(smollm2_model), "--ctx-size", "512", *QUICK])
    try:
        term.wait_for(b"[USER]:")
        term.type(b"Hello!\n")
        # the answer comes, then the cue for the next line, before anything else is typed
        term.wait_for(b"[USER]:", count=2)
        answer = term.seen.split(b"[ASSISTANT]:", 1)[1].split(b"[USER]:", 1)[0]
        assert answer.strip()
        term.type(b"\x04")  # Ctrl-D: end of input
        assert term.proc.wait(timeout=60) == 0
    finally:
        term.close()


# ---------------------------------------------------------------------------
# Streaming, observed from inside the host


@pytest.fixture(scope="module")
def smollm2_runtime(smollm2_model: Path) -> Iterator[tuple]:
    from llamaedge.engine import LoadOptions, Model
    from llamaedge.runtime import GraphRegistry, Runtime

    model = Model(smollm2_model, LoadOptions(ctx_size=512, parallel=1, threads=2))
    registry = GraphRegistry()
    registry.register("default", model)
    runtime = Runtime(registry)
    try:
        yield runtime, registry
    finally:
        runtime.close()
        registry.close()
        model.close()


@pytest.mark.slow
def test_answers_stream_while_they_are_generated(smollm2_runtime: tuple, tmp_path: Path) -> None:
    from llamaedge.runtime import NNSession

    runtime, registry = smollm2_runtime
    session = NNSession(registry)
    writes: list[tuple[bytes, int]] = []  # (what the app wrote, tokens generated by then)

    def on_stdout(data: bytes) -> None:
        writes.append((bytes(data), sum(c.n_output_tokens for c in session.contexts.values())))

    stdin = tmp_path / "stdin"
    stdin.write_text("Tell me about the sea.\n")
    wasi = WasiConfig()
    wasi.argv = ["llama-chat.wasm", "--temp", "0", "-n", "20", "-c", "512", "-p", "chatml"]
    wasi.stdin_file = str(stdin)
    wasi.stdout_custom = on_stdout
    wasi.stderr_file = str(tmp_path / "stderr")
    assert runtime.run(runtime.load_app(APP_PATH), wasi, session) == 0

    cue = next(i for i, (data, _) in enumerate(writes) if data == ASSISTANT_CUE.encode())
    end = next(i for i in range(cue, len(writes)) if writes[i][0] == b"\n")
    pieces = writes[cue + 1 : end]
    total = writes[end][1]
    assert total > 4 and len(pieces) > 4
    # each piece was shown when only the tokens up to it existed: the first long before the end
    assert pieces[0][1] < total / 2
    assert [tokens for _, tokens in pieces] == sorted(tokens for _, tokens in pieces)
    assert b"".join(data for data, _ in pieces).decode().strip()


# ---------------------------------------------------------------------------
# A thinking model: the tiny model with a template whose generation prompt opens a think
# block (as DeepSeek-R1 distills' do). Its random weights never close the block, so the
# whole reply is thought; the Zig tests cover a thought followed by an answer.


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-thinker.gguf", chat_template=THINKING_TEMPLATE)


def test_a_thought_is_shown_as_thinking_and_never_sent_back(thinking_model: Path) -> None:
    result = chat(thinking_model, "--log-prompts", lines=["What is two plus two?", "And three plus three?"])
    assert result.returncode == 0, result.stderr
    assert DIM not in result.stdout  # not a terminal: no colours
    first, second = result.answers
    for answer in (first, second):
        assert answer.startswith(THINKING_CUE) and answer.endswith(THINKING_END)
    thought = first[len(THINKING_CUE):-len(THINKING_END)]
    assert thought.strip()
    # the next prompt has the first turn with its answer only (empty: it was all thought)
    assert "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n" in result.prompts[1]
    assert thought not in result.prompts[1] and "<think>\n" + thought not in result.prompts[1]
    assert result.prompts[1].endswith("<|im_start|>assistant\n<think>\n")


def test_in_a_terminal_the_thought_is_dimmed(thinking_model: Path) -> None:
    piped = chat(thinking_model, lines=["What is two plus two?"])
    assert piped.returncode == 0, piped.stderr
    term = Terminal(["chat", "--model", str(thinking_model), "--ctx-size", "512", *QUICK])
    try:
        term.wait_for(b"[USER]:")
        term.type(b"What is two plus two?\n")
        term.wait_for(b"[USER]:", count=2)
        term.type(b"\x04")
        assert term.proc.wait(timeout=60) == 0
    finally:
        term.close()
    shown = term.seen.decode().replace("\r\n", "\n")
    answer = shown.split(ASSISTANT_CUE, 1)[1].split(USER_CUE, 1)[0]
    # the same greedy thought as piped, marked the same way, in faint text (a notice may follow)
    assert answer.startswith(DIM + piped.answers[0] + NORMAL + "\n")
    assert answer.count(DIM) == 1 and answer.count(NORMAL) == 1
