"""The client behind a Unix socket (``uvicorn app:app --uds PATH``, nginx in front): a connection without a
peer address, whose proxy the gateway believes once ``trusted_proxies`` lists ``unix:``.

Without it every client is refused by ``ip-filter`` as ``no_client_address`` and shares one ``{client.ip}``
key, with one WARNING saying why and what to change (before: 403 ``ip_forbidden`` and not a word).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import unix_connect
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway.config.parsing import parse_config
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.forwarded import Networks, client_address, forwarded_chain, trusted_hops, unix_socket_peer
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.request_view import RequestView
from support.configs import build_config
from support.policies import build, denied
from support.processes import ServerProcess
from support.rawhttp import handshake
from support.upstream import UpstreamServer

APP = """
from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found

app = WebSocketGateway(not_found, config="gateway.yaml")
"""

WARNING = "a policy needs the client's address, but the connection has none"


def _unix_scope(headers: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """A websocket scope as uvicorn gives it over ``--uds``: no client, the server a path without a port."""
    return {"type": "websocket", "path": "/ws/chat", "query_string": b"", "scheme": "ws", "subprotocols": [],
            "headers": [(b"host", b"gw.test")] + [(n.encode(), v.encode()) for n, v in headers],
            "client": None, "server": ("/run/gw.sock", None)}  # fmt: skip


# --- configuration --------------------------------------------------------------------------------------


def test_trusted_proxies_accept_the_unix_socket_literal() -> None:
    """``unix:`` is an entry of ``trusted_proxies``, beside networks; the broad-network check skips it."""
    config = parse_config(build_config(trusted_proxies=["unix:", "10.0.0.0/8"]))
    assert config.trusted_proxies == ["unix:", "10.0.0.0/8"]
    assert Networks(config.trusted_proxies).unix_socket


@pytest.mark.parametrize("spelling", ["unix", "UNIX:", "unix:/run/gw.sock", "unix://", " unix:"])
def test_a_wrong_spelling_of_the_literal_fails_by_field_path(spelling: str) -> None:
    """A near miss would trust no one without a word: start-up fails naming the entry and the spelling."""
    with pytest.raises(ConfigError) as raised:
        parse_config(build_config(trusted_proxies=["10.0.0.1", spelling]))
    (problem,) = raised.value.problems
    assert problem.startswith("trusted_proxies[1]: ")
    assert "written 'unix:'" in problem
    assert "(got " not in problem  # the message quotes the entry once


# --- who the client is (pure) -----------------------------------------------------------------------------


def test_a_unix_socket_is_no_client_address_and_no_other_peer_is() -> None:
    """Only a connection without a client whose server is a path counts as the socket's peer."""
    assert unix_socket_peer(_unix_scope())
    assert not unix_socket_peer({**_unix_scope(), "server": ("127.0.0.1", 8000)})  # TCP, a peer not kept
    assert not unix_socket_peer({**_unix_scope(), "client": ("127.0.0.1", 5000)})


def test_the_unix_peer_is_read_from_the_right_as_a_trusted_ip_peer() -> None:
    """The rightmost untrusted hop is the client; a proxy listed among the networks is read past."""
    trusted = Networks(["unix:", "10.0.0.0/8"])
    chain = forwarded_chain(["198.51.100.9, 203.0.113.7, 10.0.0.5"], "x-forwarded-for")
    assert trusted_hops(None, chain, trusted) == ["203.0.113.7", "10.0.0.5"]
    assert client_address("", chain, trusted, unix_socket=True) == "203.0.113.7"
    assert client_address("", chain, Networks(["10.0.0.0/8"]), unix_socket=True) == ""  # the socket not listed
    assert client_address("", chain, trusted, unix_socket=False) == ""  # no peer, not a socket: no one vouches


# --- ip-filter and the warning (pure) -------------------------------------------------------------------------


async def test_ip_filter_refuses_an_addressless_client_as_no_client_address(caplog: pytest.LogCaptureFixture) -> None:
    """403 with its own reason, not ``ip_forbidden``, and a WARNING naming the remedy."""
    policy = build({"ip-filter": {"allow": ["203.0.113.0/24"]}})
    request = RequestView(_unix_scope([("x-forwarded-for", "203.0.113.7")]), {}, Networks([]))
    denial = await denied(policy.apply(HandshakeContext("chat", request)))
    assert (denial.status, denial.reason) == (403, "no_client_address")
    assert any(WARNING in r.getMessage() and "list 'unix:' in trusted_proxies" in r.getMessage()
               for r in caplog.records)  # fmt: skip


# --- real uvicorn on a Unix socket ---------------------------------------------------------------------------


def _uvicorn_on_socket(tmp: Path, sock: Path, config: dict[str, Any]) -> ServerProcess:
    (tmp / "app.py").write_text(APP)
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    server = ServerProcess(["-m", "uvicorn", "app:app", "--uds", str(sock)], port=0, cwd=tmp)
    # Stock uvicorn binds its socket after the application's start-up: a client on "startup complete"
    # could find nothing listening yet (CI, 2026-12-07: ConnectionRefusedError).
    server.wait_for_line("Uvicorn running on unix socket")
    return server


async def _status(sock: Path, path: str, headers: dict[str, str]) -> int:
    """The handshake's status over the socket (101 when accepted), as a proxy on it would send it."""
    try:
        async with unix_connect(str(sock), f"ws://gw.test{path}", additional_headers=headers) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    except InvalidStatus as exc:
        return exc.response.status_code
    return 101


def _api(upstream: UpstreamServer, name: str, policies: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "path": f"/ws/{name}", "upstreams": [upstream.url("/echo")], "policies": policies}


async def test_behind_an_untrusted_socket_every_client_is_refused_with_one_warning(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer
) -> None:
    """Fail-closed as before (403, one shared key), but the operator reads why, once, and the client the reason."""
    config = {"apis": [_api(upstream, "filtered", [{"ip-filter": {"allow": ["203.0.113.0/24"]}}]),
                       _api(upstream, "limited", [{"rate-limit-by-key": {"key": "{client.network}", "limit": 2,
                                                                         "window": 60}}])]}  # fmt: skip
    sock = socket_dir / "gw.sock"
    with _uvicorn_on_socket(tmp_path, sock, config) as server:
        for address in ("203.0.113.7", "203.0.113.8", "203.0.113.9"):
            assert await _status(sock, "/ws/filtered", {"X-Forwarded-For": address}) == 403
        limited = [await _status(sock, "/ws/limited", {"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(3)]
        assert limited == [101, 101, 429]  # three clients, one key
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(sock))
            raw.sendall(handshake("/ws/filtered"))
            answer = raw.recv(4096).decode()
        server.stop()
        output = server.output()
    assert json.loads(answer.partition("\r\n\r\n")[2])["detail"].startswith("the client address is unknown")
    assert output.count(WARNING) == 1  # throttled: seven handshakes, two policies, one line
    assert "list 'unix:' in trusted_proxies" in output
    assert "Traceback" not in output
    assert [h.path for h in upstream.handshakes] == ["/echo", "/echo"]


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
async def test_a_proxy_on_a_trusted_socket_names_the_client(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer, header: str
) -> None:
    """``trusted_proxies: [unix:]``: the proxy's header is believed as a trusted IP peer's, read from the right."""
    config = {"trusted_proxies": ["unix:"], "forwarded_header": header,
              "apis": [_api(upstream, "filtered", [{"ip-filter": {"allow": ["203.0.113.0/24"]}}]),
                       _api(upstream, "limited", [{"rate-limit-by-key": {"key": "{client.network}", "limit": 1,
                                                                         "window": 60}}])]}  # fmt: skip

    def sent(*hops: str) -> dict[str, str]:
        if header == "forwarded":
            return {"Forwarded": ", ".join(f"for={hop}" for hop in hops)}
        return {"X-Forwarded-For": ", ".join(hops)}

    sock = socket_dir / "gw.sock"
    with _uvicorn_on_socket(tmp_path, sock, config) as server:
        assert await _status(sock, "/ws/filtered", sent("203.0.113.7")) == 101
        assert await _status(sock, "/ws/filtered", sent("198.51.100.1")) == 403
        # What the client wrote left of itself is not believed: the rightmost untrusted hop is the client.
        assert await _status(sock, "/ws/filtered", sent("203.0.113.7", "198.51.100.1")) == 403
        assert await _status(sock, "/ws/filtered", sent("198.51.100.1", "203.0.113.7")) == 101
        assert [await _status(sock, "/ws/limited", sent(f"198.51.100.{i}")) for i in (1, 2, 1)] == [101, 101, 429]
        server.stop()
        output = server.output()
    assert WARNING not in output
    forwarded = [h.header("x-forwarded-for") for h in upstream.handshakes]
    assert forwarded[:2] == ["203.0.113.7", "203.0.113.7"]  # the client alone: the socket's peer has no address


async def test_a_trusted_socket_whose_proxy_names_no_client_says_so(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer
) -> None:
    """The socket is trusted but its proxy sent no header: still refused, the WARNING names that cause."""
    config = {"trusted_proxies": ["unix:"],
              "apis": [_api(upstream, "filtered", [{"ip-filter": {"allow": ["203.0.113.0/24"]}}])]}  # fmt: skip
    sock = socket_dir / "gw.sock"
    with _uvicorn_on_socket(tmp_path, sock, config) as server:
        assert await _status(sock, "/ws/filtered", {}) == 403
        server.stop()
        output = server.output()
    assert output.count(WARNING) == 1
    assert "the proxy on the socket sent no x-forwarded-for naming the client" in output


OPEN_SOCKET = "is open to every local user"


@pytest.mark.parametrize("directory_mode", [0o755, 0o700])
async def test_a_trusted_socket_open_to_every_user_is_warned_of_once(
    tmp_path: Path, socket_dir: Path, upstream: UpstreamServer, directory_mode: int
) -> None:
    """``uvicorn --uds`` makes its socket 0666: with ``unix:`` trusted, one WARNING (the first handshake, per
    worker) that any local user can forge the client, and the remedy; none when its directory keeps them out."""
    os.chmod(socket_dir, directory_mode)
    config = {"trusted_proxies": ["unix:"],
              "apis": [_api(upstream, "filtered", [{"ip-filter": {"allow": ["203.0.113.0/24"]}}])]}  # fmt: skip
    sock = socket_dir / "gw.sock"
    with _uvicorn_on_socket(tmp_path, sock, config) as server:
        for _ in range(2):
            assert await _status(sock, "/ws/filtered", {"X-Forwarded-For": "203.0.113.7"}) == 101
        server.stop()
        output = server.output()
    if directory_mode == 0o755:
        assert output.count(OPEN_SOCKET) == 1
        assert f"the Unix socket {sock} is open to every local user (mode 0666" in output
        assert "chmod 660 with the proxy's group" in output
    else:
        assert OPEN_SOCKET not in output
    assert "Traceback" not in output
