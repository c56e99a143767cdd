"""The engine renders a model's own chat template exactly as llama-cpp-python's
Jinja2ChatFormatter (the Transformers setup) does, for every reference template we keep."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llamaedge.engine.chat_template import ChatTemplates

TEMPLATES = sorted((Path(__file__).parent / "data" / "templates").glob("*.jinja"))
TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "The time in a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
CONVERSATIONS = {
    "one turn": ([{"role": "user", "content": "Hello, ünïcode!"}], None),
    "system and history": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"}], None),
    "tools": ([{"role": "user", "content": "Time in Paris?"}], TOOLS),
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_a_template_renders_as_llama_cpp_pythons_formatter(path: Path, name: str) -> None:
    source = path.read_text()
    messages, tools = CONVERSATIONS[name]
    ours = ChatTemplates(source, None, bos_token="<s>", eos_token="</s>")
    try:
        expected = Jinja2ChatFormatter(source, "</s>", "<s>")(messages=messages, tools=tools).prompt
    except Exception as exc:  # a template that refuses the conversation refuses it on both
        with pytest.raises(Exception):
            ours.render(messages, tools=tools)
        pytest.skip(f"the template refuses it: {exc}")
    assert ours.render(messages, tools=tools) == expected
