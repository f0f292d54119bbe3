"""``asgi-ws-gateway connect`` sends no credential in clear beyond this host.

Over plain ``ws://`` to a host that is not loopback, ``--token``, ``--subscription-key``, credential
``-H`` headers, ``-s`` offers and the URL's own credentials went out without a word, where the
management commands refuse plain ``http://`` unless ``--allow-insecure-http``. Now both follow one
rule (``client_endpoint.refuse_in_clear``): refused, exit 2, the message naming what and the flag.

Some hosts the rule reads as beyond this host reach 127.0.0.1 all the same (``127.1``, ``0x7f.1``,
``2130706433``, ``0.0.0.0``: the resolver's lenient parsing); a real listener on 127.0.0.1 proves
nothing is sent to them, not even a TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from asgi_ws_gateway.management import ManagementClient
from asgi_ws_gateway.management.connect_credentials import refuse_credentials_in_clear
from support.processes import EXE, cli_env

SECRET = "S3CRET-CREDENTIAL-VALUE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


async def connect(url: str, *args: str) -> tuple[int, str, str]:
    """``asgi-ws-gateway connect URL ARGS`` with no input; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(EXE), "connect", url, "--linger", "0", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Listener:
    """A TCP listener on 127.0.0.1 that notes, in order, the client port of every connection it accepts."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[int] = asyncio.Queue()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.put_nowait(writer.get_extra_info("peername")[1])
        writer.close()

    async def nothing_arrived(self) -> bool:
        """Whether no connection came before this one: the kernel hands over connections in order."""
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        mine: int = writer.get_extra_info("sockname")[1]
        try:
            first: int = await self.accepted.get()
            return first == mine
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[Listener]:
    listening = Listener()
    server = await asyncio.start_server(listening.handle, "127.0.0.1", 0)
    async with server:
        listening.port = server.sockets[0].getsockname()[1]
        yield listening


# How each credential is given: (connect's arguments, the URL's userinfo, the URL's path and query).
CREDENTIALS = {
    "--token": (["--token", SECRET], "", "/ws"),
    "--subscription-key, any --key-header": (["--subscription-key", SECRET, "--key-header", "X-Tenant"], "", "/ws"),
    "-H Authorization": (["-H", f"Authorization: Bearer {SECRET}"], "", "/ws"),
    "-H Cookie": (["-H", f"Cookie: session={SECRET}"], "", "/ws"),
    "-H X-Api-Key": (["-H", f"X-Api-Key: {SECRET}"], "", "/ws"),
    "-H any name, a Bearer value": (["-H", f"X-Custom: Bearer {SECRET}"], "", "/ws"),
    "-H any name, a JWT": (["-H", f"X-Custom: {JWT}"], "", "/ws"),
    "-s subprotocol token": (["-s", f"bearer.{SECRET}"], "", "/ws"),
    "-s Bearer prefix": (["-s", "chat.v1", "-s", f"Bearer.{SECRET}"], "", "/ws"),
    "-s access_token prefix": (["-s", f"access_token.{SECRET}"], "", "/ws"),
    "-s a JWT": (["-s", f"x.{JWT}"], "", "/ws"),
    "-s Kubernetes' bearer": (["-s", f"base64url.bearer.authorization.k8s.io.{SECRET}"], "", "/ws"),
    "query access_token": ([], "", f"/ws?room=1&access_token={SECRET}"),
    "query encoded name": ([], "", f"/ws?access%5Ftoken={SECRET}"),
    "query JWT any name": ([], "", f"/ws?t={JWT}"),
    "userinfo": ([], f"user:{SECRET}@", "/ws"),
    "JWT in the path": ([], "", f"/ws/{JWT}"),
}


@pytest.mark.parametrize(("args", "userinfo", "target"), CREDENTIALS.values(), ids=CREDENTIALS.keys())
async def test_every_credential_in_clear_is_refused_unsent(args: list[str], userinfo: str, target: str) -> None:
    """Each went to the host as given; now exit 2, the secret not echoed, no connection made."""
    async with listener() as listening:
        code, out, err = await connect(f"ws://{userinfo}127.1:{listening.port}{target}", *args)
        assert await listening.nothing_arrived()
    assert (code, out) == (2, "")
    refusal = err.splitlines()[-1]  # after --token's warning
    assert refusal.startswith("error: refusing to send ") and refusal.endswith("(--allow-insecure-http)")
    assert SECRET not in err and JWT not in err


@pytest.mark.parametrize("host", ["127.1", "0x7f.1", "2130706433", "0177.0.0.1", "0.0.0.0"])
async def test_a_host_spelled_otherwise_than_loopback_is_beyond_this_host(host: str) -> None:
    """The rule reads addresses strictly; these reach 127.0.0.1 through the resolver, and get nothing."""
    async with listener() as listening:
        code, _, err = await connect(f"ws://{host}:{listening.port}/ws", "--token", SECRET)
        assert await listening.nothing_arrived()
    assert code == 2 and f"over plain ws to {host}, beyond this host" in err


async def test_the_token_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SECRET + "\n")
    async with listener() as listening:
        code, _, err = await connect(f"ws://127.1:{listening.port}/ws", "--token-file", str(tmp_path / "token"))
        assert await listening.nothing_arrived()
    assert code == 2 and SECRET not in err


async def test_the_refusal_names_what_and_the_flag() -> None:
    code, out, err = await connect(
        "ws://10.0.0.5:8000/ws?access_token=x", "--token", SECRET, "--subscription-key", "k", "-H", "X-Api-Key: k"
    )
    assert (code, out) == (2, "")
    assert err == "warning: --token is in every user's ps: use --token-file\n" + (
        "error: refusing to send the token, --subscription-key, query parameter access_token, header X-Api-Key"
        " over plain ws to 10.0.0.5, beyond this host:"
        " use wss://, or allow plain ws explicitly (--allow-insecure-http)\n"
    )


@contextlib.asynccontextmanager
async def echo_headers(host: str = "127.0.0.1") -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """A WebSocket server that notes each handshake's headers; yields its port and the notes."""
    seen: list[dict[str, str]] = []

    async def note(ws: ServerConnection) -> None:
        seen.append(dict(ws.request.headers) if ws.request else {})
        await ws.wait_closed()

    async with serve(note, host, 0) as server:
        yield server.sockets[0].getsockname()[1], seen


async def test_allow_insecure_http_sends_them() -> None:
    """The same handshake as refused above, allowed: what the listener would have seen."""
    async with echo_headers() as (port, seen):
        code, _, err = await connect(f"ws://127.1:{port}/ws", "--token", SECRET, "--allow-insecure-http")
    assert (code, err) == (0, "warning: --token is in every user's ps: use --token-file\n")
    assert [headers.get("authorization") for headers in seen] == [f"Bearer {SECRET}"]


async def test_no_credential_is_no_refusal() -> None:
    """Plain ws:// beyond this host with nothing secret (an Origin header, a room in the query) connects."""
    async with echo_headers() as (port, seen):
        code, _, _ = await connect(f"ws://127.1:{port}/ws?room=5", "-H", "Origin: http://example.com")
    assert code == 0 and len(seen) == 1


@pytest.mark.parametrize(
    ("host", "bind"),
    [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), ("LOCALHOST", "127.0.0.1"),
     ("[::ffff:127.0.0.1]", "127.0.0.1"), ("[::1]", "::1")],
)  # fmt: skip
async def test_loopback_gets_the_credentials_without_the_flag(host: str, bind: str) -> None:
    """``[::ffff:127.0.0.1]`` is loopback: the kernel takes it to 127.0.0.1 (the listener there answers)."""
    async with echo_headers(bind) as (port, seen):
        code, _, _ = await connect(f"ws://{host}:{port}/ws", "--token", SECRET)
    assert code == 0 and [headers.get("authorization") for headers in seen] == [f"Bearer {SECRET}"]


# -- the rule itself: one for the management commands (http) and connect (ws) --

THIS_HOST = ["localhost", "LOCALHOST", "127.0.0.1", "127.255.255.254", "[::1]", "[0:0:0:0:0:0:0:1]",
             "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"]  # fmt: skip
BEYOND = ["localhost.", "foo.localhost", "localhost.evil.com", "127.0.0.1.nip.io", "0x7f.1", "0x7f000001",
          "127.1", "2130706433", "0177.0.0.1", "0.0.0.0", "[::]", "10.0.0.5", "[::ffff:10.0.0.5]",
          "[64:ff9b::7f00:1]", "[fe80::1]"]  # fmt: skip


def _refused(url: str) -> bool:
    try:
        if url.startswith("ws"):
            refuse_credentials_in_clear(url, named=["the token"])
        else:
            ManagementClient(url, token="t" * 32)
    except ValueError as exc:
        assert "--allow-insecure-http" in str(exc)
        return True
    return False


@pytest.mark.parametrize("host", THIS_HOST)
def test_this_host_may_be_sent_credentials_in_clear(host: str) -> None:
    assert not _refused(f"ws://{host}:1/ws") and not _refused(f"http://{host}:1/_gateway")


@pytest.mark.parametrize("host", BEYOND)
def test_beyond_this_host_credentials_in_clear_are_refused(host: str) -> None:
    """A trailing dot, a subdomain, a name whose DNS says 127.0.0.1, a legacy or NAT64 spelling: beyond."""
    assert _refused(f"ws://{host}:1/ws") and _refused(f"http://{host}:1/_gateway")
    assert not _refused(f"wss://{host}:1/ws")
    refuse_credentials_in_clear(f"ws://{host}:1/ws", named=["the token"], allow_insecure_http=True)


@pytest.mark.parametrize("offers", [["chat.v1"], ["graphql-ws", "graphql-transport-ws"], ["v2.json"]])
def test_a_subprotocol_without_a_token_is_no_credential(offers: list[str]) -> None:
    refuse_credentials_in_clear("ws://10.0.0.5:8000/ws", subprotocols=offers)
