"""The guard that keeps web pages from driving the server: the `Host` header (DNS rebinding)
and the `Origin` of state-changing requests (cross-site requests). A pure ASGI middleware,
outside every route, so nothing a refused request names runs (docs/operations.md).

DNS rebinding: a page on attacker.example points that name at 127.0.0.1 once it has loaded;
its scripts' requests to http://attacker.example:8080 then reach a server on the victim's
machine, and since the page and the server now share an origin, the browser lets the page
read the answers. The browser still sends `Host: attacker.example:8080`: a server that
answers only to the names it is known by refuses them. Which names (any port):

- always `localhost`, `127.0.0.1`, `[::1]`, the address given with `--host`, and the names
  given with `--allowed-host` (`.example.com`: that name and every name under it; `*`: any
  Host, the check off);
- bound beyond loopback (`--host 0.0.0.0`, an interface's address), any IP address too: a
  rebinding needs a DNS name, and clients on the network reach the server by its address;
- a request without a Host header (HTTP/1.0; browsers always send one) passes.

Cross-site requests: a page on any site may POST to http://127.0.0.1:8080 (a "simple"
request goes without a CORS preflight: the page cannot read the answer, but the work is
done). A POST, PUT, PATCH or DELETE that carries an `Origin` is refused unless that origin is
the server's own (the host and port of the request's Host: the web chat) or one
`--cors-origin` allows. Requests without an Origin (curl, the SDKs) pass.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from llamaedge.errors import UsageError

ANY_HOST = "*"  # --allowed-host '*': the Host check off
ANY_ORIGIN = "*"  # --cors-origin '*': any origin, as CORSMiddleware reads it
LOOPBACK_NAMES = frozenset({"localhost"})
LOOPBACK_ADDRESSES = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A DNS name as a Host carries it: letters, digits, '-', '_' (seen in the wild), dots.
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\Z")
_PORT = re.compile(r"(:[0-9]*)?")  # what may follow the name: nothing, or a port (RFC 3986 allows it empty)
# What a refused request is answered with: (path, message, code) -> an ASGI response. The
# server passes its own error shapes (OpenAI's, Anthropic's on /v1/messages) with status 403.
Refuse = Callable[[str, str, str], ASGIApp]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_name(header: str) -> str | None:
    """The name or address a Host header value names, lowercased, without its port:
    `name`, `name:port`, `1.2.3.4:port`, `[::1]:port` (an IPv6 address without brackets);
    None for anything else."""
    value = header.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        address = _address(name) if bracket else None
        if address is None or address.version != 6:
            return None
    else:
        name = value.partition(":")[0]
        rest = value[len(name):]
        if not _NAME.match(name):
            return None
    return name if _PORT.fullmatch(rest) else None


def parse_allowed_host(value: str) -> str:
    """An `--allowed-host` value, checked and lowercased: a name, `.example.com` (the name and
    every name under it), an IP address (an IPv6 one with or without brackets), or `*`."""
    text = value.strip().lower()
    if text == ANY_HOST:
        return text
    hint = "give a host name as a browser's address bar shows it, e.g. --allowed-host llm.example.com"
    if "/" in text:
        raise UsageError(f"--allowed-host {value!r} is not a host name", hint=hint + " (no scheme, no path)")
    if text.startswith("*."):
        raise UsageError(f"--allowed-host {value!r}: wildcards are written with a leading dot",
                         hint=f"--allowed-host {text[1:]} allows {text[2:]} and every name under it")
    address = _address(text.removeprefix("[").removesuffix("]"))
    if address is not None:
        return str(address)
    name = text.removeprefix(".")
    if ":" in name:
        raise UsageError(f"--allowed-host {value!r}: give the name without a port", hint="any port is allowed")
    if not _NAME.match(name):
        raise UsageError(f"--allowed-host {value!r} is not a host name", hint=hint)
    return text


@dataclass(frozen=True)
class AllowedHosts:
    """The names and addresses the server answers to (any port)."""

    names: frozenset[str] = LOOPBACK_NAMES
    addresses: frozenset[IPAddress] = LOOPBACK_ADDRESSES
    domains: tuple[str, ...] = ()  # from `.example.com`: "example.com" and names under it
    any_address: bool = False  # bound beyond loopback: any IP address
    any_host: bool = False  # `*`: the check is off

    def allows(self, header: str) -> bool:
        """Whether a Host header value names this server."""
        if self.any_host:
            return True
        name = host_name(header)
        if name is None:
            return False
        address = _address(name)
        if address is not None:
            return self.any_address or address in self.addresses
        return name in self.names or any(name == d or name.endswith("." + d) for d in self.domains)


def is_loopback(bind_host: str) -> bool:
    address = _address(bind_host)
    return bind_host.lower() == "localhost" if address is None else address.is_loopback


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> AllowedHosts:
    """What a server bound to `bind_host` (`--host`) answers to, with `extra` from
    `--allowed-host` (see the module docstring)."""
    names, addresses, domains = set(LOOPBACK_NAMES), set(LOOPBACK_ADDRESSES), []
    bound = _address(bind_host)
    if bound is None:
        names.add(bind_host.lower())
    elif not bound.is_unspecified:
        addresses.add(bound)
    any_host = False
    for value in extra:
        entry = parse_allowed_host(value)
        if entry == ANY_HOST:
            any_host = True
        elif entry.startswith("."):
            domains.append(entry[1:])
        elif (address := _address(entry)) is not None:
            addresses.add(address)
        else:
            names.add(entry)
    return AllowedHosts(frozenset(names), frozenset(addresses), tuple(domains),
                        any_address=not is_loopback(bind_host), any_host=any_host)


def origin_allowed(origin: str, host: str | None, cors_origins: Sequence[str]) -> bool:
    """Whether a state-changing request from `origin` may run: the server's own origin (the
    same host and port as the request's Host), or one --cors-origin allows (compared as
    CORSMiddleware compares them: exactly, or `*`). `Origin: null` (sandboxed frames, files)
    is nobody's own."""
    if ANY_ORIGIN in cors_origins or origin in cors_origins:
        return True
    _, scheme_sep, authority = origin.partition("://")
    return bool(scheme_sep) and host is not None and authority.lower() == host.strip().lower()


class HostGuard:
    """Refuses (403, through `refuse`) a request whose Host the server does not answer to,
    and a state-changing one from a foreign Origin, before any route runs. A WebSocket
    handshake to a foreign Host is closed (1008, policy violation)."""

    def __init__(self, app: ASGIApp, *, hosts: AllowedHosts, cors_origins: Sequence[str], refuse: Refuse) -> None:
        self.app = app
        self.hosts = hosts
        self.cors_origins = tuple(cors_origins)
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # Raw headers: ASGI servers pass names lowercased, values as sent.
        hosts = [value.decode("latin-1") for name, value in scope["headers"] if name == b"host"]
        origins = [value.decode("latin-1") for name, value in scope["headers"] if name == b"origin"]
        if len(hosts) > 1 or not all(self.hosts.allows(host) for host in hosts):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            shown = (hosts[0] if hosts else "")[:100]
            message = (f"This server does not answer to the Host {shown!r} (a guard against DNS rebinding); "
                       "its operator can allow the name with --allowed-host NAME.")
            await self.refuse(scope["path"], message, "host_not_allowed")(scope, receive, send)
            return
        refused = [origin for origin in origins
                   if not origin_allowed(origin, hosts[0] if hosts else None, self.cors_origins)]
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING_METHODS and refused:
            message = (f"Cross-site request refused: the Origin {refused[0][:100]!r} is not allowed to "
                       f"{scope['method']} here; the server's operator can allow it with --cors-origin ORIGIN.")
            await self.refuse(scope["path"], message, "origin_not_allowed")(scope, receive, send)
            return
        await self.app(scope, receive, send)
