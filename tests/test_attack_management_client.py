"""The management SDK and command line against a hostile or compromised management endpoint.

A server (or a proxy, or a peer on the path) answers with redirects, HTML pages, bodies of another
shape, trickled bytes, gzip bombs and endless bodies. Only the success each call expects is success;
every other answer is one clear error (no traceback), within one deadline and a size bound; the
admin token is checked before it is sent, never quoted, and never sent where it should not go.
Real sockets on 127.0.0.1: raw asyncio servers, and a real ``asgi-ws-gateway run --management``.

Where a case reads only what the command answers for one input, ``cli.main`` (the console script's
function) answers it in this process; a case or two per test runs the real command line, for its wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
import websockets.asyncio.server

from asgi_ws_gateway.management import ManagementAPIError, ManagementClient
from support.management import TOKEN
from support.processes import EXE, Cli, Standalone, cli, cli_env, in_process_cli, standalone
from support.tls import make_ca

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(status: str, body: bytes = b"", *headers: str, ctype: str = "application/json") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body


@contextlib.asynccontextmanager
async def raw_server(handler: Handler | bytes) -> AsyncIterator[str]:
    """A server on 127.0.0.1 that reads a request head and runs ``handler`` (or writes those bytes);
    yields its management base URL."""

    handlers: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a handler runs as a task
        handlers.add(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = [
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            ]
            if length:
                await reader.readexactly(length[0])
            if isinstance(handler, bytes):
                writer.write(handler)
                await writer.drain()
            else:
                await handler(reader, writer)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/_gateway"
        finally:  # a trickling handler never ends by itself
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)


@contextlib.asynccontextmanager
async def hostile_client(handler: Handler | bytes, **options: Any) -> AsyncIterator[ManagementClient]:
    """The SDK against :func:`raw_server`."""
    async with raw_server(handler) as base, ManagementClient(base, token=TOKEN, **options) as client:
        yield client


@pytest.fixture
def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """:func:`cli` answered by ``cli.main`` in this process (:func:`support.processes.in_process_cli`)."""
    return in_process_cli(capsys, monkeypatch)


def _cases(cases: dict[str, Any], processes: set[str]) -> list[Any]:
    """Every case answered in this process (``as_process`` False), those named in ``processes`` by a process too."""
    rows = {name: case if isinstance(case, tuple) else (case,) for name, case in cases.items()}
    return [pytest.param(*row, False, id=name) for name, row in rows.items()] + [
        pytest.param(*row, True, id=f"{name}-process") for name, row in rows.items() if name in processes
    ]


# The tests against a real gateway share one: none changes what it serves (each is refused before anything
# is sent, or only reads), and its start was the most of their time.
ON_THE_GATEWAYS_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Standalone]:
    config = tmp_path_factory.mktemp("management-client") / "gateway.yaml"
    config.write_text("apis:\n  - name: echo\n    path: /ws/echo\n    upstreams: ['ws://127.0.0.1:9/']\n")
    async with standalone(config) as running:
        yield running


# -- F1: only the 2xx each call expects is success --

NGINX_301 = answer(
    "301 Moved Permanently", b"<html>moved</html>", "Location: https://gw.example/_gateway/x", ctype="text/html"
)
SSO_PAGE = answer("200 OK", b"<html><form action=/login>", ctype="text/html")


REDIRECTED = {" ".join(command): command for command in (["subscriptions", "delete", "s1"], ["apis", "delete", "chat"],
              ["subscriptions", "delete", "s1", "--drain"], ["products", "delete", "p"])}  # fmt: skip


@pytest.mark.parametrize(("command", "as_process"), _cases(REDIRECTED, {"subscriptions delete s1"}))
async def test_a_redirect_is_an_error_naming_where_it_points(
    in_process: Cli, command: list[str], as_process: bool
) -> None:
    """A 301 to https in front of the API: ``subscriptions delete`` exited 0 having deleted nothing."""
    async with raw_server(NGINX_301) as base:
        code, out, err = await (cli if as_process else in_process)(*command, "--url", base)
    assert code == 1 and out == ""
    assert err == "error: the management API redirected (301) to https://gw.example/_gateway/x: use that URL (--url)\n"


async def test_a_login_page_answered_200_is_not_success() -> None:
    """An SSO proxy's 200 text/html page: ``subscriptions delete`` exited 0."""
    async with raw_server(SSO_PAGE) as base:
        code, _, err = await cli("subscriptions", "delete", "s1", "--url", base)
    assert code == 1 and err.startswith("error: unexpected answer from the management API (200): not JSON")


async def test_a_success_the_call_does_not_expect_is_an_error() -> None:
    """A create answered 200 (not 201), a deletion 202: neither did what the call asks."""
    async with hostile_client(answer("200 OK", b'{"id": "s1", "product": "p"}')) as client:
        with pytest.raises(ManagementAPIError, match="answered 200 where 201 was expected"):
            await client.create_subscription("p")
    async with hostile_client(answer("202 Accepted")) as client:
        with pytest.raises(ManagementAPIError, match="answered 202 where 200 or 204 was expected"):
            await client.delete_subscription("s1")


async def test_the_sdk_reports_a_redirect_with_its_location() -> None:
    async with hostile_client(answer("307 Temporary Redirect", b"", "Location: http://127.0.0.1:1/console")) as client:
        with pytest.raises(ManagementAPIError) as caught:
            await client.delete_api("echo")
    assert caught.value.status == 307 and getattr(caught.value, "location", None) == "http://127.0.0.1:1/console"


@ON_THE_GATEWAYS_LOOP
async def test_a_url_with_a_query_is_refused_and_nothing_is_deleted(gateway: Standalone) -> None:
    """``--url 'http://.../_gateway?tenant=a'``: the gateway answered 307 to its console; the CLI exited 0."""
    for command in (["apis", "delete", "echo"], ["subscriptions", "delete", "s1"]):
        code, _, err = await cli(*command, "--url", gateway.url + "?tenant=a")
        assert code == 2 and "must not have a query (?...) or fragment (#...)" in err
    code, _, err = await cli("apis", "delete", "echo", "--url", gateway.url + "#x")
    assert code == 2
    assert [api["name"] for api in await gateway.client.list_apis()] == ["echo"]


REFUSED_URLS = {url: url for url in ["http://proxyuser:proxypw@127.0.0.1:1/_gateway",
                "https://ops:Pr0xyP4ss/word@gw.example.com/_gateway", "http://ops:Pr0xyP4ss@127.0.0.1:1/_gateway",
                "http://[::1/_gateway", "ftp://127.0.0.1/_gateway"]}  # fmt: skip


@pytest.mark.parametrize(
    ("url", "as_process"), _cases(REFUSED_URLS, {"https://ops:Pr0xyP4ss/word@gw.example.com/_gateway"})
)
async def test_a_url_with_userinfo_or_unparseable_is_refused_without_echoing_it(
    in_process: Cli, url: str, as_process: bool
) -> None:
    """Userinfo replaced the Bearer token with Basic auth; a password with '/' gave an InvalidURL traceback."""
    with pytest.raises(ValueError) as caught:
        ManagementClient(url, token=TOKEN)
    assert "proxypw" not in str(caught.value) and "Pr0xyP4ss" not in str(caught.value)
    code, out, err = await (cli if as_process else in_process)("apis", "list", "--url", url)
    assert code == 2 and "Traceback" not in err and "proxypw" not in out + err and "Pr0xyP4ss" not in out + err
    assert err.startswith("error: the management API URL") and err.count("\n") == 1


# -- F2: the token checked before it is sent, never echoed --

BAD_TOKENS = {"newline": TOKEN + "\n", "crlf": TOKEN + "\r", "space": TOKEN + " ", "tab": "a\t" + TOKEN,
              "non-ascii": TOKEN + "é", "del": TOKEN + "\x7f", "inner space": TOKEN[:8] + " " + TOKEN[8:]}  # fmt: skip


async def _refused_unsent_and_unquoted(run: Cli, url: str, token: str) -> None:
    code, out, err = await run("apis", "list", "--url", url, ASGI_WS_GATEWAY_ADMIN_TOKEN=token)
    assert code == 2 and out == "" and TOKEN[:8] not in err and err.startswith("error: the admin token has ")
    with pytest.raises(ValueError) as caught:
        ManagementClient(url, token=token)
    assert TOKEN[:8] not in str(caught.value) and "visible ASCII" in str(caught.value)


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_a_token_no_header_can_carry_is_refused_unsent_and_unquoted(in_process: Cli, token: str) -> None:
    """A Kubernetes secret's final newline: "Illegal header value b'Bearer <token>\\n'" (CLI), an SDK
    LocalProtocolError quoting it. Nothing reaches the server."""
    requests: list[bytes] = []

    async def heard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(b"a request")
        writer.write(answer("200 OK", b'{"apis": []}'))
        await writer.drain()

    async with raw_server(heard) as base:
        await _refused_unsent_and_unquoted(in_process, base, token)
    assert requests == []


@ON_THE_GATEWAYS_LOOP
async def test_a_token_no_header_can_carry_is_refused_by_the_command_line(gateway: Standalone) -> None:
    """The same, a process against a running gateway (a token file's final newline)."""
    await _refused_unsent_and_unquoted(cli, gateway.url, BAD_TOKENS["newline"])


@ON_THE_GATEWAYS_LOOP
async def test_a_token_files_final_line_break_is_ignored(gateway: Standalone, tmp_path: Path) -> None:
    """``--token-file`` (F7): the token out of ``ps``; a file's final newline (CRLF too) is not the token's."""
    for ending in ("\n", "\r\n", ""):
        (tmp_path / "token").write_text(TOKEN + ending, newline="")
        code, out, err = await cli(
            "apis",
            "list",
            "--url",
            gateway.url,
            "--token-file",
            str(tmp_path / "token"),
            ASGI_WS_GATEWAY_ADMIN_TOKEN="",
        )
        assert (code, err) == (0, "") and out.splitlines()[1].startswith("echo ")


@ON_THE_GATEWAYS_LOOP
async def test_token_on_the_command_line_is_warned_about(gateway: Standalone) -> None:
    code, _, err = await cli("apis", "list", "--url", gateway.url, "--token", TOKEN, ASGI_WS_GATEWAY_ADMIN_TOKEN="")
    assert (
        code == 0
        and err == "warning: --token is in every user's ps: use --token-file or $ASGI_WS_GATEWAY_ADMIN_TOKEN\n"
    )


# -- F3: one deadline for the whole call --


async def _trickle_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n")
    while True:
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b" ")


async def _trickle_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-A: ")
    while True:
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"a")


@pytest.mark.parametrize("trickle", [_trickle_body, _trickle_head], ids=["body", "head"])
async def test_a_trickled_answer_ends_at_the_timeout(trickle: Handler) -> None:
    """A byte every 0.2 s never tripped the 1 s timeout (it was per read): the call waited for ever."""
    async with hostile_client(trickle, timeout=1) as client:
        async with asyncio.timeout(30):  # the guard: not what is tested
            with pytest.raises(httpx2.TimeoutException, match="no whole answer within 1 s"):
                await client.list_apis()


# -- F4: bounded answers --


def _gzip(inflated_mib: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    return b"".join(compressor.compress(block) for _ in range(inflated_mib)) + compressor.flush()


async def test_a_gzip_bomb_stops_at_the_answer_size_counted_inflated() -> None:
    """~130 KB on the wire inflating to 128 MiB: held whole in memory (1 GiB: 2.1 GB RSS)."""
    async with raw_server(answer("200 OK", _gzip(128), "Content-Encoding: gzip")) as base:
        code, _, err = await cli("apis", "list", "--url", base)
    assert code == 1
    assert err == "error: unexpected answer from the management API (200): the body is larger than 67108864 bytes\n"


# Runs the command line and reports its peak memory (ru_maxrss, KiB on Linux) on standard error's last line.
MEASURED = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


async def _peak_mib(*args: str) -> tuple[int, int]:
    """``asgi-ws-gateway ARGS`` as a process: (exit code, peak memory in MiB)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MEASURED, str(EXE), *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, int(err.decode().split()[-1]) // 1024


@functools.cache
def _bomb(coding: str, inflated_mib: int) -> bytes:
    """``inflated_mib`` MiB of spaces in one gzip or deflate (zlib) stream: about a thousandth of it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if coding == "gzip" else 15)
    block = b" " * (1 << 20)
    return b"".join(compressor.compress(block) for _ in range(inflated_mib)) + compressor.flush()


@pytest.mark.parametrize(("coding", "inflated_mib"), [("gzip", 1024), ("deflate", 256)])
async def test_a_bomb_takes_the_answer_size_in_memory_not_twice(coding: str, inflated_mib: int) -> None:
    """1 MB of gzip inflating to 1 GiB: the first 64 KiB read inflated to 64 MiB at once, then copied
    into the body (measured: 129 MiB over the command's own 37 MiB; now 65 MiB, the body alone)."""
    async with raw_server(answer("200 OK", b'{"apis": []}')) as base:
        code, idle = await _peak_mib("apis", "list", "--url", base)
    assert code == 0
    async with raw_server(answer("200 OK", _bomb(coding, inflated_mib), f"Content-Encoding: {coding}")) as base:
        code, peak = await _peak_mib("apis", "list", "--url", base)
    assert code == 1
    assert peak - idle < 64 + 32, f"{peak} MiB at most, {idle} MiB for a small answer"


@pytest.mark.parametrize("coding", ["identity", "gzip", "deflate"])
async def test_an_answer_of_exactly_the_size_is_read_whole_and_one_byte_more_is_not(coding: str) -> None:
    """Counted as it is inflated, a piece at a time: the limit falls inside a piece."""
    limit = 200_000
    for size, whole in ((limit, True), (limit + 1, False)):
        document = b'{"a": "' + b"x" * (size - 9) + b'"}'
        encoded = document if coding == "identity" else zlib.compress(document, wbits=31 if coding == "gzip" else 15)
        async with hostile_client(
            answer("200 OK", encoded, f"Content-Encoding: {coding}"), max_answer_size=limit
        ) as client:
            if whole:
                assert (await client.export_config())["a"] == "x" * (size - 9)
            else:
                with pytest.raises(ManagementAPIError, match=f"the body is larger than {limit} bytes"):
                    await client.export_config()


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip", "compress"])
async def test_a_coding_not_inflated_bounded_is_refused(coding: str) -> None:
    """The client asks for identity and inflates gzip and deflate itself, bounded: nothing else is read."""
    async with hostile_client(answer("200 OK", b"\x00" * 64, f"Content-Encoding: {coding}")) as client:
        with pytest.raises(ManagementAPIError, match="Content-Encoding is not gzip, deflate or identity"):
            await client.list_apis()


async def test_a_bomb_for_an_error_page_is_read_for_its_start_only() -> None:
    async with hostile_client(answer("500 X", _bomb("gzip", 1024), "Content-Encoding: gzip")) as client:
        with pytest.raises(ManagementAPIError) as caught:
            await client.list_apis()
    assert caught.value.status == 500 and caught.value.detail == " " * 200


ENDLESS = 256 * 1024 * 1024
"""Bytes an "endless" body would send if read whole (past the 64 MiB limit, well within memory)."""


def _endless(status: bytes, sent: list[int]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (1 << 16, b"x" * (1 << 16))
        while sent[0] < ENDLESS:  # unless the client stops reading
            writer.write(chunk)
            await writer.drain()
            sent[0] += 1 << 16
        writer.write(b"0\r\n\r\n")

    return handler


async def test_an_endless_body_stops_at_the_answer_size() -> None:
    """A chunked body of 256 MiB (or without end) was read whole."""
    sent = [0]
    async with hostile_client(_endless(b"200 OK", sent)) as client:
        with pytest.raises(ManagementAPIError, match="the body is larger than 67108864 bytes"):
            await client.export_config()
    assert sent[0] < ENDLESS
    async with hostile_client(_endless(b"200 OK", [0]), max_answer_size=1 << 20) as client:
        with pytest.raises(ManagementAPIError, match="the body is larger than 1048576 bytes"):
            await client.export_config()


async def test_an_error_page_is_read_for_its_start_only() -> None:
    """A 500 page of 512 MiB was read whole for a 200-character excerpt."""
    sent = [0]
    async with hostile_client(_endless(b"500 Internal Server Error", sent)) as client:
        with pytest.raises(ManagementAPIError) as caught:
            await client.delete_subscription("s1")
    assert caught.value.status == 500 and caught.value.detail == "x" * 200
    assert sent[0] < ENDLESS


# -- F5: every answer checked for its shape, no traceback --

HOSTILE_BODIES = {
    "no apis": ('{"nope":1}', ["apis", "list"]),
    "a list": ("[1,2]", ["apis", "list"]),
    "apis 5": ('{"apis":5}', ["apis", "list"]),
    "apis null": ('{"apis":null}', ["apis", "list"]),
    "apis of numbers": ('{"apis":[1,"x"]}', ["apis", "list"]),
    "deep": ("[" * 5000 + "]" * 5000, ["apis", "list"]),
    "deep show": ("[" * 5000 + "]" * 5000, ["apis", "show", "x"]),
    "900 levels show": ('{"name":"x","a":' + "[" * 900 + "]" * 900 + "}", ["apis", "show", "x"]),
    "900 levels export": ('{"a":' + "[" * 900 + "]" * 900 + "}", ["export"]),
    "big int": ('{"name":"x","n":' + "1" * 5001 + "}", ["apis", "show", "x"]),
    "infinity json": ('{"name":"x","x":1e999}', ["apis", "show", "x", "--json"]),
    "nan json": ('{"name":"x","x":NaN}', ["apis", "show", "x", "--json"]),
    "a string": ('"str"', ["apis", "show", "x"]),
    "a number for a subscription": ("5", ["subscriptions", "show", "gold"]),
    "key not a string": ('{"id":"s","key":{"a":1}}', ["subscriptions", "regenerate-key", "s"]),
    "no worker": ("{}", ["connections", "kick", "c1"]),
    "a list for a send": ("[]", ["connections", "send", "c1", "hi"]),
    "warnings 5": ('{"warnings":5}', ["apis", "delete", "x"]),
    "a list for a deletion": ("[1]", ["apis", "delete", "x"]),
    "a row not an object": ('{"subscriptions":[{"id":"a"},[1]]}', ["subscriptions", "list"]),
    "a row without its id": ('{"connections":[{"api":"a"}]}', ["connections", "list"]),
}


@pytest.mark.parametrize(("body", "command", "as_process"), _cases(HOSTILE_BODIES, {"deep", "infinity json"}))
async def test_an_answer_of_another_shape_is_one_clear_error(
    in_process: Cli, body: str, command: list[str], as_process: bool
) -> None:
    """KeyError, TypeError, AttributeError, RecursionError tracebacks; or exit 0 printing nothing or Infinity."""
    async with raw_server(answer("200 OK", body.encode())) as base:
        code, out, err = await (cli if as_process else in_process)(*command, "--url", base)
    assert (code, out) == (1, "") and err.startswith("error: unexpected answer from the management API (200): ")
    assert err.count("\n") == 1 and "Traceback" not in err


async def test_a_body_invalid_in_its_encoding_is_one_clear_error() -> None:
    async with raw_server(answer("200 OK", b"\x1f\x8bnot gzip at all", "Content-Encoding: gzip")) as base:
        code, _, err = await cli("apis", "list", "--url", base)
    assert code == 1 and err == (
        "error: unexpected answer from the management API (200): the body is not valid in its Content-Encoding\n"
    )


HOSTILE_ERRORS = {
    "problems 5": ("500 X", '{"title":"t","detail":"d","problems":5}', 1, "error: 500 t: d\n"),
    "problems an object": ("422 X", '{"title":"t","detail":"d","problems":{"a":1}}', 2, "error: 422 t: d\n"),
    "problems a string": ("422 X", '{"title":"t","detail":"d","problems":"abc"}', 2, "error: 422 t: d\n"),
    "problems null": ("503 X", '{"title":"t","detail":"d","problems":null}', 1, "error: 503 t: d\n"),
    "deep": ("500 X", "[" * 5000 + "]" * 5000, 1, "error: 500 X: " + "[" * 200 + "\n"),
    "title a list": ("404 Gone", '{"title":[1],"detail":{"a":1}}', 3, "error: 404 Gone: \n"),
}


@pytest.mark.parametrize(("status", "body", "exit_code", "printed", "as_process"), _cases(HOSTILE_ERRORS, {"deep"}))
async def test_every_refusal_is_a_management_api_error(
    in_process: Cli, status: str, body: str, exit_code: int, printed: str, as_process: bool
) -> None:
    """``{"problems": null}`` was a TypeError, ``"abc"`` printed per character, deep nesting a RecursionError."""
    async with raw_server(answer(status, body.encode(), ctype="application/problem+json")) as base:
        code, _, err = await (cli if as_process else in_process)("apis", "list", "--url", base)
        async with ManagementClient(base, token=TOKEN) as client:
            with pytest.raises(ManagementAPIError) as caught:
                await client.list_apis()
    assert (code, err) == (exit_code, printed)
    assert caught.value.status == int(status.split()[0]) and all(isinstance(p, str) for p in caught.value.problems)


async def test_invisible_characters_are_escaped_in_tables() -> None:
    """U+200B and U+FEFF were printed raw: ``admin\\u200b`` looked like ``admin``."""
    body = json.dumps({"apis": [{"name": "admin\u200b", "path": "/\ufeffws", "upstreams": ["ws://x\u2060/"]}]})
    async with raw_server(answer("200 OK", body.encode())) as base:
        code, out, _ = await cli("apis", "list", "--url", base)
    assert code == 0 and "admin\\u200b" in out and "/\\ufeffws" in out and "ws://x\\u2060/" in out
    assert all(c.isprintable() for c in out.replace("\n", ""))


# -- F6: no token over plain http beyond this host, unless allowed --


async def test_plain_http_to_another_host_is_refused_unless_allowed() -> None:
    """The token went over plain http to 10.9.9.9 silently."""
    with pytest.raises(ValueError, match=r"refusing to send the admin token over plain http to 10\.0\.0\.5"):
        ManagementClient("http://10.0.0.5:8000/_gateway", token=TOKEN)
    await ManagementClient("http://10.0.0.5:8000/_gateway", token=TOKEN, allow_insecure_http=True).aclose()
    await ManagementClient("http://localhost:8000/_gateway", token=TOKEN).aclose()
    code, _, err = await cli("apis", "list", "--url", "http://10.0.0.5:1/_gateway")
    assert code == 2 and "--allow-insecure-http" in err and TOKEN not in err


# -- F8: connect follows no redirect --


async def test_connect_follows_no_redirect_and_sends_no_credential_elsewhere() -> None:
    """``connect`` re-sent --subscription-key and -H credentials to the other origin, and said it was
    "connected to" the URL it was given."""
    seen: list[dict[str, str]] = []

    async def other(ws: websockets.asyncio.server.ServerConnection) -> None:
        seen.append(dict(ws.request.headers) if ws.request else {})
        await ws.send("hello from the other origin")

    async with websockets.asyncio.server.serve(other, "127.0.0.1", 0) as elsewhere:
        port = elsewhere.sockets[0].getsockname()[1]
        redirect = answer("302 Found", b"", f"Location: ws://127.0.0.1:{port}/elsewhere")
        async with raw_server(redirect) as base:
            url = base.replace("http://", "ws://").replace("/_gateway", "/ws/chat")
            code, out, _ = await cli(
                "connect", url, "--subscription-key", "SUBKEY-SECRET", "-H", "X-Api-Key: APIKEY-SECRET", "--linger", "0"
            )
    assert seen == [] and code == 1
    assert f"! redirected (302) to ws://127.0.0.1:{port}/elsewhere: not followed" in out and "connected" not in out


# -- F9: a private CA --


async def test_cacert_trusts_a_private_ca_and_verification_stays_on(tmp_path: Path) -> None:
    """SSL_CERT_FILE was ignored (trust_env=False) and there was no --cacert: no way to reach a gateway
    whose certificate a private CA signed, but to turn verification off."""
    ca = make_ca(tmp_path)
    body = answer("200 OK", b'{"apis": [{"name": "tls-ok", "path": "/p", "upstreams": []}]}')

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ca.server_context())
    async with server:
        base = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/_gateway"
        code, out, _ = await cli("apis", "list", "--url", base, "--cacert", str(ca.ca_file))
        assert code == 0 and "tls-ok" in out
        async with ManagementClient(base, token=TOKEN, verify=str(ca.ca_file)) as client:
            assert (await client.list_apis())[0]["name"] == "tls-ok"
        code, _, err = await cli("apis", "list", "--url", base)
        assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err
    code, _, err = await cli("apis", "list", "--url", base, "--cacert", str(tmp_path / "missing.pem"))
    assert code == 2 and "not a readable file of PEM certificates" in err


async def test_only_an_https_endpoints_client_loads_the_systems_authorities(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over http the client makes no TLS connection (and follows no redirect): it parsed the system's CA
    bundle all the same, ~40 ms a client (150 ms on a loaded machine), thousands in this suite."""
    loaded: list[ssl.SSLContext] = []
    load = ssl.SSLContext.load_default_certs

    def counted(context: ssl.SSLContext, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH) -> None:
        loaded.append(context)
        load(context, purpose)

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", counted)
    async with ManagementClient("http://127.0.0.1:1/_gateway", token=TOKEN):
        pass
    assert loaded == []
    async with ManagementClient("https://127.0.0.1:1/_gateway", token=TOKEN):
        pass
    assert len(loaded) == 1
