"""What `llamaedge.call` reaches in a server (docs/tools.md): the mounted tools by name
(tools.py's Toolbox), and the mounted apps by route (`/review`).

An app is called as a WAGI POST of the JSON input to its route, on the worker thread of the
call, with the start models (a library member is not held for it); its answer must be a 2xx
with a JSON body. Its policy is capped by its caller's, as a tool's is (policy.capped)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from llamaedge.runtime import AppPolicy, AppTrap, NNSession, PolicyBreach, WagiRequest
from llamaedge.runtime.policy import capped
from llamaedge.runtime.wagi import run_collected
from llamaedge.server.state import ServerState


def _error(message: str, code: str) -> tuple[bool, bytes]:
    return False, json.dumps({"error": message, "code": code}).encode()


class ServerCallees:
    """The runtime's `tool_host` in a server with tools or mounted apps. An app whose
    manifest declares an `input-schema` is called only with input that matches it."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.validators: dict[str, Any] = {}  # by route, of the apps that declare a schema
        schemas = {m.route: m.input_schema for m in state.config.mounts if m.input_schema is not None}
        if schemas:
            from llamaedge.tools import input_validator  # jsonschema, only when an app declares a schema

            self.validators = {route: input_validator(schema) for route, schema in schemas.items()}

    def call_nested(self, name: str, arguments: bytes, caller: AppPolicy | None, seconds_left: float | None,
                    chain: tuple[str, ...]) -> tuple[bool, bytes] | None:
        if not name.startswith("/"):
            toolbox = self.state.toolbox
            return toolbox.call_nested(name, arguments, caller, seconds_left, chain) if toolbox is not None else None
        app = self.state.mounted.get(name)
        runtime = self.state.runtime
        if app is None or app.policy is None or runtime is None:
            return None
        validator = self.validators.get(name)
        if validator is not None:
            from llamaedge.tools import checked_arguments

            _, invalid = checked_arguments(validator, arguments)
            if invalid is not None:
                return _error(invalid, "invalid_arguments")  # the app does not run
        policy = app.policy
        try:
            if caller is not None:
                policy = capped(app.policy, caller, seconds_left if seconds_left is not None else math.inf, name)
            request = WagiRequest("POST", "", headers=[("Content-Type", "application/json")], body=arguments,
                                  content_length=len(arguments), script_name=name)
            graphs = self.state.graphs()
            try:
                answer = run_collected(runtime, dataclasses.replace(app, policy=policy), request, self.state.app_env(),
                                       NNSession(graphs), chain=(*chain, name))
            finally:
                graphs.close()
        except PolicyBreach as breach:
            return _error(str(breach), breach.code)
        except AppTrap as trap:
            return _error(str(trap), "app_trapped")
        try:
            value = json.loads(bytes(answer.body))
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if 200 <= answer.status < 300 and value is not None:
            return True, json.dumps(value).encode()
        message = value.get("error") if isinstance(value, dict) else None
        if isinstance(message, dict):  # an OpenAI-style error object
            message = message.get("message")
        return _error(message if isinstance(message, str) else f"{name} answered {answer.status}", "app_failed")
