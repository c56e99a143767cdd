"""Chat templates: a model's Jinja templates rendered with what llama.cpp's Jinja path gives
them (messages, tools, add_generation_prompt, bos_token, eos_token, then extra variables)."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import jinja2

from llamaedge.engine.errors import NoChatTemplate, TemplateError

if TYPE_CHECKING:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

_RESERVED = ("messages", "tools", "bos_token", "eos_token")


def _formatter_class() -> type[Jinja2ChatFormatter]:
    # It brings llama-cpp-python's high-level API (a good part of a second to import): not
    # at startup, see preload().
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter


def preload() -> None:
    """Import the formatter on a thread of its own, meanwhile (e.g. while llama.cpp, which
    lets go of the GIL, loads the weights), so that the first render need not."""
    threading.Thread(target=_formatter_class, name="llamaedge-preload", daemon=True).start()


class ChatTemplates:
    """The templates of one model: the default and, for requests with tools, the
    `tool_use` variant when the GGUF has one."""

    def __init__(self, default: str | None, tool_use: str | None, *, bos_token: str, eos_token: str) -> None:
        self.default = default
        self.tool_use = tool_use
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._formatters: dict[tuple[str, bool], Jinja2ChatFormatter] = {}

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
               tools: list[Any] | None = None, template_kwargs: dict[str, Any] | None = None) -> str:
        """The prompt of `messages`. Tool-call arguments that are JSON text reach the
        template as objects (llama.cpp does the same). NoChatTemplate, TemplateError."""
        template = (self.tool_use if tools else None) or self.default
        if not template:
            raise NoChatTemplate("the model has no embedded chat template")
        extra = dict(template_kwargs or {})
        add_generation_prompt = bool(extra.pop("add_generation_prompt", add_generation_prompt))
        for reserved in _RESERVED:
            extra.pop(reserved, None)
        key = (template, add_generation_prompt)
        formatter = self._formatters.get(key)
        if formatter is None:
            formatter = _formatter_class()(template, self.eos_token, self.bos_token,
                                            add_generation_prompt=add_generation_prompt)
            self._formatters[key] = formatter
        try:
            return formatter(messages=[template_message(m) for m in messages], tools=tools or None, **extra).prompt
        except (jinja2.TemplateError, TypeError, ValueError) as exc:  # ValueError: raise_exception()
            raise TemplateError(f"the chat template failed: {exc}") from exc


def template_message(message: Any) -> Any:
    """A message as a chat template wants it: the arguments of its tool calls as objects
    when they are JSON text (templates iterate over them)."""
    if not isinstance(message, dict) or not isinstance(message.get("tool_calls"), list):
        return message
    calls = []
    for call in message["tool_calls"]:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            try:
                arguments = json.loads(function["arguments"])
            except json.JSONDecodeError:
                arguments = function["arguments"]
            call = {**call, "function": {**function, "arguments": arguments}}
        calls.append(call)
    return {**message, "tool_calls": calls}
