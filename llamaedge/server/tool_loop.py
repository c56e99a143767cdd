"""The server's tool loop (docs/tools.md): a chat completion, Responses or Messages request that
names server tools (`{"type": "llamaedge_tool", "name": "calc"}` in `tools`) is run step by
step by the host. Each step is an ordinary run of the chat app on the request's own route, with
the server tools offered as that API's function tools; when the model calls them, the host runs
each call in the tool's sandbox and puts the call and its result in the conversation (as that
API's client would), until the model answers, calls a client's function, or the step limit
(whose last step offers no tools).

Why the host, not the app: the host owns the tools' sandboxes and their policies, and the
app stays a translation of the API (one request, one generation), unchanged. What the loop
needs of the app is what any client sees: the API's response.

One loop (`run`), and an adapter per API (`LoopApi`): how a tool is offered and forced, where
the calls are in a step's response, how the conversation grows, and the writer that gives the
client the loop's response in the API's own shape. Chat completions' adapter is here; the
Responses and Messages adapters are in loop_apis.py.

What a chat client gets: the last step's completion, with `usage` summed over the steps and
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
    from llamaedge.tools import ToolManifest, Toolbox, ToolResult

log = logging.getLogger("llamaedge.tools")

CHAT_PATH = "/v1/chat/completions"
SERVER_TOOL = "llamaedge_tool"
MAX_STEPS_PARAM = "llamaedge_max_steps"

# Runs one step: the body the app gets, and where its streamed response goes (None: collected).
StepRunner = Callable[[dict[str, Any], Callable[[bytes], None] | None], Collected]


class LoopRequestError(Exception):
    """A request whose server tools cannot be run: a 400 naming `param`."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Call:
    """A call of a server tool, as a step's response wrote it. `raw`: the API's own entry."""

    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    raw: dict[str, Any]


@dataclass
class LoopPlan:
    body: dict[str, Any]  # what each step sends the app: server tools as functions, not streamed
    server_tools: frozenset[str]
    stream: bool
    include_usage: bool
    max_steps: int
    api: LoopApi


class LoopWriter:
    """The loop's response, written to the client's stream as the app would write it. The
    base writes what every API shares: the head, a step answered whole, a step's failure."""

    def __init__(self, out: ResponseStream, plan: LoopPlan) -> None:
        self.out = out
        self.plan = plan
        self.started = False

    def head(self, status: int = 200) -> None:
        if not self.started:
            self.started = True
            kind = "text/event-stream" if self.plan.stream and status == 200 else "application/json"
            self.out.write(f"Status: {status}\nContent-Type: {kind}\n\n".encode())

    def run_step(self, run: StepRunner, body: dict[str, Any]) -> dict[str, Any] | None:
        """One step, answered whole; None when the app answered an error (passed on)."""
        step = run(body, None)
        if step.status != 200:
            self.failed(step)
            return None
        return json.loads(bytes(step.body))

    def started_stream(self, step: dict[str, Any]) -> None:
        """Once the first step has answered: a stream's head and opening events."""

    def step_items(self, step: dict[str, Any]) -> None:
        """What a step that called tools said besides its calls (its text), before them."""

    def call(self, call: Call) -> None:
        """A call, as it starts (streamed)."""

    def result(self, call: Call, result: ToolResult) -> None:
        """A call's result, as it ends (streamed)."""

    def answer(self, final: dict[str, Any], last: dict[str, Any]) -> None:
        """The loop's response (`final`); streamed, what of the last step (`last`) is not sent yet."""
        raise NotImplementedError

    def stream_error(self, body: bytes) -> None:
        """A stream's last event, for a step the app failed after the stream began."""
        raise NotImplementedError

    def failed(self, step: Collected) -> None:
        """A step the app answered with an error: passed on as it is, or as a stream's last event."""
        if not self.started:
            self.started = True
            content_type = next((v for k, v in step.headers if k.lower() == "content-type"), "application/json")
            self.out.write(f"Status: {step.status}\nContent-Type: {content_type}\n\n".encode() + bytes(step.body))
            return
        if self.plan.stream:
            self.stream_error(bytes(step.body).strip())


class LoopApi:
    """What the loop needs to know of one API (chat completions, Responses, Messages)."""

    path: str
    conversation_key: str  # the body's list the calls and results are added to
    usage_keys: tuple[str, ...]  # the token counts summed over the steps
    auto_choice: Any  # tool_choice after a forced first step
    none_choice: Any  # tool_choice of the last step

    def offer(self, manifest: ToolManifest) -> dict[str, Any]:
        """A server tool as this API's function tool."""
        raise NotImplementedError

    def forced(self, name: Any) -> Any:
        """tool_choice forcing the function `name`."""
        raise NotImplementedError

    def is_forced(self, choice: Any) -> bool:
        raise NotImplementedError

    def prepare(self, body: dict[str, Any]) -> None:
        """The API's own checks and translations of the request, before the first step."""

    def calls(self, step: dict[str, Any]) -> list[Call]:
        raise NotImplementedError

    def wants_tools(self, step: dict[str, Any]) -> bool:
        """The step ended to have its calls run (not for length, or with an answer)."""
        raise NotImplementedError

    def extend(self, conversation: list[Any], step: dict[str, Any], calls: list[Call],
               results: list[ToolResult]) -> None:
        """The step's turn and the results, added to the conversation as a client would."""
        raise NotImplementedError

    def shown(self, step: dict[str, Any], calls: list[Call], results: list[ToolResult]) -> list[Any]:
        """What the client's response keeps of a step that called server tools."""
        return []

    def final(self, first: dict[str, Any], last: dict[str, Any], shown: list[Any], usage: dict[str, int],
              records: list[dict[str, Any]]) -> dict[str, Any]:
        """The loop's response: the last step's, with what was `shown` of the steps before it
        (`first`: the first step's, whose id a stream began with)."""
        raise NotImplementedError

    def writer(self, out: ResponseStream, plan: LoopPlan) -> LoopWriter:
        raise NotImplementedError


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


def plan(raw: bytes, toolbox: Toolbox | None, api: LoopApi | None = None) -> LoopPlan | None:
    """The loop a request asks for, or None when it names no server tool (the app answers it
    as ever, client function tools and all). `api`: the request's (default chat completions)."""
    api = api or CHAT
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
        tools.append(api.offer(manifest))
    max_steps = body.pop(MAX_STEPS_PARAM, TOOL_LOOP_STEPS_MAX)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 2 <= max_steps <= TOOL_LOOP_STEPS_MAX:
        raise LoopRequestError(f"{MAX_STEPS_PARAM} must be 2 to {TOOL_LOOP_STEPS_MAX} (the last step answers)",
                               MAX_STEPS_PARAM)
    api.prepare(body)
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == SERVER_TOOL:
        body["tool_choice"] = api.forced(choice.get("name"))
    stream = body.pop("stream", False) is True
    options = body.pop("stream_options", None)
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    body["tools"] = tools
    return LoopPlan(body, frozenset(names), stream, include_usage, max_steps, api)


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


def result_record(call: Call, result: ToolResult) -> dict[str, Any]:
    """A call's result as the client reads it (`llamaedge_tool_calls`, a chat stream's chunk)."""
    record: dict[str, Any] = {"id": call.id, "name": result.name, "ok": result.ok,
                              "duration_ms": round(result.duration_s * 1000, 3)}
    if result.ok:
        record["output"] = result.output
    else:
        record["error"] = {"message": result.error, "code": result.code}
    return record


def sum_usage(total: dict[str, int], usage: Any, keys: tuple[str, ...]) -> None:
    if isinstance(usage, dict):
        for key in keys:
            value = usage.get(key)
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value


def run(runtime: Runtime, app: App, request: WagiRequest, env: Mapping[str, str], out: ResponseStream,
        session: NNSession, plan: LoopPlan, toolbox: Toolbox, metrics: ServerMetrics) -> int:
    """Run the loop on this thread, writing the response to `out` as the app writes its own.
    Returns 0 (a step the app failed is passed on to the client as the app answered it)."""
    api = plan.api
    body = dict(plan.body)
    conversation = list(body.get(api.conversation_key) or [])
    writer = api.writer(out, plan)
    usage: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    shown: list[Any] = []
    first: dict[str, Any] | None = None

    def run_one(step_body: dict[str, Any], sink: Callable[[bytes], None] | None) -> Collected:
        return _run_step(runtime, app, request, env, session, step_body, sink)

    for step_index in range(plan.max_steps):
        if out.closed:
            return 0  # the client left: no more steps
        last = step_index == plan.max_steps - 1
        if last:
            body["tool_choice"] = api.none_choice  # the last step answers
        body[api.conversation_key] = conversation
        metrics.tool_loop_steps.inc()
        step = writer.run_step(run_one, body)
        if step is None:
            return 0
        first = first or step
        sum_usage(usage, step.get("usage"), api.usage_keys)
        writer.started_stream(step)
        calls = api.calls(step)
        ours = [c for c in calls if c.name in plan.server_tools]
        if last or not api.wants_tools(step) or not calls or len(ours) != len(calls):
            # The answer, or calls for the client to run (the loop ends with them).
            writer.answer(api.final(first, step, shown, usage, records), step)
            return 0
        writer.step_items(step)
        results: list[ToolResult] = []
        for call in calls:
            writer.call(call)
            result = toolbox.call(call.name, call.arguments or "{}")
            records.append({**result_record(call, result), "arguments": call.arguments})
            writer.result(call, result)
            results.append(result)
        api.extend(conversation, step, calls, results)
        shown += api.shown(step, calls, results)
        if api.is_forced(body.get("tool_choice")):
            body["tool_choice"] = api.auto_choice  # a forced tool is forced once, or the loop would never end
    return 0  # unreachable: the last step answers


# ---------------------------------------------------------------------------------------------
# Chat completions


class _Events:
    """A streamed step, read as the app writes it: its text goes on to the client at once,
    its tool calls are gathered, and the whole is rebuilt as the completion a step that is
    not streamed returns."""

    def __init__(self, writer: _ChatWriter) -> None:
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


class _ChatWriter(LoopWriter):
    """Chat completions: each step streamed by the app, its text passed on token by token."""

    def __init__(self, out: ResponseStream, plan: LoopPlan) -> None:
        super().__init__(out, plan)
        self.id = ""
        self.model = ""
        self.created = int(time.time())

    def run_step(self, run: StepRunner, body: dict[str, Any]) -> dict[str, Any] | None:
        if not self.plan.stream:
            return super().run_step(run, body)
        events = _Events(self)
        step = run({**body, "stream": True, "stream_options": {"include_usage": True}}, events.feed)
        if step.status != 200:
            self.failed(step)
            return None
        if events.error is not None:  # the app ended its stream with an error: so does the loop
            self.started_stream(events.meta)
            self.stream_error(events.error)
            return None
        return events.completion()

    def event(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> None:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        self.out.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

    def started_stream(self, step: dict[str, Any]) -> None:
        if self.plan.stream and not self.started:
            self.id, self.model = step.get("id", ""), step.get("model", "")
            self.head()
            self.event({"role": "assistant", "content": ""})

    def call(self, call: Call) -> None:
        if self.plan.stream:
            self.event({}, llamaedge_tool_call=call.raw)

    def result(self, call: Call, result: ToolResult) -> None:
        if self.plan.stream:
            self.event({}, llamaedge_tool_result=result_record(call, result))

    def answer(self, final: dict[str, Any], last: dict[str, Any]) -> None:
        """The whole completion; or, streamed (its text is sent already), the client's tool
        calls if any, the finish, the usage and the end."""
        if not self.plan.stream:
            self.head()
            self.out.write(json.dumps(final, ensure_ascii=False).encode())
            return
        choice = final["choices"][0]
        calls = (choice.get("message") or {}).get("tool_calls")
        if calls:
            self.event({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
        self.event({}, choice.get("finish_reason"))
        if self.plan.include_usage:
            chunk: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model, "choices": [], "usage": final.get("usage")}
            self.out.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.out.write(b"data: [DONE]\n\n")

    def stream_error(self, body: bytes) -> None:
        self.out.write(b"data: " + body + b"\n\ndata: [DONE]\n\n")


class ChatApi(LoopApi):
    path = CHAT_PATH
    conversation_key = "messages"
    usage_keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    auto_choice = "auto"
    none_choice = "none"

    def offer(self, manifest: ToolManifest) -> dict[str, Any]:
        return {"type": "function", "function": {"name": manifest.name, "description": manifest.description,
                                                 "parameters": manifest.input_schema}}

    def forced(self, name: Any) -> Any:
        return {"type": "function", "function": {"name": name}}

    def is_forced(self, choice: Any) -> bool:
        return isinstance(choice, dict)

    def prepare(self, body: dict[str, Any]) -> None:
        if body.get("n", 1) != 1:
            raise LoopRequestError("server tools run with n = 1 only", "n")

    def calls(self, step: dict[str, Any]) -> list[Call]:
        raw = (step["choices"][0].get("message") or {}).get("tool_calls") or []
        return [Call(c.get("id"), c.get("function", {}).get("name"), c.get("function", {}).get("arguments") or "",
                     c) for c in raw]

    def wants_tools(self, step: dict[str, Any]) -> bool:
        return bool(step["choices"][0].get("finish_reason") == "tool_calls")

    def extend(self, conversation: list[Any], step: dict[str, Any], calls: list[Call],
               results: list[ToolResult]) -> None:
        message = step["choices"][0]["message"]
        conversation.append({"role": "assistant", "content": message.get("content") or "",
                             "tool_calls": [c.raw for c in calls]})
        conversation += [{"role": "tool", "tool_call_id": c.id, "content": r.text()} for c, r in zip(calls, results)]

    def final(self, first: dict[str, Any], last: dict[str, Any], shown: list[Any], usage: dict[str, int],
              records: list[dict[str, Any]]) -> dict[str, Any]:
        return {**last, "usage": {**(last.get("usage") or {}), **usage}, "llamaedge_tool_calls": records}

    def writer(self, out: ResponseStream, plan: LoopPlan) -> LoopWriter:
        return _ChatWriter(out, plan)


CHAT = ChatApi()
