"""hostguard: which Host headers and Origins the server answers, table by table, and the
middleware in front of a small Starlette app (Starlette's test client: no port, no model).
The guard on the real server, every route over real HTTP: tests/test_server_guard.py."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from llamaedge.errors import UsageError
from llamaedge.hostguard import HostGuard, allowed_hosts, host_name, origin_allowed, parse_allowed_host


@pytest.mark.parametrize(("header", "name"), [
    ("localhost", "localhost"),
    ("LocalHost:8080", "localhost"),
    ("127.0.0.1:80", "127.0.0.1"),
    ("[::1]:8080", "::1"),
    ("[::1]", "::1"),
    ("llm.example.com:", "llm.example.com"),  # an empty port is allowed by RFC 3986
    ("my_host.lan", "my_host.lan"),
    ("::1", None),  # IPv6 without brackets
    ("[127.0.0.1]", None),  # brackets are for IPv6
    ("[::1", None),
    ("localhost:80x", None),
    ("a b", None),
    ("evil.example@localhost", None),
    ("", None),
    (".", None),
    ("localhost.", None),  # a trailing dot is another name, and DNS may answer for it
])
def test_host_name_takes_the_name_and_drops_the_port(header: str, name: str | None) -> None:
    assert host_name(header) == name


LOOPBACK_ALLOWED = ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:1", "[::1]:8080", "[0:0:0:0:0:0:0:1]"]
LOOPBACK_REFUSED = ["attacker.example", "attacker.example:8080", "127.0.0.2:8080", "10.0.0.5", "[fe80::1]",
                    "localhost.", "sub.localhost", "0x7f.0.0.1", "2130706433", "", "a b",
                    "0.0.0.0:8080"]  # pages fetch http://0.0.0.0:PORT to reach this machine's servers


@pytest.mark.parametrize("bind", ["127.0.0.1", "localhost", "::1"])
def test_bound_to_loopback_only_the_loopback_names_pass(bind: str) -> None:
    hosts = allowed_hosts(bind)
    assert [h for h in LOOPBACK_ALLOWED if not hosts.allows(h)] == []
    assert [h for h in LOOPBACK_REFUSED if hosts.allows(h)] == []


def test_the_bound_address_is_allowed_too() -> None:
    assert allowed_hosts("127.0.0.2").allows("127.0.0.2:8080")
    assert not allowed_hosts("127.0.0.1").allows("127.0.0.2:8080")


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.168.1.5"])
def test_bound_beyond_loopback_any_address_passes_but_no_other_name(bind: str) -> None:
    hosts = allowed_hosts(bind)
    for header in ["192.168.1.5:8080", "10.1.2.3", "[fe80::1]:8080", "localhost:8080", "127.0.0.1"]:
        assert hosts.allows(header), header
    for header in ["attacker.example", "my-laptop.local:8080", "llamaedge.default.svc"]:
        assert not hosts.allows(header), header


def test_a_bound_name_is_allowed() -> None:
    hosts = allowed_hosts("my-laptop.lan")
    assert hosts.allows("my-laptop.lan:8080") and hosts.allows("10.0.0.5")
    assert not hosts.allows("attacker.example")


def test_allowed_host_adds_names_domains_and_addresses() -> None:
    hosts = allowed_hosts("127.0.0.1", ["LLM.Example.com", ".corp.example", "10.0.0.5", "[fd00::1]"])
    for header in ["llm.example.com:443", "corp.example", "a.corp.example:8080", "b.a.corp.example",
                   "10.0.0.5:8080", "[fd00::1]", "localhost"]:
        assert hosts.allows(header), header
    for header in ["example.com", "evilcorp.example", "corp.example.evil", "10.0.0.6", "attacker.example"]:
        assert not hosts.allows(header), header


def test_allowed_host_star_turns_the_check_off() -> None:
    hosts = allowed_hosts("127.0.0.1", ["*"])
    assert hosts.allows("attacker.example:8080") and hosts.allows("a b")


@pytest.mark.parametrize(("value", "parsed"), [
    ("llm.example.com", "llm.example.com"),
    (" LLM.example.COM ", "llm.example.com"),
    (".example.com", ".example.com"),
    ("*", "*"),
    ("10.0.0.5", "10.0.0.5"),
    ("[::1]", "::1"),
    ("fd00::1", "fd00::1"),
])
def test_allowed_host_values_are_normalised(value: str, parsed: str) -> None:
    assert parse_allowed_host(value) == parsed


@pytest.mark.parametrize(("value", "message", "hint"), [
    ("llm.example.com:8080", "without a port", "any port"),
    ("http://llm.example.com", "not a host name", "no scheme"),
    ("*.example.com", "leading dot", "--allowed-host .example.com"),
    ("", "not a host name", "e.g. --allowed-host"),
    ("a b", "not a host name", "e.g. --allowed-host"),
])
def test_bad_allowed_host_values_say_how_to_write_them(value: str, message: str, hint: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_allowed_host(value)
    assert message in str(err.value) and hint in (err.value.hint or "")


@pytest.mark.parametrize(("origin", "host", "cors", "allowed"), [
    ("http://localhost:8080", "localhost:8080", [], True),  # the web chat, from the server itself
    ("http://LOCALHOST:8080", "localhost:8080", [], True),
    ("https://llm.example.com", "llm.example.com", [], True),  # behind a TLS proxy
    ("http://localhost:8081", "localhost:8080", [], False),  # another port is another origin
    ("http://evil.example", "localhost:8080", [], False),
    ("null", "localhost:8080", [], False),  # a sandboxed frame or a file
    ("http://evil.example", None, [], False),
    ("http://app.example", "localhost:8080", ["http://app.example"], True),
    ("http://evil.example", "localhost:8080", ["http://app.example"], False),
    ("null", "localhost:8080", ["*"], True),
])
def test_an_origin_passes_when_it_is_the_servers_own_or_cors_allows_it(
        origin: str, host: str | None, cors: list[str], allowed: bool) -> None:
    assert origin_allowed(origin, host, cors) is allowed


def _refuse(path: str, message: str, code: str) -> Response:
    return JSONResponse({"error": {"message": message, "code": code, "path": path}}, status_code=403)


def guarded_client(bind: str = "127.0.0.1", allowed: tuple[str, ...] = (), cors: tuple[str, ...] = ()) -> TestClient:
    ran: list[str] = []

    async def endpoint(request: Request) -> Response:
        ran.append(request.method)
        return PlainTextResponse("ran")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ran")
        await websocket.close()

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
                            WebSocketRoute("/ws", socket)])
    app.add_middleware(HostGuard, hosts=allowed_hosts(bind, allowed), cors_origins=cors, refuse=_refuse)
    client = TestClient(app, base_url="http://localhost:8080")
    client.ran = ran  # type: ignore[attr-defined]
    return client


def test_a_foreign_host_is_refused_before_the_route_runs() -> None:
    client = guarded_client()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = client.request(method, "/v1/models", headers={"Host": "attacker.example:8080"})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "host_not_allowed"
        assert "'attacker.example:8080'" in response.json()["error"]["message"]
        assert "--allowed-host" in response.json()["error"]["message"]
    assert client.ran == []  # type: ignore[attr-defined]
    assert client.get("/v1/models").text == "ran"  # Host: localhost:8080
    assert client.get("/", headers={"Host": "127.0.0.1:8080"}).text == "ran"


def test_a_websocket_to_a_foreign_host_is_closed() -> None:
    client = guarded_client()
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/ws", headers={"Host": "attacker.example"}):
            pass
    assert closed.value.code == 1008
    with client.websocket_connect("/ws", headers={"Host": "localhost:8080"}) as websocket:
        assert websocket.receive_text() == "ran"


def test_a_state_changing_request_from_a_foreign_origin_is_refused() -> None:
    client = guarded_client(cors=("http://app.example",))
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = client.request(method, "/v1/chat/completions", headers={"Origin": "http://evil.example"})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "origin_not_allowed"
        assert "--cors-origin" in response.json()["error"]["message"]
    assert client.post("/x", headers={"Origin": "null"}).status_code == 403
    assert client.ran == []  # type: ignore[attr-defined]
    # Its own page, an allowed origin, no origin at all (curl, SDKs), and reads: they run.
    assert client.post("/x", headers={"Origin": "http://localhost:8080"}).text == "ran"
    assert client.post("/x", headers={"Origin": "http://app.example"}).text == "ran"
    assert client.post("/x").text == "ran"
    assert client.get("/x", headers={"Origin": "http://evil.example"}).text == "ran"


def test_the_host_check_off_leaves_the_origin_check_on() -> None:
    client = guarded_client(allowed=("*",))
    assert client.get("/", headers={"Host": "attacker.example"}).text == "ran"
    refused = client.post("/", headers={"Host": "a.example", "Origin": "http://b.example"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
    assert client.post("/", headers={"Host": "a.example", "Origin": "http://a.example"}).text == "ran"
