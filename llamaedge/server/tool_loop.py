"""The server's tool loop (docs/tools.md): a chat completion that names server tools
(`{"type": "llamaedge_tool", "name": "calc"}` in `tools`) is run step by step by the host.
Each step is an ordinary run of the chat app (streamed when the client streams), with the
server tools offered as function tools; when the model calls them, the host runs each call in the tool's sandbox and
puts the results in the conversation as `tool` messages, until the model answers, calls a
client's function, or the step limit (whose last step offers no tools).

Why the host, not the app: the host owns the tools' sandboxes and their policies, and the
app stays a translation of the API (one request, one generation), unchanged. What the loop
needs of the app is what any client sees: the OpenAI response.

What the client gets: the last step's completion, with `usage` summed over the steps and
`llamaedge_tool_calls` (each call, its arguments and result); a stream shows each call and
result as it happens, as chunks with an empty delta and a `llamaedge_tool_call` or
`llamaedge_tool_result` field (the SDKs keep fields they do not know), and the text of every
step as the app streams it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llamaedge.limits import TOOL_LOOP_STEPS_MAX
from llamaedge.metrics import ServerMetrics
from llamaedge.runtime import App, NNSession, ResponseStream, Runtime, WagiRequest
from llamaedge.runtime.wagi import Collected, run_collected

if TYPE_CHECKING:  # tools.py brings jsonschema: a server without tools never imports it
    from llamaedge.tools import Toolbox, ToolResult

log = logging.getLogger("llamaedge.tools")

CHAT_PATH = "/v1/chat/completions"
# The other APIs with tools: they do not run the loop (yet), and say so rather than drop them.
NO_LOOP_PATHS = ("/v1/responses", "/v1/messages")
SERVER_TOOL = "llamaedge_tool"
MAX_STEPS_PARAM = "llamaedge_max_steps"


class LoopRequestError(Exception):
    """A request whose server tools cannot be run: a 400 naming `param`."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class LoopPlan:
    body: dict[str, Any]  # what each step sends the app: server tools as functions, not streamed
    server_tools: frozenset[str]
    stream: bool
    include_usage: bool
    max_steps: int


def _server_tool_request(raw: bytes) -> dict[str, Any] | None:
    """The request's body when it names a server tool in `tools`."""
    if b'"' + SERVER_TOOL.encode() + b'"' not in raw:  # the usual request: not parsed twice
        return None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # the app says what is wrong with it
    if not isinstance(body, dict) or not isinstance(body.get("tools"), list):
        return None
    if not any(isinstance(t, dict) and t.get("type") == SERVER_TOOL for t in body["tools"]):
        return None
    return body


def check_elsewhere(path: str, raw: bytes) -> None:
    """Server tools on an API that does not run the loop: a 400, not tools silently dropped."""
    if path in NO_LOOP_PATHS and _server_tool_request(raw) is not None:
        raise LoopRequestError(f"server tools ({SERVER_TOOL}) run on {CHAT_PATH} only", "tools")


def plan(raw: bytes, toolbox: Toolbox | None) -> LoopPlan | None:
    """The loop a request asks for, or None when it names no server tool (the app answers it
    as ever, client function tools and all)."""
    body = _server_tool_request(raw)
    if body is None:
        return None
    tools: list[Any] = []
    names: set[str] = set()
    for entry in body["tools"]:
        if not (isinstance(entry, dict) and entry.get("type") == SERVER_TOOL):
            tools.append(entry)
            continue
        name = entry.get("name")
        manifest = toolbox.get(name) if toolbox is not None and isinstance(name, str) else None
        if manifest is None:
            offered = ", ".join(m.name for m in toolbox.manifests) if toolbox is not None else "none"
            raise LoopRequestError(f"no server tool named {name!r} (this server's tools: {offered})", "tools")
        names.add(manifest.name)
        tools.append({"type": "function", "function": {"name": manifest.name, "description": manifest.description,
                                                        "parameters": manifest.input_schema}})
    if body.get("n", 1) != 1:
        raise LoopRequestError("server tools run with n = 1 only", "n")
    max_steps = body.pop(MAX_STEPS_PARAM, TOOL_LOOP_STEPS_MAX)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 2 <= max_steps <= TOOL_LOOP_STEPS_MAX:
        raise LoopRequestError(f"{MAX_STEPS_PARAM} must be 2 to {TOOL_LOOP_STEPS_MAX} (the last step answers)",
                               MAX_STEPS_PARAM)
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == SERVER_TOOL:
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    stream = body.pop("stream", False) is True
    options = body.pop("stream_options", None)
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    body["tools"] = tools
    return LoopPlan(body, frozenset(names), stream, include_usage, max_steps)


# ---------------------------------------------------------------------------------------------
# Running it (on the request's worker thread)


def _run_step(runtime: Runtime, app: App, request: WagiRequest, env: Mapping[str, str], session: NNSession,
              body: dict[str, Any], sink: Callable[[bytes], None] | None = None) -> Collected:
    """One run of the app, with `body` as the request's."""
    data = json.dumps(body).encode()
    step_request = WagiRequest(request.method, request.path, request.query,
                               [(k, v) for k, v in request.headers if k.lower() != "content-length"],
                               data, len(data), request.server_name, request.server_port, request.script_name)
    return run_collected(runtime, app, step_request, env, session, sink=sink)


class _Events:
    """A streamed step, read as the app writes it: its text goes on to the client at once,
    its tool calls are gathered, and the whole is rebuilt as the completion a step that is
    not streamed returns."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer
        self.buffer = b""
        self.meta: dict[str, Any] = {}
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: Any = None
        self.error: bytes | None = None  # an error event: the stream's end

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            self._event(event)

    def _event(self, event: bytes) -> None:
        data = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            return
        if "error" in chunk:
            self.error = data
            return
        self.meta.setdefault("id", chunk.get("id"))
        self.meta.setdefault("model", chunk.get("model"))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = {key: delta[key] for key in ("content", "reasoning_content") if delta.get(key)}
            if text:
                self.writer.started_stream(self.meta)
                self.writer.event(text)
                self.content += [text["content"]] if "content" in text else []
                self.reasoning += [text["reasoning_content"]] if "reasoning_content" in text else []
            for call in delta.get("tool_calls") or []:
                entry = self.calls.setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                      "function": {"name": "", "arguments": ""}})
                function = call.get("function") or {}
                entry["id"] = call.get("id") or entry["id"]
                entry["function"]["name"] = function.get("name") or entry["function"]["name"]
                entry["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [self.calls[index] for index in sorted(self.calls)]
        return {"id": self.meta.get("id"), "object": "chat.completion", "model": self.meta.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish}], "usage": self.usage}


class _Writer:
    """The loop's response, written to the client's stream as the app would write it."""

    def __init__(self, out: ResponseStream, plan: LoopPlan) -> None:
        self.out = out
        self.plan = plan
        self.started = False
        self.id = ""
        self.model = ""
        self.created = int(time.time())

    def head(self, status: int = 200) -> None:
        if not self.started:
            self.started = True
            kind = "text/event-stream" if self.plan.stream and status == 200 else "application/json"
            self.out.write(f"Status: {status}\nContent-Type: {kind}\n\n".encode())

    def event(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> None:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        self.out.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

    def started_stream(self, completion: dict[str, Any]) -> None:
        """The stream's head and role chunk, once the first step has answered."""
        if self.plan.stream and not self.started:
            self.id, self.model = completion.get("id", ""), completion.get("model", "")
            self.head()
            self.event({"role": "assistant", "content": ""})

    def call(self, call: dict[str, Any]) -> None:
        if self.plan.stream:
            self.event({}, llamaedge_tool_call=call)

    def result(self, call: dict[str, Any], result: ToolResult) -> None:
        if self.plan.stream:
            self.event({}, llamaedge_tool_result=_result_record(call, result))

    def answer(self, completion: dict[str, Any]) -> None:
        """The last step's: the whole completion; or, streamed (its text is sent already),
        the client's tool calls if any, the finish, the usage and the end."""
        if not self.plan.stream:
            self.head()
            self.out.write(json.dumps(completion, ensure_ascii=False).encode())
            return
        choice = completion["choices"][0]
        calls = (choice.get("message") or {}).get("tool_calls")
        if calls:
            self.event({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
        self.event({}, choice.get("finish_reason"))
        if self.plan.include_usage:
            chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model, "choices": [], "usage": completion.get("usage")}
            self.out.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.out.write(b"data: [DONE]\n\n")

    def failed(self, step: Collected) -> None:
        """A step the app answered with an error: passed on as it is, or as a stream's last event."""
        if not self.started:
            self.started = True
            content_type = next((v for k, v in step.headers if k.lower() == "content-type"), "application/json")
            self.out.write(f"Status: {step.status}\nContent-Type: {content_type}\n\n".encode() + bytes(step.body))
            return
        if self.plan.stream:
            self.out.write(b"data: " + bytes(step.body).strip() + b"\n\ndata: [DONE]\n\n")


def _result_record(call: dict[str, Any], result: ToolResult) -> dict[str, Any]:
    record: dict[str, Any] = {"id": call.get("id"), "name": result.name, "ok": result.ok,
                              "duration_ms": round(result.duration_s * 1000, 3)}
    if result.ok:
        record["output"] = result.output
    else:
        record["error"] = {"message": result.error, "code": result.code}
    return record


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if isinstance(usage, dict):
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value


def run(runtime: Runtime, app: App, request: WagiRequest, env: Mapping[str, str], out: ResponseStream,
        session: NNSession, plan: LoopPlan, toolbox: Toolbox, metrics: ServerMetrics) -> int:
    """Run the loop on this thread, writing the response to `out` as the app writes its own.
    Returns 0 (or the exit code of a step the app failed)."""
    body = dict(plan.body)
    messages = list(body.get("messages") or [])
    writer = _Writer(out, plan)
    usage: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    for step_index in range(plan.max_steps):
        if out.closed:
            return 0  # the client left: no more steps
        last = step_index == plan.max_steps - 1
        if last:
            body["tool_choice"] = "none"  # the last step answers
        body["messages"] = messages
        metrics.tool_loop_steps.inc()
        events = _Events(writer) if plan.stream else None
        if events is not None:
            step = _run_step(runtime, app, request, env, session,
                             {**body, "stream": True, "stream_options": {"include_usage": True}}, events.feed)
        else:
            step = _run_step(runtime, app, request, env, session, body)
        if step.status != 200:
            writer.failed(step)
            return 0
        if events is not None:
            if events.error is not None:  # the app ended its stream with an error: so does the loop
                writer.started_stream(events.meta)
                out.write(b"data: " + events.error + b"\n\ndata: [DONE]\n\n")
                return 0
            completion = events.completion()
        else:
            completion = json.loads(bytes(step.body))
        _add_usage(usage, completion.get("usage"))
        writer.started_stream(completion)
        choice = completion["choices"][0]
        calls = (choice.get("message") or {}).get("tool_calls") or []
        ours = [c for c in calls if c.get("function", {}).get("name") in plan.server_tools]
        if last or choice.get("finish_reason") != "tool_calls" or not calls or len(ours) != len(calls):
            # The answer, or calls for the client to run (the loop ends with them).
            completion["usage"] = {**(completion.get("usage") or {}), **usage}
            completion["llamaedge_tool_calls"] = records
            writer.answer(completion)
            return 0
        messages.append({"role": "assistant", "content": choice["message"].get("content") or "", "tool_calls": calls})
        for call in calls:
            writer.call(call)
            result = toolbox.call(call["function"]["name"], call["function"].get("arguments") or "{}")
            record = _result_record(call, result)
            record["arguments"] = call["function"].get("arguments")
            records.append(record)
            writer.result(call, result)
            messages.append({"role": "tool", "tool_call_id": call.get("id"), "content": result.text()})
        if isinstance(body.get("tool_choice"), dict):
            body["tool_choice"] = "auto"  # a forced tool is forced once, or the loop would never end
    return 0  # unreachable: the last step answers
