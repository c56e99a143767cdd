"""The named templates with native tool formats render tools, calls and results exactly as the
model family's own Jinja template does: `chatml` as Qwen2.5's template (Hermes `<tool_call>`
format), `llama-3-chat` as Llama 3.1's. The references are in tests/data/templates
(qwen2.5-tools.jinja, llama-3.1-tools.jinja; see the README there), rendered with jinja2 and the
`tojson` of Hugging Face's chat templates (json.dumps, keys in order, no ASCII escaping); the
app's rendering comes from the built wasm (`render-template NAME`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jinja2 import BaseLoader
from jinja2.sandbox import ImmutableSandboxedEnvironment
from wasmtime import Engine, Module

from tests.test_wasm_build import app_module, run_wasm  # noqa: F401  (app_module is a fixture)

TEMPLATES_DIR = Path(__file__).resolve().parent / "data" / "templates"
REFERENCES = {
    "chatml": ("qwen2.5-tools.jinja", {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}),
    "llama-3-chat": ("llama-3.1-tools.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city — now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "e.g. \"Zürich\""},
                                                       "days": {"type": "integer", "minimum": 1}},
                       "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
CALL_ARGS = {"city": "Zürich", "days": 2}


def call(call_id: str, arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


CASES: dict[str, list[dict[str, Any]]] = {
    "question": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Weather in Zürich?"}],
    "call_and_result": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": [call("call_1", CALL_ARGS)]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18}"},
    ],
    "results_in_a_row": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call("call_1", CALL_ARGS)]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "", "tool_calls": [call("call_2", {"city": "Oslo"})]},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "user", "content": "Thanks. And tomorrow?"},
    ],
}


def hf_tojson(value: Any, indent: int | None = None) -> str:
    """`tojson` as Hugging Face's chat templates define it."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def render_reference(name: str, messages: list[dict[str, Any]]) -> str:
    file, tokens = REFERENCES[name]
    environment = ImmutableSandboxedEnvironment(loader=BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    environment.filters["tojson"] = hf_tojson
    template = environment.from_string((TEMPLATES_DIR / file).read_text())

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    return template.render(messages=messages, tools=TOOLS, add_generation_prompt=True, raise_exception=raise_exception, **tokens)


def render_app(app: tuple[Engine, Module], tmp_path: Path, name: str, messages: list[dict[str, Any]]) -> str:
    # The API carries arguments as a JSON string; the reference receives them parsed, as hosts pass them.
    api_messages = [
        {**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}} for c in m["tool_calls"]]}
        if m.get("tool_calls") else m
        for m in messages
    ]
    stdin = json.dumps({"messages": api_messages, "tools": TOOLS}).encode()
    result = run_wasm(app, tmp_path, args=["render-template", name], stdin=stdin)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_tools_render_exactly_as_the_family_template(
    app_module: tuple[Engine, Module],  # noqa: F811
    tmp_path: Path,
    name: str,
    case: str,
) -> None:
    expected = render_reference(name, CASES[case])
    assert render_app(app_module, tmp_path, name, CASES[case]) == expected


def test_the_references_show_the_tools_and_the_calls() -> None:
    """Guards the comparison: the references do list the tools and the past calls."""
    for name in REFERENCES:
        text = render_reference(name, CASES["call_and_result"])
        assert "get_time" in text and "Zürich" in text and "18" in text
    assert "<tool_call>" in render_reference("chatml", CASES["call_and_result"])
    assert "<|start_header_id|>ipython<|end_header_id|>" in render_reference("llama-3-chat", CASES["call_and_result"])
