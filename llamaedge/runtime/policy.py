"""What a mounted app may do: its policy, read from flags or a manifest, and how a run
enforces it.

    AppPolicy       memory, wall time and generated tokens per request; the graph names it
                    may load; the environment variables, directories, network hosts (the
                    `llamaedge_http` import) and the Authorization header it is granted (none
                    by default). A tool's policy is the same type (tools.py).
    RunGuard        one per request: the deadline, the token budget, the first breach
    PolicyBreach    a limit hit or a thing not granted: fails that request (403, 504, 500)

The guard enforces the policy at the WASI-NN seam without the WASI-NN layer knowing: the
session's registry is replaced by a view that loads only the granted graph names, and the
models it hands out cap the tokens generated. The runtime (host.py) consults the guard on
every host call and stops renewing a run that breached.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamaedge.engine import FinishReason, Generation, LoadedModel, SamplingOptions, Token
from llamaedge.errors import AppError, UsageError
from llamaedge.limits import APP_MEMORY_MAX_BYTES
from llamaedge.runtime.nn import Errno, Graphs, NNError, NNSession

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("llamaedge.policy")

DEFAULT_WALL_TIME_S = 300.0
DEFAULT_MODELS = ("default",)

# The keys of a manifest (and of --app-policy ROUTE:KEY=VALUE), one spelling for both.
KEYS = ("memory", "wall-time", "max-tokens", "models", "env", "dirs", "hosts", "authorization", "kv")

_SIZE_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
_TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Names the host sets for every request (WAGI's and its own settings): not grantable.
_HOST_ENV = re.compile(r"(HTTP_|LLAMAEDGE_|X_).*|REQUEST_METHOD|PATH_INFO|QUERY_STRING|SCRIPT_NAME|SERVER_\w+|"
                       r"GATEWAY_INTERFACE|CONTENT_LENGTH|CONTENT_TYPE\Z")
_GRAPH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# A host name or IP address, with a port or not: "example.com", "127.0.0.1:8123", "[::1]:80".
_HOST = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?\Z")


@dataclass(frozen=True)
class DirGrant:
    host: Path
    guest: str
    writable: bool = False


@dataclass(frozen=True)
class AppPolicy:
    memory_max_bytes: int = APP_MEMORY_MAX_BYTES
    wall_time_s: float = DEFAULT_WALL_TIME_S
    max_tokens: int | None = None  # None: as many as the context holds
    models: tuple[str, ...] = DEFAULT_MODELS
    env: tuple[tuple[str, str], ...] = ()
    dirs: tuple[DirGrant, ...] = ()
    authorization: bool = False
    kv_max_bytes: int = 0  # the key-value store's quota (kv.py); 0: not granted
    # Where the `llamaedge_http` import may connect: "name" (any port) or "name:port".
    hosts: tuple[str, ...] = ()

    def allows_host(self, name: str, port: int) -> bool:
        """Whether a URL's host and port are granted (names compared without case)."""
        name = name.lower()
        for entry in self.hosts:
            match = _HOST.match(entry)
            if match and match.group("name").lower() == name and match.group("port") in (None, str(port)):
                return True
        return False

    def summary(self) -> dict[str, Any]:
        """What /apps shows: limits and grants, never an environment value or a host path."""
        return {
            "memory_mib": self.memory_max_bytes / 2**20,
            "wall_time_s": self.wall_time_s,
            "max_tokens": self.max_tokens,
            "models": list(self.models),
            "env": [name for name, _ in self.env],
            "dirs": [{"guest": d.guest, "writable": d.writable} for d in self.dirs],
            "authorization": self.authorization,
            "kv_bytes": self.kv_max_bytes,
            "hosts": list(self.hosts),
        }

    def describe(self) -> str:
        """One line for the startup banner."""
        parts = [f"memory {self.memory_max_bytes / 2**20:g} MiB", f"wall time {self.wall_time_s:g}s",
                 f"max tokens {self.max_tokens if self.max_tokens is not None else 'context'}",
                 "models " + ",".join(self.models)]
        if self.env:
            parts.append("env " + ",".join(name for name, _ in self.env))
        if self.dirs:
            parts.append("dirs " + ",".join(d.guest + ("(rw)" if d.writable else "") for d in self.dirs))
        if self.hosts:
            parts.append("hosts " + ",".join(self.hosts))
        if self.authorization:
            parts.append("Authorization")
        if self.kv_max_bytes:
            parts.append(f"kv {self.kv_max_bytes / 2**20:g} MiB")
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Reading a policy: manifest values and flag values share one parser per key


class PolicyError(UsageError):
    """A bad policy value; `where` names the manifest or flag it came from."""


def parse_size(value: Any, where: str, key: str = "memory") -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)) \
            and match.group(2).lower() in _SIZE_UNITS:
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    else:
        raise PolicyError(f"{where}: {key} {value!r} is not a size", hint="use bytes or a unit, e.g. 64MiB")
    if size < 64 * 1024:
        raise PolicyError(f"{where}: {key} {value!r} is less than 64 KiB", hint="e.g. 64MiB")
    return size


def parse_seconds(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)) \
            and match.group(2).lower() in _TIME_UNITS:
        seconds = float(match.group(1)) * _TIME_UNITS[match.group(2).lower()]
    else:
        raise PolicyError(f"{where}: wall-time {value!r} is not a duration", hint="use seconds or e.g. 30s, 500ms, 2m")
    if not 0 < seconds < math.inf:
        raise PolicyError(f"{where}: wall-time must be more than 0", hint="e.g. 30s")
    return seconds


def parse_max_tokens(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyError(f"{where}: max-tokens {value!r} is not a positive integer", hint="e.g. 256")
    return value


def parse_models(value: Any, where: str) -> tuple[str, ...]:
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and _GRAPH_NAME.match(n) for n in names):
        raise PolicyError(f"{where}: models {value!r} is not a list of graph names", hint='e.g. ["default"]')
    return tuple(dict.fromkeys(names))


def parse_hosts(value: Any, where: str) -> tuple[str, ...]:
    """A list of hosts (a flag: one, or several comma-separated)."""
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and _HOST.match(n) for n in names):
        raise PolicyError(f"{where}: hosts {value!r} is not a list of host names (with a port or not)",
                          hint='e.g. ["api.example.com", "127.0.0.1:8080"]')
    return tuple(dict.fromkeys(n.lower() for n in names))


def parse_bool(value: Any, key: str, where: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: {key} {value!r} is not true or false", hint="use true or false")
    return value


def _check_env_name(name: str, where: str) -> None:
    if not _ENV_NAME.match(name):
        raise PolicyError(f"{where}: {name!r} is not an environment variable name", hint="use NAME=VALUE or NAME")
    if _HOST_ENV.fullmatch(name):
        raise PolicyError(f"{where}: env {name} is set by the host for every request",
                          hint="grant a name outside WAGI's and LLAMAEDGE_*")


def parse_env_flag(value: str, where: str, environ: dict[str, str]) -> tuple[str, str]:
    """`NAME=VALUE`, or `NAME`: the value the server itself was started with."""
    name, sep, text = value.partition("=")
    _check_env_name(name, where)
    if not sep:
        if name not in environ:
            raise PolicyError(f"{where}: env {name} is not set in the server's environment",
                              hint=f"set it, or grant a value with env={name}=VALUE")
        text = environ[name]
    return name, text


def parse_env_table(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PolicyError(f"{where}: env must be a table of NAME = \"value\" strings",
                          hint='e.g. [env] then GREETING = "hello"')
    for name in value:
        _check_env_name(name, where)
    return tuple(value.items())


def parse_dir_flag(value: str, where: str, base: Path) -> DirGrant:
    """`HOST[:GUEST][:rw]`: read-only unless `:rw`; the guest path defaults to the host's."""
    parts = value.split(":")
    writable = parts[-1] in ("rw", "ro") and len(parts) > 1 and parts.pop() == "rw"
    if not 1 <= len(parts) <= 2 or not parts[0]:
        raise PolicyError(f"{where}: dir {value!r} is not HOST[:GUEST][:rw]", hint="e.g. dir=./data:/data")
    return _dir_grant(parts[0], parts[1] if len(parts) == 2 else parts[0], writable, where, base)


def parse_dirs_table(value: Any, where: str, base: Path) -> tuple[DirGrant, ...]:
    """A manifest's `dirs`: a list of {host = "...", guest = "...", writable = false}."""
    if not isinstance(value, list):
        raise PolicyError(f"{where}: dirs must be a list of {{host, guest, writable}} tables",
                          hint='e.g. dirs = [{ host = "data", guest = "/data" }]')
    grants = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("host"), str) or set(item) - {"host", "guest", "writable"}:
            raise PolicyError(f"{where}: each dirs entry is a table with host, and optionally guest and writable",
                              hint='e.g. { host = "data", guest = "/data", writable = false }')
        guest = item.get("guest", item["host"])
        if not isinstance(guest, str):
            raise PolicyError(f"{where}: dirs guest must be a string", hint='e.g. guest = "/data"')
        grants.append(_dir_grant(item["host"], guest, parse_bool(item.get("writable", False), "writable", where),
                                 where, base))
    return tuple(grants)


def _dir_grant(host: str, guest: str, writable: bool, where: str, base: Path) -> DirGrant:
    path = (base / host).resolve()
    if not path.is_dir():
        raise PolicyError(f"{where}: dir {host!r} is not a directory", hint="grant an existing directory")
    if not guest.startswith("/"):
        guest = "/" + guest
    return DirGrant(path, guest, writable)


def apply(policy: AppPolicy, key: str, value: Any, where: str, *, base: Path, environ: dict[str, str],
          from_flag: bool) -> AppPolicy:
    """`policy` with `key` set from `value` (a flag's text or a manifest's value). env, dirs
    and hosts from flags add to what the manifest granted; the other keys replace."""
    if key == "memory":
        return dataclasses.replace(policy, memory_max_bytes=parse_size(value, where))
    if key == "wall-time":
        return dataclasses.replace(policy, wall_time_s=parse_seconds(value, where))
    if key == "max-tokens":
        return dataclasses.replace(policy, max_tokens=parse_max_tokens(value, where))
    if key == "models":
        return dataclasses.replace(policy, models=parse_models(value, where))
    if key == "authorization":
        return dataclasses.replace(policy, authorization=parse_bool(value, key, where))
    if key == "kv":
        return dataclasses.replace(policy, kv_max_bytes=parse_size(value, where, "kv"))
    if key == "env":
        added = (parse_env_flag(value, where, environ),) if from_flag else parse_env_table(value, where)
        merged = dict(policy.env)
        merged.update(added)
        return dataclasses.replace(policy, env=tuple(merged.items()))
    if key == "hosts":
        hosts = parse_hosts(value, where)
        return dataclasses.replace(policy, hosts=tuple(dict.fromkeys(policy.hosts + hosts)) if from_flag else hosts)
    if key == "dirs":
        added_dirs = (parse_dir_flag(value, where, base),) if from_flag else parse_dirs_table(value, where, base)
        return dataclasses.replace(policy, dirs=policy.dirs + added_dirs)
    raise PolicyError(f"{where}: unknown policy key {key!r}", hint="use one of: " + ", ".join(KEYS))


# ---------------------------------------------------------------------------------------------
# Breaches


class PolicyBreach(AppError):
    """A request that went beyond its app's policy. `status` and `code` are its HTTP error."""

    status = 500
    code = "app_policy"
    kind = "server"  # the error kind of server/api_errors.py


class ModelNotAllowed(PolicyBreach):
    status = 403
    code = "model_not_allowed"
    kind = "permission"


class HostNotAllowed(PolicyBreach):
    status = 403
    code = "host_not_allowed"
    kind = "permission"


class OutputTooLarge(PolicyBreach):
    status = 500
    code = "output_too_large"


class PolicyWidening(PolicyBreach):
    """A nested call whose callee is granted what its caller is not."""

    status = 403
    code = "policy_widening"
    kind = "permission"


class WallTimeExceeded(PolicyBreach):
    status = 504
    code = "wall_time_exceeded"


class MemoryLimitReached(PolicyBreach):
    status = 500
    code = "memory_limit_exceeded"


def capped(callee: AppPolicy, caller: AppPolicy, seconds_left: float, callee_name: str) -> AppPolicy:
    """The policy a nested call runs under: the callee's, within the caller's. A callee granted
    a directory, host or model its caller lacks would widen what the caller can reach: that is
    refused (PolicyWidening), never granted. Memory and wall time are the smaller of the two
    (the caller's wall time: what is left of it). Environment values are the callee's own
    settings, not reach, and stay."""
    for grant in callee.dirs:
        if not any(grant.host == own.host or own.host in grant.host.parents
                   for own in caller.dirs if own.writable or not grant.writable):
            raise PolicyWidening(f"{callee_name} is granted the directory {grant.guest}"
                                 f"{' (writable)' if grant.writable else ''}, which its caller is not",
                                 hint="grant the caller that directory too, or the callee less")
    for entry in callee.hosts:
        match = _HOST.match(entry)
        assert match is not None  # parse_hosts checked it
        name, port = match.group("name"), match.group("port")
        covered = any((m := _HOST.match(own)) and m.group("name").lower() == name.lower()
                      and m.group("port") in (None, port) for own in caller.hosts)
        if not covered:
            raise PolicyWidening(f"{callee_name} may fetch from {entry}, which its caller may not",
                                 hint="grant the caller that host too, or the callee less")
    extra_models = set(callee.models) - set(caller.models)
    if extra_models:
        raise PolicyWidening(f"{callee_name} may load {sorted(extra_models)[0]!r}, which its caller may not",
                             hint="grant the caller that model too, or the callee less")
    if seconds_left <= 0:
        raise WallTimeExceeded(f"no time is left for a call of {callee_name}", hint="raise the caller's wall-time")
    return dataclasses.replace(callee, memory_max_bytes=min(callee.memory_max_bytes, caller.memory_max_bytes),
                               wall_time_s=min(callee.wall_time_s, seconds_left))


# ---------------------------------------------------------------------------------------------
# Enforcement, per request


class RunGuard:
    """One request of a mounted app: its deadline, its token budget and its first breach.
    `stop` is called once on a breach (the WAGI layer refuses further output with it)."""

    def __init__(self, app_name: str, policy: AppPolicy, session: NNSession, *, stop: Any = None) -> None:
        self.app_name = app_name
        self.policy = policy
        self.session = session
        self.deadline = time.monotonic() + policy.wall_time_s
        self.tokens_left = policy.max_tokens
        self.breach: PolicyBreach | None = None
        self._stop = stop
        self._lock = threading.Lock()
        session.registry = PolicyRegistry(session.registry, self)
        self._timer = threading.Timer(policy.wall_time_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def seconds_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _expire(self) -> None:
        self.fail(WallTimeExceeded(f"{self.app_name} ran past its wall-time limit of {self.policy.wall_time_s:g}s",
                                   hint="raise wall-time in its policy"))

    def fail(self, breach: PolicyBreach) -> None:
        """Record the first breach, stop the app's generation and its output."""
        with self._lock:
            if self.breach is not None:
                return
            self.breach = breach
        log.warning("%s: %s", self.app_name, breach)
        self.session.cancel()
        if self._stop is not None:
            self._stop()

    def take_token(self) -> bool:
        """Whether one more generated token fits the request's budget (and count it)."""
        with self._lock:
            if self.tokens_left is None:
                return True
            if self.tokens_left <= 0:
                return False
            self.tokens_left -= 1
            return True

    def close(self) -> None:
        self._timer.cancel()


class PolicyRegistry:
    """The registry as a mounted app sees it: only the graph names its policy grants, no
    model files by path, and models that stop generating at the request's token budget."""

    def __init__(self, registry: Graphs, guard: RunGuard) -> None:
        self._registry = registry
        self._guard = guard
        self._granted: set[int] = set()

    def load_by_name(self, name: str, metadata: dict[str, Any]) -> int:
        if name not in self._guard.policy.models:
            self._guard.fail(ModelNotAllowed(
                f"{self._guard.app_name} may not load the model {name!r} (allowed: {', '.join(self._guard.policy.models)})",
                hint="grant it with models in the app's policy"))
            raise NNError(Errno.NOT_FOUND, f"model {name!r} is not granted to this app")
        graph = self._registry.load_by_name(name, metadata)
        self._granted.add(graph)
        return graph

    def load_path(self, path: Path, metadata: dict[str, Any]) -> int:
        self._guard.fail(ModelNotAllowed(f"{self._guard.app_name} may not load model files, only granted graph names",
                                         hint="preload the model and grant its name"))
        raise NNError(Errno.NOT_FOUND, "loading a model file is not granted to this app")

    def get(self, graph: int) -> LoadedModel:
        if graph not in self._granted:
            raise NNError(Errno.INVALID_ARGUMENT, f"unknown graph id {graph}")
        return BudgetedModel(self._registry.get(graph), self._guard)

    def unload(self, graph: int) -> None:
        if graph not in self._granted:
            raise NNError(Errno.INVALID_ARGUMENT, f"unknown graph id {graph}")
        self._granted.discard(graph)  # the host's models stay loaded: the app only lets go


class BudgetedModel:
    """A model whose generations end (finish reason length) when the request's token budget
    is spent. Everything but `generate` is the model's own."""

    def __init__(self, model: LoadedModel, guard: RunGuard) -> None:
        self._model = model
        self._guard = guard

    def generate(self, prompt: list[int], sampling: SamplingOptions, *, group: object = None,
                 images: dict[int, Any] | None = None) -> BudgetedSequence:
        left = self._guard.tokens_left
        if left is not None and (sampling.n_predict < 0 or sampling.n_predict > left):
            sampling = dataclasses.replace(sampling, n_predict=left)  # ends the engine's work there too
        extra = {"images": images} if images else {}  # (text-only stand-ins take no images)
        return BudgetedSequence(self._model.generate(prompt, sampling, group=group, **extra), self._guard)

    @property
    def vision(self) -> bool:
        return getattr(self._model, "vision", False)

    @property
    def media_marker(self) -> bytes:
        return self._model.media_marker

    def read_image(self, data: bytes) -> Any:
        return self._model.read_image(data)

    def tokenize_media(self, text: bytes, images: list[Any]) -> Any:
        return self._model.tokenize_media(text, images)

    @property
    def n_ctx(self) -> int:
        return self._model.n_ctx

    @property
    def n_embd(self) -> int:
        return self._model.n_embd

    def tokenize(self, text: bytes, *, special: bool = True) -> list[int]:
        return self._model.tokenize(text, special=special)

    def detokenize(self, tokens: list[int]) -> bytes:
        return self._model.detokenize(tokens)

    def check_tokens(self, tokens: list[int]) -> None:
        self._model.check_tokens(tokens)

    def preserved_tokens(self, texts: list[str]) -> frozenset[int]:
        return self._model.preserved_tokens(texts)

    def check_sampling(self, sampling: SamplingOptions) -> None:
        self._model.check_sampling(sampling)

    def check_embedding_inputs(self, inputs: list[list[int]]) -> None:
        self._model.check_embedding_inputs(inputs)

    def embed(self, inputs: list[list[int]], *, norm: int = 2) -> np.ndarray:
        return self._model.embed(inputs, norm=norm)

    def render_chat(self, messages: list[dict[str, object]], *, add_generation_prompt: bool = True,
                    tools: list[object] | None = None, template_kwargs: dict[str, object] | None = None) -> str:
        return self._model.render_chat(messages, add_generation_prompt=add_generation_prompt, tools=tools,
                                       template_kwargs=template_kwargs)

    def close(self) -> None:
        pass  # the host's model outlives the request: the app only lets go of it


class BudgetedSequence:
    """A sequence that counts its tokens against the budget and ends when it is spent:
    several sequences of one request (n > 1) share it."""

    def __init__(self, sequence: Generation, guard: RunGuard) -> None:
        self._sequence = sequence
        self._guard = guard
        self._cut = False

    @property
    def finish_reason(self) -> FinishReason | None:
        return FinishReason.LENGTH if self._cut else self._sequence.finish_reason

    @property
    def error(self) -> str | None:
        return self._sequence.error

    @property
    def n_cached(self) -> int:
        return self._sequence.n_cached

    @property
    def n_drafted(self) -> int:
        return self._sequence.n_drafted

    @property
    def n_accepted(self) -> int:
        return self._sequence.n_accepted

    def cancel(self) -> None:
        self._sequence.cancel()

    def next_token(self, timeout_s: float | None = None) -> Token | None:
        if self._cut:
            return None
        token = self._sequence.next_token(timeout_s)
        if token is not None and not self._guard.take_token():
            self._cut = True
            self._sequence.cancel()
            log.info("%s: the request reached its max-tokens of %d; generation ends with finish reason length",
                     self._guard.app_name, self._guard.policy.max_tokens)
            return None
        if token is None and self._sequence.finish_reason == FinishReason.LENGTH and self._guard.tokens_left == 0:
            log.info("%s: the request reached its max-tokens of %d; generation ends with finish reason length",
                     self._guard.app_name, self._guard.policy.max_tokens)
        return token
