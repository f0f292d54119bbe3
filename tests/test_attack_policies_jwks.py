"""Attacks on ``validate-jwt`` from a hostile JWKS host and from clients, through real uvicorn.

The identity provider is a peer like any other: it may be slow, send its head a byte at a time,
redirect, send too much, nest too deep, or fail. None of it may cost the gateway more than
``jwks_timeout`` per fetch, reach another identity provider's keys, or take keys from anywhere but
the configured URL. Clients may send made-up ``kid`` values (one refresh per
``jwks_min_refresh_interval``, shared), or keys of their own in the token's header (never used).
Real uvicorn, a real upstream, raw HTTP servers on 127.0.0.1 for the JWKS hosts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies.jwks import MAX_JWKS_KEYS
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import api_entry, write_config
from support.jwts import JwksServer, signing_key, token
from support.processes import standalone
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HostileJwks:
    """A raw HTTP server on 127.0.0.1 answering every request with ``handler``; counts connections
    and the ones whose reader hung up (``hung_up``)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.hung_up = 0
        self.port = 0
        self.paths: list[str] = []  # the path of each request, in order
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._hangups = asyncio.Condition()

    def url(self, path: str = "/jwks.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.paths.append(head.split(b" ", 2)[1].decode())
            await self.handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            async with self._hangups:
                self.hung_up += 1
                self._hangups.notify_all()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def all_hung_up(self, count: int, within: float = 10.0) -> bool:
        """Whether ``count`` readers hung up within ``within`` seconds (generous: "promptly")."""
        async with asyncio.timeout(within), self._hangups:
            await self._hangups.wait_for(lambda: self.hung_up >= count)
        return True

    async def start(self) -> HostileJwks:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):  # a reader that never hung up (the old threads) is let go
            writer.transport.abort()


@pytest.fixture
async def hostile_jwks() -> AsyncIterator[Callable[[Handler], Awaitable[HostileJwks]]]:
    started: list[HostileJwks] = []

    async def start(handler: Handler) -> HostileJwks:
        server = await HostileJwks(handler).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def _until_hung_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: bytes) -> None:
    """Write ``chunk`` every 0.1 s until the reader hangs up (an OSError ends it)."""
    while True:
        writer.write(chunk)
        await writer.drain()
        if reader.at_eof():
            raise ConnectionResetError
        await asyncio.sleep(0.1)


async def trickle_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A status line, then one header's value a byte at a time, never ending the head."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: ")
    await _until_hung_up(reader, writer, b"a")


def _answer(status: str, body: bytes = b"", headers: bytes = b"") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n".encode()
                     + headers + b"\r\n" + body)  # fmt: skip
        await writer.drain()

    return handler


def _policy(jwks_url: str, **settings: Any) -> dict[str, Any]:
    return {"validate-jwt": {"algorithms": ["ES256"], "jwks_url": jwks_url, "issuer": "https://issuer.test",
                             "audience": "chat", "jwks_timeout": 0.3, **settings}}  # fmt: skip


def _bearer(raw: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {raw}"}}


async def _admitted(url: str, raw: str) -> None:
    async with await connect(url, **_bearer(raw)) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


# -- the JWKS host ---------------------------------------------------------------------------------


async def test_jwks_hosts_that_never_end_their_head_cannot_starve_another_issuers_fetch(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, hostile_jwks: Callable[[Handler], Awaitable[HostileJwks]]
) -> None:
    """Before, each fetch ran in a thread of the event loop's default executor (``cpu_count + 4`` of
    them), and urllib's timeout bounds each socket read: a host sending its head a byte at a time
    held its thread for good. With as many such fetches as threads, another API's identity provider
    was never fetched again (503 for every token), nor was anything else run there (upstream DNS
    lookups under asyncio's loop). Now each fetch ends at ``jwks_timeout`` with its connection."""
    slow = await hostile_jwks(trickle_head)
    threads = min(32, (os.cpu_count() or 1) + 4) + 1  # the default executor's size, and one more
    apis = [api_entry(upstream, name=f"slow{i}", path=f"/ws/slow{i}", policies=[_policy(slow.url(f"/k{i}"))])
            for i in range(threads)]  # fmt: skip
    key = signing_key("ES256")
    with JwksServer(key) as healthy:
        apis.append(api_entry(upstream, name="chat", path="/ws/chat", policies=[_policy(healthy.url)]))
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": apis}))
        raw = token(key)
        statuses = await asyncio.gather(*(expect_status(server.url(f"/ws/slow{i}"), **_bearer(raw))
                                          for i in range(threads)))  # fmt: skip
        assert [status for status, _, _ in statuses] == [503] * threads
        # Every fetch hung up on the slow host (before: none did, each thread still reading its head).
        assert await slow.all_hung_up(threads)
        await _admitted(server.url("/ws/chat"), raw)
        assert healthy.requests == 1


@pytest.mark.parametrize(
    "location",
    ["http://localhost:{port}/.well-known/jwks.json", "/keys", "file:///etc/passwd",
     "ftp://127.0.0.1:{port}/jwks.json", "/jwks.json"],
    ids=["another-host", "same-host", "file", "ftp", "loop"],
)  # fmt: skip
async def test_a_redirecting_jwks_host_gives_no_keys_and_is_named_in_the_log(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    hostile_jwks: Callable[[Handler], Awaitable[HostileJwks]],
    caplog: pytest.LogCaptureFixture,
    location: str,
) -> None:
    """Before, urllib followed redirects: to another host, to another path (and from https:// to
    http://), whose keys it trusted: those two cases admitted a token signed with the key the
    target served; to ftp://, where it waited for the "FTP server" (the target's HTTP port) until
    jwks_timeout. A redirect to file: or in a loop was urllib's error already (503 then too, the
    log line another: all 5 fail before). Now the keys come from the configured URL or from
    nowhere: 503, a WARNING saying why, the target never asked."""
    key = signing_key("ES256")
    keys = json.dumps({"keys": [key.jwk()]}).encode()
    with JwksServer(key) as target:
        redirect = f"Location: {location.format(port=target.url.split(':')[2].split('/')[0])}\r\n".encode()
        redirector: HostileJwks

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if redirector.paths[-1] == "/keys":  # the same host's other path: the keys themselves
                await _answer("200 OK", keys)(reader, writer)
            else:
                await _answer("302 Found", headers=redirect)(reader, writer)

        redirector = await hostile_jwks(answer)
        config = {"apis": [api_entry(upstream, policies=[_policy(redirector.url())])]}
        server = uvicorn_server(WebSocketGateway(not_found, config=config))
        status, _, _ = await expect_status(server.url("/ws/echo"), **_bearer(token(key)))
        assert status == 503
        assert (target.requests, redirector.paths) == (0, ["/jwks.json"])
        lines = [r.getMessage() for r in caplog.records if "fetch failed" in r.getMessage()]
        assert lines and "302, a redirect to" in lines[0] and "redirects are not followed" in lines[0]


@pytest.mark.parametrize(
    "handler",
    [
        _answer("200 OK", b"[" * 500_000 + b"]" * 500_000),  # nested deeper than any parser recurses
        _answer("500 Internal Server Error", b'{"keys": []}'),
        _answer("200 OK", b"\x00\xff garbage"),
        _answer("200 OK", b'{"keys": "not a list"}'),
        _answer("200 OK", json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": 1, "y": []}]}).encode()),
    ],
    ids=["nested", "5xx", "garbage", "not-jwks", "bad-key"],
)
async def test_a_broken_jwks_document_is_a_503_and_one_warning(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    hostile_jwks: Callable[[Handler], Awaitable[HostileJwks]],
    caplog: pytest.LogCaptureFixture,
    handler: Handler,
) -> None:
    """Held before: what a JWKS host sends is parsed within bounds (no RecursionError, no 500)."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    host = await hostile_jwks(handler)
    config = {"apis": [api_entry(upstream, policies=[_policy(host.url())])]}
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    status, _, body = await expect_status(server.url("/ws/echo"), **_bearer(token(signing_key("ES256"))))
    assert status in (401, 503)  # a document without a usable key: no key matches (401)
    assert b"Traceback" not in body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_jwks_listing_more_keys_than_any_issuer_is_refused_whole(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, hostile_jwks: Callable[[Handler], Awaitable[HostileJwks]],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Before, a document of 5,000 keys (under 1 MiB) was parsed whole on the event loop (~0.3 s, at
    every refresh an unknown kid may trigger) and each handshake scanned every key: it was admitted.
    Now more than MAX_JWKS_KEYS entries fail the fetch (cached keys stay in use; none: 503)."""
    key = signing_key("ES256")
    entries = [key.jwk()] + [{**key.jwk(), "kid": f"k{i}"} for i in range(MAX_JWKS_KEYS)]
    host = await hostile_jwks(_answer("200 OK", json.dumps({"keys": entries}).encode()))
    config = {"apis": [api_entry(upstream, policies=[_policy(host.url())])]}
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    status, _, _ = await expect_status(server.url("/ws/echo"), **_bearer(token(key)))
    assert status == 503
    assert any(f"lists {MAX_JWKS_KEYS + 1} keys, more than {MAX_JWKS_KEYS}" in r.getMessage() for r in caplog.records)


async def test_a_jwks_body_past_1_mib_is_refused_without_reading_the_rest(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, hostile_jwks: Callable[[Handler], Awaitable[HostileJwks]],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Held before: a body that never ends is read to 1 MiB, then the connection is dropped."""

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        await _until_hung_up(reader, writer, b" " * 256 * 1024)

    host = await hostile_jwks(endless)
    config = {"apis": [api_entry(upstream, policies=[_policy(host.url(), jwks_timeout=5)])]}
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    status, _, _ = await expect_status(server.url("/ws/echo"), **_bearer(token(signing_key("ES256"))))
    assert status == 503
    assert any("too large" in r.getMessage() for r in caplog.records)
    assert await host.all_hung_up(1)


def _private_jwk() -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
    return {**entry, "kid": "leaked"}


_ON_CURVE = signing_key("ES256").jwk()
BAD_ENTRIES: dict[str, dict[str, Any]] = {
    "off-curve": {**_ON_CURVE, "kid": "bad", "y": _ON_CURVE["x"]},
    "no-kty": {"kid": "bad", "n": "AQAB", "e": "AQAB"},
    "alg-list": {**_ON_CURVE, "kid": "bad", "alg": ["ES256"]},
    "private": _private_jwk(),
    "kid-object": {**_ON_CURVE, "kid": {"k": 1}},
    "forged-log-line": {"kty": "X\nERROR forged line", "kid": "bad\nERROR forged line"},
}


@pytest.mark.parametrize("bad", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
async def test_a_key_entry_the_gateway_cannot_read_is_skipped_alone(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, hostile_jwks: Callable[[Handler], Awaitable[HostileJwks]],
    caplog: pytest.LogCaptureFixture, bad: dict[str, Any],
) -> None:  # fmt: skip
    """Before, one such entry failed the whole document: a first fetch gave no keys (503 for every
    token; a private key: a 500, AttributeError on ``public_bytes``), and a refresh failed for as long
    as the issuer published it, so a key it had revoked stayed trusted and its new key was refused.
    Now the entry is skipped with a WARNING and the rest of the set is used (5 of 5 fail before;
    the object kid for want of the WARNING only: it was kept, a key no token could name)."""
    old, new = signing_key("ES256"), signing_key("ES256", kid="rotated")
    document = {"keys": [bad, old.jwk()]}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer("200 OK", json.dumps(document).encode())(reader, writer)

    host = await hostile_jwks(serve)
    config = {"apis": [api_entry(upstream, policies=[_policy(host.url(), jwks_min_refresh_interval=0)])]}
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    await _admitted(server.url("/ws/echo"), token(old))
    document["keys"] = [bad, new.jwk()]  # the issuer rotates: the old key is revoked
    await _admitted(server.url("/ws/echo"), token(new))  # an unknown kid: a refresh, at once (interval 0)
    assert (await expect_status(server.url("/ws/echo"), **_bearer(token(old))))[0] == 401
    warnings = [r.getMessage() for r in caplog.records if "key(s) skipped" in r.getMessage()]
    assert warnings and all(w.startswith("JWKS: 1 key(s) skipped, the others in use: ") for w in warnings)
    assert not any("\n" in r.getMessage() for r in caplog.records)  # what the host wrote is quoted


async def test_the_standalone_gateway_fetches_keys_and_hangs_up_on_a_slow_host(
    upstream: UpstreamServer, hostile_jwks: Callable[[Handler], Awaitable[HostileJwks]], tmp_path: Path
) -> None:
    """``asgi-ws-gateway run`` (uvloop, its own process): the event-loop fetch gets a healthy host's
    keys, and hangs up on a host that never ends its head at jwks_timeout."""
    key = signing_key("ES256")
    slow = await hostile_jwks(trickle_head)
    with JwksServer(key) as healthy:
        apis = [api_entry(upstream, name="slow", path="/ws/slow", policies=[_policy(slow.url())]),
                api_entry(upstream, name="chat", path="/ws/chat", policies=[_policy(healthy.url)])]  # fmt: skip
        async with standalone(write_config(tmp_path, {"apis": apis})) as gateway:
            assert (await expect_status(gateway.ws("/ws/slow"), **_bearer(token(key))))[0] == 503
            await _admitted(gateway.ws("/ws/chat"), token(key))
            assert await slow.all_hung_up(1)


# -- what clients send -----------------------------------------------------------------------------


async def test_a_flood_of_made_up_kids_costs_one_refresh(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """Held before: concurrent handshakes with unknown ``kid`` values, the gateway's first, share one
    fetch, and none refreshes again before ``jwks_min_refresh_interval``."""
    key = signing_key("ES256")
    with JwksServer(key) as jwks:
        # (jwks_timeout: the one fetch within 0.3 s failed once under load, a 503 for all 40: not what is tested)
        policy = _policy(jwks.url, jwks_min_refresh_interval=60, jwks_timeout=5)
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api_entry(upstream, policies=[policy])]}))
        forged = [jwt.encode({"sub": "x"}, key.private, algorithm="ES256", headers={"kid": secrets.token_hex(8)})
                  for _ in range(40)]  # fmt: skip
        statuses = await asyncio.gather(*(expect_status(server.url("/ws/echo"), **_bearer(raw)) for raw in forged))
        assert {status for status, _, _ in statuses} == {401}
        await _admitted(server.url("/ws/echo"), token(key))
        assert jwks.requests == 1


@pytest.mark.parametrize("header", ["jwk", "jku", "x5u", "x5c"])
async def test_keys_a_token_carries_or_points_to_are_never_used(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, header: str
) -> None:
    """Held before: a token signed with the client's own key, which its header embeds (``jwk``,
    ``x5c``) or points to (``jku``, ``x5u``: a JWKS the client serves), is refused, and the client's
    JWKS is never fetched."""
    issuer_key = signing_key("ES256")
    own = signing_key("ES256", kid="attacker")
    with JwksServer(issuer_key) as jwks, JwksServer(own) as attackers:
        pointers: dict[str, Any] = {"jwk": own.jwk(), "jku": attackers.url, "x5u": attackers.url,
                                    "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}  # fmt: skip
        config = {"apis": [api_entry(upstream, policies=[_policy(jwks.url)])]}
        server = uvicorn_server(WebSocketGateway(not_found, config=config))
        claims = {"iss": "https://issuer.test", "aud": "chat", "sub": "admin", "exp": 4102444800}
        headers = {"kid": issuer_key.kid, header: pointers[header]}
        raw = jwt.encode(claims, own.private, algorithm="ES256", headers=headers)
        status, _, _ = await expect_status(server.url("/ws/echo"), **_bearer(raw))
        assert status == 401
        assert attackers.requests == 0


@pytest.mark.parametrize("crit", [["exp-ext"], ["b64"], [], "exp-ext"], ids=["unknown", "b64", "empty", "not-a-list"])
async def test_a_token_with_critical_extensions_is_refused(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, crit: object
) -> None:
    """RFC 7515 §4.1.11: a token naming extensions the recipient does not implement MUST be refused.
    pyjwt before 2.12 (the floor allowed 2.8) ignored ``crit``, and the gateway admitted such a token
    (run with pyjwt 2.11 before the fix, cases fail; pyjwt 2.12 and later refuse it themselves)."""
    key = signing_key("ES256")
    with JwksServer(key) as jwks:
        config = {"apis": [api_entry(upstream, policies=[_policy(jwks.url)])]}
        server = uvicorn_server(WebSocketGateway(not_found, config=config))
        claims = {"iss": "https://issuer.test", "aud": "chat", "sub": "alice", "exp": 4102444800}
        raw = jwt.encode(claims, key.private, algorithm="ES256", headers={"kid": key.kid, "crit": crit, "exp-ext": 1})
        status, headers, _ = await expect_status(server.url("/ws/echo"), **_bearer(raw))
        assert (status, headers["www-authenticate"]) == (401, 'Bearer error="invalid_token"')


async def test_each_policy_naming_a_jwks_url_gets_its_own_refresh_settings(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """Before, the key cache was shared by URL with the first policy's settings: the second API's
    ``jwks_min_refresh_interval: 0`` (take a rotated key at once) was the first's 60, and a token
    signed with the new key was refused (401) until then. Policies with the same settings share."""
    old, new = signing_key("ES256"), signing_key("ES256", kid="rotated")
    with JwksServer(old) as jwks:
        apis = [api_entry(upstream, name="slow", path="/ws/slow",
                          policies=[_policy(jwks.url, jwks_min_refresh_interval=60)]),
                api_entry(upstream, name="eager", path="/ws/eager",
                          policies=[_policy(jwks.url, jwks_min_refresh_interval=0)]),
                api_entry(upstream, name="eager2", path="/ws/eager2",
                          policies=[_policy(jwks.url, jwks_min_refresh_interval=0)])]  # fmt: skip
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": apis}))
        for path in ("/ws/slow", "/ws/eager", "/ws/eager2"):
            await _admitted(server.url(path), token(old))
        jwks.keys = [old, new]  # the issuer rotates
        await _admitted(server.url("/ws/eager"), token(new))
        assert (await expect_status(server.url("/ws/slow"), **_bearer(token(new))))[0] == 401  # its 60 s
        assert jwks.requests == 3  # one fetch per setting (not per policy), and eager's refresh


@pytest.mark.parametrize("iss", ["https://issuer.te", "issuer", "https://issuer.test/", ""], ids=repr)
async def test_an_issuer_that_is_part_of_the_configured_one_is_refused(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, iss: str
) -> None:
    """pyjwt 2.10.0 tested ``iss in issuer`` on the configured string (CVE-2024-53861): any part of it
    passed. The floor allowed 2.10.0; it is 2.14.0 now (with 2.10.0 on the path, 3 of 4 fail)."""
    key = signing_key("ES256")
    policy = {"validate-jwt": {"algorithms": ["ES256"], "public_keys": [key.public_pem],
                               "issuer": "https://issuer.test", "audience": "chat"}}  # fmt: skip
    config = {"apis": [api_entry(upstream, policies=[policy])]}
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    status, _, body = await expect_status(server.url("/ws/echo"), **_bearer(token(key, iss=iss)))
    assert (status, json.loads(body)["detail"]) == (401, "the token is from another issuer")
