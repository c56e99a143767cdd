"""The bodies of the host's own imports (docs/host-interface.md), which the runtime (host.py)
links beside WASI and `wasi_ephemeral_nn`:

    llamaedge.chat_template     the graph's embedded chat template, rendered
    llamaedge.call              a mounted tool, run from inside an app or a tool (docs/tools.md)
    llamaedge_kv.get/set/delete the run's app's namespace of the key-value store (kv.py)
    llamaedge_http.get          a GET to the hosts the run's policy grants (http.py)

Each body reads its arguments from guest memory, finds the run it serves (run.py) and raises
NNError with the code to return; host.py's wrapper turns that into the call's result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from llamaedge.engine import NoChatTemplate, TemplateError
from llamaedge.limits import TOOL_CALL_DEPTH_MAX
from llamaedge.runtime import http, nn
from llamaedge.runtime.breaches import PolicyBreach
from llamaedge.runtime.guest import GuestMemory
from llamaedge.runtime.kv import KeyValueStore, QuotaExceeded
from llamaedge.runtime.nn import Errno, NNError
from llamaedge.runtime.run import current_run

HOST_MODULE = "llamaedge"
KV_MODULE = "llamaedge_kv"
HTTP_MODULE = "llamaedge_http"
# A key names a value within the app's namespace: short text, not data.
KV_KEY_MAX_BYTES = 1024


# ---------------------------------------------------------------------------------------------
# The `llamaedge` import


def _chat_template(mem: GuestMemory, graph: int, messages_ptr: int, messages_len: int,
                   out_ptr: int, out_max_len: int, written_ptr: int) -> None:
    """Render the graph's embedded chat template (see docs/host-interface.md)."""
    session = current_run().session
    model = session.registry.get(graph)
    try:
        request: Any = json.loads(mem.read(messages_ptr, messages_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NNError(Errno.INVALID_ARGUMENT, f"chat_template input is not JSON: {exc}") from exc
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise NNError(Errno.INVALID_ARGUMENT, 'chat_template input must be {"messages": [...]}')
    tools, kwargs = request.get("tools"), request.get("chat_template_kwargs")
    if tools is not None and not isinstance(tools, list):
        raise NNError(Errno.INVALID_ARGUMENT, "chat_template: tools must be an array")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise NNError(Errno.INVALID_ARGUMENT, "chat_template: chat_template_kwargs must be an object")
    try:
        prompt = model.render_chat(request["messages"],
                                   add_generation_prompt=bool(request.get("add_generation_prompt", True)),
                                   tools=tools, template_kwargs=kwargs)
    except NoChatTemplate as exc:
        raise NNError(Errno.NOT_FOUND, str(exc)) from exc
    except TemplateError as exc:
        raise NNError(Errno.RUNTIME_ERROR, str(exc)) from exc
    nn.write_output(mem, prompt.encode(), out_ptr, out_max_len, written_ptr)


# ---------------------------------------------------------------------------------------------
# The `llamaedge_kv` import (docs/host-interface.md): the run's app's namespace only


def _kv_grant() -> tuple[KeyValueStore, str, int]:
    run = current_run()
    app = run.app
    if app is None or run.kv is None or app.kv_max_bytes <= 0:
        name = app.name if app is not None else "this app"
        raise NNError(Errno.UNSUPPORTED_OPERATION, f"{name} is not granted the key-value store (policy key kv)")
    return run.kv(), app.kv_namespace, app.kv_max_bytes


def _kv_key(mem: GuestMemory, ptr: int, length: int) -> str:
    if not 0 < length <= KV_KEY_MAX_BYTES:
        raise NNError(Errno.INVALID_ARGUMENT, f"a key has 1 to {KV_KEY_MAX_BYTES} bytes, not {length}")
    try:
        return mem.read(ptr, length).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NNError(Errno.INVALID_ENCODING, "a key must be UTF-8") from exc


def _kv_get(mem: GuestMemory, key_ptr: int, key_len: int, out_ptr: int, out_max_len: int, written_ptr: int) -> None:
    """The value of a key: NOT_FOUND without one; TOO_LARGE (and its size written) when it
    does not fit the buffer."""
    store, namespace, _ = _kv_grant()
    key = _kv_key(mem, key_ptr, key_len)
    value = store.get(namespace, key)
    if value is None:
        raise NNError(Errno.NOT_FOUND, f"no key {key!r}")
    nn.write_output(mem, value, out_ptr, out_max_len, written_ptr)


def _kv_set(mem: GuestMemory, key_ptr: int, key_len: int, value_ptr: int, value_len: int) -> None:
    """Set a key; TOO_LARGE when the app's keys and values would exceed its quota."""
    store, namespace, quota = _kv_grant()
    key = _kv_key(mem, key_ptr, key_len)
    try:
        store.set(namespace, key, mem.read(value_ptr, value_len), quota)
    except QuotaExceeded as exc:
        raise NNError(Errno.TOO_LARGE, f"{namespace}: {exc}") from exc


def _kv_delete(mem: GuestMemory, key_ptr: int, key_len: int) -> None:
    """Delete a key: NOT_FOUND when there was none."""
    store, namespace, _ = _kv_grant()
    key = _kv_key(mem, key_ptr, key_len)
    if not store.delete(namespace, key):
        raise NNError(Errno.NOT_FOUND, f"no key {key!r}")


# ---------------------------------------------------------------------------------------------
# The `llamaedge_http` import (docs/tools.md): a GET to the hosts the run's policy grants


def _http_get(mem: GuestMemory, url_ptr: int, url_len: int, out_ptr: int, out_max_len: int,
              written_ptr: int, status_ptr: int) -> None:
    """GET a URL: the body into the buffer, its length and the HTTP status written; TOO_LARGE
    when the body was cut at the buffer's size (what fits is written). A host not granted is
    a breach: the run fails."""
    run = current_run()
    policy = run.guard.policy if run.guard is not None else None
    name = run.app.name if run.app is not None else "the app"
    mem.check(out_ptr, out_max_len)
    mem.check(written_ptr, 4)
    mem.check(status_ptr, 4)
    try:
        url = mem.read(url_ptr, url_len).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NNError(Errno.INVALID_ENCODING, "the URL must be UTF-8") from exc
    try:
        target = http.check_url(url, policy, name)
    except PolicyBreach as breach:
        if run.guard is not None:
            run.guard.fail(breach)
        raise NNError(Errno.UNSUPPORTED_OPERATION, str(breach)) from breach
    timeout_s = max(0.1, run.guard.seconds_left()) if run.guard is not None else 30.0
    status, body, cut = http.get(target, timeout_s=timeout_s, max_bytes=out_max_len & 0xFFFFFFFF)
    mem.write(out_ptr, body)
    mem.write_u32(written_ptr, len(body))
    mem.write_u32(status_ptr, status)
    if cut:
        raise NNError(Errno.TOO_LARGE, f"the body of {url[:100]} is longer than the buffer of {len(body)} bytes")


# ---------------------------------------------------------------------------------------------
# `llamaedge.call`: a mounted tool, called from an app or a tool (docs/tools.md)


def _call(mem: GuestMemory, name_ptr: int, name_len: int, input_ptr: int, input_len: int, out_ptr: int,
          out_max_len: int, written_ptr: int) -> None:
    """Run the tool `name` with the JSON input; its result's JSON into the buffer. 0: it
    succeeded; RUNTIME_ERROR: it failed (or was refused), and `{"error", "code"}` is written;
    NOT_FOUND: no such tool; TOO_LARGE: the buffer is too small (its size needed written: the
    call ran, and asking again runs it again)."""
    run = current_run()
    try:
        name = mem.read(name_ptr, name_len).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NNError(Errno.INVALID_ENCODING, "a tool name must be UTF-8") from exc
    arguments = mem.read(input_ptr, input_len)
    mem.check(out_ptr, out_max_len)
    mem.check(written_ptr, 4)
    if run.tools is None:
        raise NNError(Errno.NOT_FOUND, f"no tool {name!r}: this server mounts no tools")
    chain = " -> ".join((*run.chain, name))
    outcome: tuple[bool, bytes] | None
    if name in run.chain:
        outcome = (False, json.dumps({"error": f"a cycle of calls: {chain}", "code": "call_cycle"}).encode())
    elif len(run.chain) >= TOOL_CALL_DEPTH_MAX:
        outcome = (False, json.dumps({"error": f"calls nest at most {TOOL_CALL_DEPTH_MAX} deep: {chain}",
                                      "code": "call_too_deep"}).encode())
    else:
        policy = run.guard.policy if run.guard is not None else None
        seconds_left = run.guard.seconds_left() if run.guard is not None else None
        outcome = run.tools.call_nested(name, arguments, policy, seconds_left, run.chain)
    if outcome is None:
        raise NNError(Errno.NOT_FOUND, f"no tool {name!r}")
    ok, text = outcome
    nn.write_output(mem, text, out_ptr, out_max_len, written_ptr)
    if not ok:
        raise NNError(Errno.RUNTIME_ERROR, f"the call of {name} failed: {text[:200].decode(errors='replace')}")


# What the runtime links: (import module, name, parameter count, body); every parameter and
# the result are i32.
FUNCTIONS: tuple[tuple[str, str, int, Callable[..., None]], ...] = (
    (HOST_MODULE, "chat_template", 6, _chat_template),
    (HOST_MODULE, "call", 7, _call),
    (KV_MODULE, "get", 5, _kv_get),
    (KV_MODULE, "set", 4, _kv_set),
    (KV_MODULE, "delete", 2, _kv_delete),
    (HTTP_MODULE, "get", 6, _http_get),
)
