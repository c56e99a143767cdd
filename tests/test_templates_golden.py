"""Every named prompt template of the chat-server app renders exactly what the real model's
own Jinja chat template renders.

The reference templates (tests/data/templates/*.jinja, sources in models.json and the
README there) are rendered with jinja2 the way llama-cpp-python's Jinja2ChatFormatter
does; the app's rendering comes from the built wasm (`render-template NAME`).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from jinja2 import BaseLoader
from jinja2.sandbox import ImmutableSandboxedEnvironment
from wasmtime import Engine, Module

from tests.test_wasm_build import app_module, run_wasm  # noqa: F401  (app_module is a fixture)

TEMPLATES_DIR = Path(__file__).resolve().parent / "data" / "templates"
MODELS: dict[str, dict[str, str]] = json.loads((TEMPLATES_DIR / "models.json").read_text())

Messages = list[dict[str, str]]


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


CASES: dict[str, Messages] = {
    "system_user": [msg("system", "You are a helpful assistant."), msg("user", "What is the capital of France?")],
    "multi_turn": [
        msg("system", "Answer in one word."),
        msg("user", "Capital of France?"),
        msg("assistant", "Paris."),
        msg("user", "And of Italy?"),
    ],
    "no_system": [msg("user", "Hello there")],
    "no_system_multi_turn": [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"), msg("user", "Tell me a joke.")],
    "empty_content": [msg("system", ""), msg("user", "")],
    "empty_assistant": [msg("user", "Say nothing."), msg("assistant", ""), msg("user", "Thanks")],
    # Leading/trailing whitespace shows which templates trim (Python's str.strip semantics).
    "whitespace_and_unicode": [
        msg("system", "  Be nice.\n"),
        msg("user", "\n\tCafé — naïve façade 😀 \u3000"),
        msg("assistant", " Sure! \n"),
        msg("user", "Ünïcödé?  "),
    ],
}


def fold_system(messages: Messages) -> Messages:
    """What the app does for a model without a system role: system text joins the next
    user message as `system + "\\n\\n" + user` (see docs/chat-server.md)."""
    folded: Messages = []
    pending: list[str] = []
    for message in messages:
        if message["role"] == "system":
            pending.append(message["content"])
        elif message["role"] == "user":
            folded.append(msg("user", "\n\n".join([*pending, message["content"]])))
            pending = []
        else:
            folded.append(message)
    if pending:
        folded.append(msg("user", "\n\n".join(pending)))
    return folded


def render_reference(name: str, messages: Messages, *, fold: bool | None = None) -> str:
    """The model's own template, rendered as llama-cpp-python renders chat templates.
    `fold` defaults to what models.json says about the model's system role."""
    model = MODELS[name]
    environment = ImmutableSandboxedEnvironment(loader=BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    template = environment.from_string((TEMPLATES_DIR / f"{name}.jinja").read_text())

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    if model["system"] == "folded" if fold is None else fold:
        messages = fold_system(messages)
    return template.render(
        messages=messages,
        bos_token=model["bos_token"],
        eos_token=model["eos_token"],
        raise_exception=raise_exception,
        add_generation_prompt=True,
        functions=None,
        function_call=None,
        tools=None,
        tool_choice=None,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
    )


def render_app(app: tuple[Engine, Module], tmp_path: Path, name: str, messages: Messages) -> str:
    result = run_wasm(app, tmp_path, args=["render-template", name], stdin=json.dumps({"messages": messages}).encode())
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


def test_every_named_template_has_a_reference() -> None:
    for name in MODELS:
        assert (TEMPLATES_DIR / f"{name}.jinja").is_file()
    required = {"chatml", "llama-3-chat", "llama-2-chat", "mistral-instruct", "gemma-instruct", "phi-3-chat"}
    assert required <= set(MODELS)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_app_renders_exactly_what_the_model_template_renders(
    app_module: tuple[Engine, Module],  # noqa: F811
    tmp_path: Path,
    name: str,
    case: str,
) -> None:
    messages = CASES[case]
    expected = render_reference(name, messages)
    assert render_app(app_module, tmp_path, name, messages) == expected


def test_folding_is_needed_where_the_reference_rejects_system_messages() -> None:
    """Guards the premise of the folded comparison: the real template refuses a system role."""
    folded = [name for name, model in MODELS.items() if model["system"] == "folded"]
    assert folded
    for name in folded:
        with pytest.raises(ValueError, match="roles"):
            render_reference(name, CASES["system_user"], fold=False)


def test_reference_rendering_is_not_trivial() -> None:
    """The references differ from each other, so matching all of them means something."""
    rendered = {name: render_reference(name, CASES["multi_turn"]) for name in MODELS}
    assert len(set(rendered.values())) == len(rendered)
    assert all("Capital of France?" in text and "And of Italy?" in text for text in rendered.values())
