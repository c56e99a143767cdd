"""Chat templates: a model's Jinja templates rendered with what llama.cpp's Jinja path gives
them (messages, tools, add_generation_prompt, bos_token, eos_token, then extra variables)."""

from __future__ import annotations

import importlib
import json
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llamaedge.engine.errors import NoChatTemplate, TemplateError

if TYPE_CHECKING:
    import jinja2

_RESERVED = ("messages", "tools", "bos_token", "eos_token")


def preload() -> None:
    """Import jinja2 (25 ms) on a thread of its own while llama.cpp, which lets go of the
    GIL, reads the weights: neither the start of the load nor the first render waits for it."""
    threading.Thread(target=importlib.import_module, args=("jinja2.sandbox",), name="llamaedge-preload",
                     daemon=True).start()


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # As Transformers' chat templates: non-ASCII text as it is, keys in their order.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise ValueError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def compile_template(source: str) -> jinja2.Template:
    """A chat template in the environment Transformers (and llama-cpp-python) render them in:
    sandboxed, blocks trimmed, loop controls, the `generation` tag, their `tojson`."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """Hugging Face's `{% generation %}` tag (it marks the assistant's part for
        training): its body renders as it is."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
        extensions=[GenerationTag, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = _tojson
    environment.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return environment.from_string(source)


class ChatTemplates:
    """The templates of one model: the default and, for requests with tools, the
    `tool_use` variant when the GGUF has one."""

    def __init__(self, default: str | None, tool_use: str | None, *, bos_token: str, eos_token: str) -> None:
        self.default = default
        self.tool_use = tool_use
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._compiled: dict[str, jinja2.Template] = {}

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
               tools: list[Any] | None = None, template_kwargs: dict[str, Any] | None = None) -> str:
        """The prompt of `messages`. Tool-call arguments that are JSON text reach the
        template as objects (llama.cpp does the same). NoChatTemplate, TemplateError."""
        import jinja2

        template = (self.tool_use if tools else None) or self.default
        if not template:
            raise NoChatTemplate("the model has no embedded chat template")
        extra = dict(template_kwargs or {})
        add_generation_prompt = bool(extra.pop("add_generation_prompt", add_generation_prompt))
        for reserved in _RESERVED:
            extra.pop(reserved, None)
        compiled = self._compiled.get(template)
        if compiled is None:
            try:
                compiled = self._compiled[template] = compile_template(template)
            except jinja2.TemplateError as exc:
                raise TemplateError(f"the chat template does not parse: {exc}") from exc
        try:
            return compiled.render(messages=[template_message(m) for m in messages], tools=tools or None,
                                   bos_token=self.bos_token, eos_token=self.eos_token,
                                   add_generation_prompt=add_generation_prompt, **extra)
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
