"""The tool loop's adapters for the Responses (`/v1/responses`) and Messages (`/v1/messages`)
APIs (tool_loop.py runs the loop; docs/tools.md shows the shapes).

A call the server ran is shown in each API's own shape for a tool its server runs, so that an
agent loop on the client never takes it for a call of its own to run, and its SDK parses it:

- Responses: an `mcp_call` output item (`server_label` "llamaedge"), its `output` the tool's
  JSON, or its `error` an `mcp_tool_execution_error`; streamed, `response.mcp_call.*` events;
- Messages: a `server_tool_use` block, then a `tool_result` block answering it.

Sent back in a later request that runs the loop, they are turned into what the app takes
(a `function_call` and its `function_call_output`; a `tool_use` block and a user turn with its
`tool_result`). Streamed, the steps of these APIs are run whole: each call and result is sent
as it happens, and each step's text in one delta when the step ends.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llamaedge.runtime import ResponseStream
from llamaedge.server.tool_loop import CHAT, Call, LoopApi, LoopPlan, LoopWriter

if TYPE_CHECKING:
    from llamaedge.tools import ToolManifest, ToolResult

RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
SERVER_LABEL = "llamaedge"  # an mcp_call item's server, as the tools are also served at /mcp


class _EventWriter(LoopWriter):
    """A stream of named server-sent events (`event:` and `data:`), as both APIs send."""

    def send(self, name: str, data: dict[str, Any]) -> None:
        self.out.write(f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode())

    def whole(self, final: dict[str, Any]) -> None:
        self.head()
        self.out.write(json.dumps(final, ensure_ascii=False).encode())


class _WholeStepApi(LoopApi):
    """What the two APIs share: a step's output is a list (`output_key`) of items or blocks,
    among them the calls (`call_type`); the loop's response is the last step's with the
    earlier steps' shown before its own, under the first step's id."""

    output_key: str
    call_type: str

    def not_calls(self, step: dict[str, Any]) -> list[dict[str, Any]]:
        return [item for item in step.get(self.output_key) or [] if item.get("type") != self.call_type]

    def final(self, first: dict[str, Any], last: dict[str, Any], shown: list[Any], usage: dict[str, int],
              records: list[dict[str, Any]]) -> dict[str, Any]:
        return {**last, "id": first.get("id"), self.output_key: shown + (last.get(self.output_key) or []),
                "usage": {**(last.get("usage") or {}), **usage}, "llamaedge_tool_calls": records}


# ---------------------------------------------------------------------------------------------
# Responses


def _mcp_item(call: Call, result: ToolResult | None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": "mcp_" + call.id.removeprefix("call_"), "type": "mcp_call",
                            "server_label": SERVER_LABEL, "name": call.name, "arguments": call.arguments,
                            "output": None, "error": None, "status": "in_progress"}
    if result is not None and result.ok:
        item |= {"output": result.text(), "status": "completed"}
    elif result is not None:
        item |= {"error": {"type": "mcp_tool_execution_error", "content": json.loads(result.text())},
                 "status": "failed"}
    return item


class _ResponsesWriter(_EventWriter):
    def __init__(self, out: ResponseStream, plan: LoopPlan) -> None:
        super().__init__(out, plan)
        self.sequence = 0
        self.index = 0  # the next output item's

    def send(self, name: str, data: dict[str, Any]) -> None:
        super().send(name, {"type": name, **data, "sequence_number": self.sequence})
        self.sequence += 1

    def started_stream(self, step: dict[str, Any]) -> None:
        if self.plan.stream and not self.started:
            self.head()
            opening = {**step, "status": "in_progress", "output": [], "usage": None}
            self.send("response.created", {"response": opening})
            self.send("response.in_progress", {"response": opening})

    def _items(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            at = {"output_index": self.index}
            if item.get("type") == "message":
                self.send("response.output_item.added", {**at, "item": {**item, "content": [],
                                                                          "status": "in_progress"}})
                for part_index, part in enumerate(item.get("content") or []):
                    where = {"item_id": item.get("id"), **at, "content_index": part_index}
                    text = part.get("text") or ""
                    self.send("response.content_part.added", {**where, "part": {**part, "text": ""}})
                    if part.get("type") == "output_text":
                        self.send("response.output_text.delta", {**where, "delta": text, "logprobs": []})
                        self.send("response.output_text.done", {**where, "text": text, "logprobs": []})
                    self.send("response.content_part.done", {**where, "part": part})
            else:
                self.send("response.output_item.added", {**at, "item": item})
            self.send("response.output_item.done", {**at, "item": item})
            self.index += 1

    def step_items(self, step: dict[str, Any]) -> None:
        if self.plan.stream:
            self._items(RESPONSES.not_calls(step))

    def call(self, call: Call) -> None:
        if self.plan.stream:
            item = _mcp_item(call, None)
            at = {"output_index": self.index, "item_id": item["id"]}
            self.send("response.output_item.added", {"output_index": self.index, "item": item})
            self.send("response.mcp_call_arguments.done", {**at, "arguments": call.arguments})
            self.send("response.mcp_call.in_progress", at)

    def result(self, call: Call, result: ToolResult) -> None:
        if self.plan.stream:
            item = _mcp_item(call, result)
            self.send("response.mcp_call.completed" if result.ok else "response.mcp_call.failed",
                      {"output_index": self.index, "item_id": item["id"]})
            self.send("response.output_item.done", {"output_index": self.index, "item": item})
            self.index += 1

    def answer(self, final: dict[str, Any], last: dict[str, Any]) -> None:
        if not self.plan.stream:
            return self.whole(final)
        self._items(last.get("output") or [])
        self.send("response.completed", {"response": final})

    def stream_error(self, body: bytes) -> None:
        try:
            error = json.loads(body).get("error") or {}
        except (json.JSONDecodeError, AttributeError):
            error = {}
        self.send("error", {"code": error.get("code"), "message": error.get("message") or body.decode(errors="replace"),
                            "param": error.get("param")})


class ResponsesApi(_WholeStepApi):
    path = RESPONSES_PATH
    conversation_key = "input"
    output_key = "output"
    call_type = "function_call"
    usage_keys = ("input_tokens", "output_tokens", "total_tokens")
    auto_choice = "auto"
    none_choice = "none"

    def offer(self, manifest: ToolManifest) -> dict[str, Any]:
        return {"type": "function", "name": manifest.name, "description": manifest.description,
                "parameters": manifest.input_schema}

    def forced(self, name: Any) -> Any:
        return {"type": "function", "name": name}

    def is_forced(self, choice: Any) -> bool:
        return isinstance(choice, dict) or choice == "required"

    def prepare(self, body: dict[str, Any]) -> None:
        """`input` as a list of items; our mcp_call items, sent back, as the call and its output.
        Not stored: the client's response is made of several steps, each of them a response of
        the app (a stream's SDK holds it to the one id its stream began with), and none of
        them the whole; a later request sends the output back as input instead."""
        body["store"] = False
        items = body.get("input")
        if isinstance(items, str):
            body["input"] = [{"role": "user", "content": items}]
        elif isinstance(items, list):
            body["input"] = [replayed for item in items for replayed in _replayed_item(item)]

    def calls(self, step: dict[str, Any]) -> list[Call]:
        return [Call(item.get("call_id") or "", item.get("name") or "", item.get("arguments") or "", item)
                for item in step.get("output") or [] if item.get("type") == "function_call"]

    def wants_tools(self, step: dict[str, Any]) -> bool:
        return step.get("status") == "completed"  # a step cut short (`incomplete`) is the answer

    def extend(self, conversation: list[Any], step: dict[str, Any], calls: list[Call],
               results: list[ToolResult]) -> None:
        for item in self.not_calls(step):
            text = "".join(p.get("text") or "" for p in item.get("content") or [] if p.get("type") == "output_text")
            if item.get("type") == "message" and text:
                conversation.append({"role": "assistant", "content": text})
        for call, result in zip(calls, results):
            conversation += [{"type": "function_call", "call_id": call.id, "name": call.name,
                              "arguments": call.arguments},
                             {"type": "function_call_output", "call_id": call.id, "output": result.text()}]

    def shown(self, step: dict[str, Any], calls: list[Call], results: list[ToolResult]) -> list[Any]:
        return self.not_calls(step) + [_mcp_item(c, r) for c, r in zip(calls, results)]

    def writer(self, out: ResponseStream, plan: LoopPlan) -> LoopWriter:
        return _ResponsesWriter(out, plan)


def _replayed_item(item: Any) -> list[Any]:
    if not (isinstance(item, dict) and item.get("type") == "mcp_call" and item.get("server_label") == SERVER_LABEL):
        return [item]
    call_id = "call_" + str(item.get("id") or "").removeprefix("mcp_")
    error = item.get("error")
    output = item.get("output") if item.get("output") is not None else json.dumps(
        error.get("content") if isinstance(error, dict) else error)
    return [{"type": "function_call", "call_id": call_id, "name": item.get("name"), "arguments": item.get("arguments")},
            {"type": "function_call_output", "call_id": call_id, "output": output}]


# ---------------------------------------------------------------------------------------------
# Messages


def _result_block(call: Call, result: ToolResult) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call.id, "content": result.text(), "is_error": not result.ok}


def _server_use_block(call: Call) -> dict[str, Any]:
    return {"type": "server_tool_use", "id": call.id, "name": call.name, "input": call.raw.get("input") or {}}


class _MessagesWriter(_EventWriter):
    def __init__(self, out: ResponseStream, plan: LoopPlan) -> None:
        super().__init__(out, plan)
        self.index = 0  # the next content block's

    def send(self, name: str, data: dict[str, Any]) -> None:
        super().send(name, {"type": name, **data})

    def started_stream(self, step: dict[str, Any]) -> None:
        if self.plan.stream and not self.started:
            self.head()
            self.send("message_start", {"message": {**step, "content": [], "stop_reason": None,
                                                    "stop_sequence": None}})

    def _block(self, block: dict[str, Any]) -> None:
        """A block as the app streams one: opened empty, its content as deltas, closed."""
        at = {"index": self.index}
        kind = block.get("type")
        if kind == "text":
            self.send("content_block_start", {**at, "content_block": {**block, "text": ""}})
            self.send("content_block_delta", {**at, "delta": {"type": "text_delta", "text": block.get("text") or ""}})
        elif kind == "thinking":
            self.send("content_block_start", {**at, "content_block": {**block, "thinking": "", "signature": ""}})
            self.send("content_block_delta", {**at, "delta": {"type": "thinking_delta",
                                                              "thinking": block.get("thinking") or ""}})
            if block.get("signature"):
                self.send("content_block_delta", {**at, "delta": {"type": "signature_delta",
                                                                  "signature": block["signature"]}})
        elif kind in ("tool_use", "server_tool_use"):
            self.send("content_block_start", {**at, "content_block": {**block, "input": {}}})
            self.send("content_block_delta", {**at, "delta": {"type": "input_json_delta",
                                                              "partial_json": json.dumps(block.get("input") or {})}})
        else:
            self.send("content_block_start", {**at, "content_block": block})
        self.send("content_block_stop", at)
        self.index += 1

    def step_items(self, step: dict[str, Any]) -> None:
        if self.plan.stream:
            for block in MESSAGES.not_calls(step):
                self._block(block)

    def call(self, call: Call) -> None:
        if self.plan.stream:
            self._block(_server_use_block(call))

    def result(self, call: Call, result: ToolResult) -> None:
        if self.plan.stream:
            self._block(_result_block(call, result))

    def answer(self, final: dict[str, Any], last: dict[str, Any]) -> None:
        if not self.plan.stream:
            return self.whole(final)
        for block in last.get("content") or []:
            self._block(block)
        self.send("message_delta", {"delta": {"stop_reason": final.get("stop_reason"),
                                              "stop_sequence": final.get("stop_sequence")},
                                    "usage": final.get("usage")})
        self.send("message_stop", {})

    def stream_error(self, body: bytes) -> None:
        self.out.write(b"event: error\ndata: " + body + b"\n\n")


class MessagesApi(_WholeStepApi):
    path = MESSAGES_PATH
    conversation_key = "messages"
    output_key = "content"
    call_type = "tool_use"
    usage_keys = ("input_tokens", "output_tokens")
    auto_choice = {"type": "auto"}
    none_choice = {"type": "none"}

    def offer(self, manifest: ToolManifest) -> dict[str, Any]:
        return {"name": manifest.name, "description": manifest.description, "input_schema": manifest.input_schema}

    def forced(self, name: Any) -> Any:
        return {"type": "tool", "name": name}

    def is_forced(self, choice: Any) -> bool:
        return isinstance(choice, dict) and choice.get("type") in ("tool", "any")

    def prepare(self, body: dict[str, Any]) -> None:
        """Our server_tool_use and tool_result blocks, sent back in an assistant turn, as the
        app takes a call and its result: a tool_use block, and the result in a user turn."""
        messages = body.get("messages")
        if isinstance(messages, list):
            body["messages"] = [turn for message in messages for turn in _replayed_turns(message)]

    def calls(self, step: dict[str, Any]) -> list[Call]:
        return [Call(block.get("id") or "", block.get("name") or "", json.dumps(block.get("input") or {}), block)
                for block in step.get("content") or [] if block.get("type") == "tool_use"]

    def wants_tools(self, step: dict[str, Any]) -> bool:
        return step.get("stop_reason") == "tool_use"

    def extend(self, conversation: list[Any], step: dict[str, Any], calls: list[Call],
               results: list[ToolResult]) -> None:
        conversation += [{"role": "assistant", "content": step.get("content") or []},
                         {"role": "user", "content": [_result_block(c, r) for c, r in zip(calls, results)]}]

    def shown(self, step: dict[str, Any], calls: list[Call], results: list[ToolResult]) -> list[Any]:
        blocks = self.not_calls(step)
        for call, result in zip(calls, results):
            blocks += [_server_use_block(call), _result_block(call, result)]
        return blocks

    def writer(self, out: ResponseStream, plan: LoopPlan) -> LoopWriter:
        return _MessagesWriter(out, plan)


def _replayed_turns(message: Any) -> list[Any]:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or message.get("role") != "assistant" or not any(
            isinstance(b, dict) and b.get("type") == "server_tool_use" for b in content):
        return [message]
    turns: list[dict[str, Any]] = []
    for block in content:
        is_result = isinstance(block, dict) and block.get("type") == "tool_result"
        if isinstance(block, dict) and block.get("type") == "server_tool_use":
            block = {**block, "type": "tool_use"}
        role = "user" if is_result else "assistant"
        if not turns or turns[-1]["role"] != role:
            turns.append({"role": role, "content": []})
        turns[-1]["content"].append(block)
    return turns


RESPONSES = ResponsesApi()
MESSAGES = MessagesApi()
APIS: dict[str, LoopApi] = {api.path: api for api in (CHAT, RESPONSES, MESSAGES)}
