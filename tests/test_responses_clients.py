"""Clients of the Responses API run unchanged against `llamaedge serve`: the Codex CLI (npm
`@openai/codex`, installed here into a temporary prefix) with a custom model provider, and the
OpenAI Agents SDK (PyPI `openai-agents`) with a function tool. Both on the tiny model: what is
checked is that the client gets through its protocol to an answer, not the answer's sense."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, serving

# The release this was checked with (`npm view @openai/codex version`).
CODEX_VERSION = "0.171.0"


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Codex's instructions and tool declarations take some 18,000 tokens.
    with serving(tmp_path_factory.mktemp("clients-home"), "--model", str(tiny_model), "--threads", "2",
                 "--ctx-size", "32768") as server:
        yield server


@pytest.fixture(scope="module")
def codex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the Codex CLI comes from npm")
    prefix = tmp_path_factory.mktemp("codex-prefix")
    result = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                             f"@openai/codex@{CODEX_VERSION}"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"npm could not install @openai/codex (no registry?): {result.stderr[-300:]}")
    return prefix / "node_modules" / ".bin" / "codex"


def test_codex_exec_answers_through_a_custom_provider(codex: Path, server: ServerProcess, tmp_path: Path) -> None:
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    provider = f'{{name="llamaedge",base_url="{server.base_url}/v1",wire_api="responses"}}'
    result = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", "-c", "model_provider=llamaedge",
         "-c", f"model_providers.llamaedge={provider}", "-m", "tiny-chat", "Say hi"],
        cwd=work, env={**os.environ, "CODEX_HOME": str(home)}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # `codex exec` prints the final message on stdout, and its transcript on stderr
    assert "provider: llamaedge" in result.stderr
    assert "codex\n" in result.stderr and "tokens used" in result.stderr
    assert result.stdout.strip(), result.stderr
    # the hosted tools Codex sends were left out, and the server said so
    assert "left out tools this server cannot run" in server.log()


def test_an_agents_sdk_agent_calls_its_function_tool_and_finishes(server: ServerProcess) -> None:
    agents = pytest.importorskip("agents", reason="the OpenAI Agents SDK (pip install openai-agents) is not installed")
    from openai import AsyncOpenAI

    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"18 degrees and sunny in {city}"

    async def run() -> Any:
        async with AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0) as client:
            # The SDK's default model provider, which speaks the Responses API, on this server.
            agents.set_default_openai_client(client, use_for_tracing=False)
            agent = agents.Agent(
                name="weather", instructions="Answer with the weather tool.", tools=[get_weather], model="tiny-chat",
                # The first turn must call the tool, and its output is the final output: the tiny
                # model never ends a text answer before a limit, and the SDK takes an
                # `incomplete` response for a failure.
                model_settings=agents.ModelSettings(tool_choice="required", max_tokens=120, temperature=0),
                tool_use_behavior="stop_on_first_tool",
            )
            return await agents.Runner.run(agent, "What is the weather in Paris?")

    agents.set_tracing_disabled(True)
    result = asyncio.run(run())
    assert len(calls) == 1
    assert result.final_output == f"18 degrees and sunny in {calls[0]}"
    assert [item.type for item in result.new_items] == ["tool_call_item", "tool_call_output_item"]
