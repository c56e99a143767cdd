"""What a mounted app or a tool is granted: its policy, read from flags or a manifest.

    AppPolicy       memory, wall time and generated tokens per request; the graph names it
                    may load; the environment variables, directories, network hosts (the
                    `llamaedge_http` import) and the Authorization header it is granted (none
                    by default). A tool's policy is the same type (tools.py).
    apply           one key of a manifest or of --app-policy, parsed (PolicyError when bad)
    capped          the policy of a nested call: the callee's within its caller's

How a run enforces it is guard.py's (RunGuard); what a breach of it fails with, breaches.py's.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaedge.errors import UsageError
from llamaedge.limits import APP_MEMORY_MAX_BYTES
from llamaedge.runtime.breaches import PolicyWidening, WallTimeExceeded

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
# Nested calls


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
