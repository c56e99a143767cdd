"""The `llamaedge_http` import: a narrow, policy-checked HTTP GET for apps and tools.

WASI preview 1 has no sockets, so a module reaches the network only through this import,
and only the hosts its policy grants (`hosts`): the URL's host and port are checked before
any connection, redirects are not followed (a redirect elsewhere would leave the grant; the
module sees the 3xx and its Location), and no proxy from the environment is used.

A granted name is resolved once, here, and the connection made to the address checked: a name
that resolves to a loopback, private, link-local or otherwise non-public address is refused
unless the policy grants that address itself (`127.0.0.1:8080`), so that a public name granted
(or re-pointed by its DNS) cannot reach the machine's or the network's own services. An address
written in the URL is checked as written: the grant names it.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from llamaedge.runtime.nn import Errno, NNError
from llamaedge.runtime.breaches import HostNotAllowed
from llamaedge.runtime.policy import AppPolicy

USER_AGENT = "llamaedge-http"


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    address: str  # what the connection is made to: the host, or the address its name was checked at


def check_url(url: str, policy: AppPolicy | None, module: str) -> Target:
    """The URL's parts when its scheme is http(s) and its host is granted. A host not
    granted is a breach (`HostNotAllowed`); a URL that is not one an argument error."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise NNError(Errno.INVALID_ARGUMENT, f"bad URL {url[:200]!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NNError(Errno.INVALID_ARGUMENT, f"not an http(s) URL: {url[:200]!r}")
    if parts.username or parts.password:
        raise NNError(Errno.INVALID_ARGUMENT, "URLs with credentials are not fetched")
    port = port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    if policy is None or not policy.allows_host(f"[{host}]" if ":" in host else host, port):
        granted = ", ".join(policy.hosts) if policy is not None and policy.hosts else "none"
        raise HostNotAllowed(f"{module} may not fetch from {host}:{port} (granted hosts: {granted})",
                             hint="grant it with hosts in the policy")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, _address(host, port, policy, module))


def _granted_form(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def _address(host: str, port: int, policy: AppPolicy, module: str) -> str:
    """The address to connect to: an address in the URL as it is; a name's first address
    that is public or granted as an address (HostNotAllowed when none is)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise NNError(Errno.RUNTIME_ERROR, f"cannot resolve {host}: {exc}") from exc
    if not infos:
        raise NNError(Errno.RUNTIME_ERROR, f"cannot resolve {host}: no address")
    refused: list[str] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # less an IPv6 scope
        if address.is_global or policy.allows_host(_granted_form(address), port):
            return str(address)
        refused.append(_granted_form(address))
    shown = ", ".join(dict.fromkeys(refused))
    raise HostNotAllowed(f"{module} may not fetch from {host}:{port}: it resolves to {shown}, not a public "
                         f"address (the policy may grant the address itself: {refused[0]}:{port})",
                         hint="grant the address, not only the name")


def get(target: Target, *, timeout_s: float, max_bytes: int) -> tuple[int, bytes, bool]:
    """GET `target`: (status, the body's first `max_bytes` bytes, whether it was cut)."""
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(target.host, target.port, timeout=timeout_s,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)
    # To the address checked, not the name resolved again (its DNS may answer otherwise now);
    # the name stays the Host header and, for https, the certificate's name (SNI).
    connection._create_connection = lambda where, timeout, source: socket.create_connection(  # type: ignore[attr-defined]
        (target.address, where[1]), timeout, source)
    try:
        connection.request("GET", target.path, headers={"User-Agent": USER_AGENT, "Connection": "close"})
        response = connection.getresponse()
        body = response.read(max_bytes + 1)
        return response.status, body[:max_bytes], len(body) > max_bytes
    except (OSError, http.client.HTTPException) as exc:
        raise NNError(Errno.RUNTIME_ERROR, f"GET {target.host}:{target.port}{target.path[:100]} failed: {exc}") from exc
    finally:
        connection.close()
