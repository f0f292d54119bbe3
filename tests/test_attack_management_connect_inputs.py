"""``asgi-ws-gateway connect`` reads every input before it connects, and quotes none of them.

``-s "access_token.SECRET bad"`` was a ``ValueError`` traceback (exit 1) quoting the offer with its
token, so was ``-s "SECRET,"``; ``connect "http://h/x?token=SECRET"`` an ``InvalidURI`` traceback
quoting the URL; ``-H "Authorization Bearer SECRET"`` (no colon) ``error: -H takes 'Name: value', not
'Authorization Bearer SECRET'``. Now each is exit 2 naming the argument and what is wrong, the URL
connected to is shown without its credentials, and ``run --redis`` with a password warns as
``--token`` does: ``ps`` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from asgi_ws_gateway import cli
from asgi_ws_gateway.management import connect as connect_module
from support.processes import EXE, cli_env

SECRET = "SEKRIT9"


async def connect(*args: str) -> tuple[int, str, str]:
    """``asgi-ws-gateway connect ARGS`` with no input; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(EXE), "connect", "--linger", "0", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


CLOSED = "ws://127.0.0.1:9/x"  # nothing listens: an input that passed would fail to connect (exit 1)
INPUTS = {
    "-s with a space": (["-s", f"access_token.{SECRET} bad", CLOSED], "argument -s/--subprotocol: the 1st: not one"),
    "-s with a comma": (["-s", "chat", "-s", f"{SECRET},", CLOSED], "argument -s/--subprotocol: the 2nd: not one"),
    "http URL": ([f"http://h/x?token={SECRET}"], "argument URL: not a ws:// or wss:// URL"),
    "URL with a fragment": ([f"ws://h/x#access_token={SECRET}"], "argument URL: a #fragment"),
    "URL, user without password": ([f"ws://{SECRET}@h/x"], "argument URL: a user name without a password"),
    "URL without host": ([f"ws://u:{SECRET}@/x"], "argument URL: no host"),
    "URL with a space": ([f"ws://h/x?token={SECRET} x"], "argument URL: a space"),
    "URL's port": ([f"ws://h:99999/x?token={SECRET}"], "argument URL: an invalid port"),
    "URL's IPv6 bracket": ([f"ws://[::1/x?token={SECRET}"], "argument URL: unbalanced [ ]"),
    "URL's userinfo not UTF-8": ([f"ws://u:%ff{SECRET}@h/x"], "argument URL: not a URL websockets can connect to"),
    "-H without a colon": (["-H", f"Authorization Bearer {SECRET}", CLOSED], "argument -H/--header: the 1st: not"),
    "-H with a bad name": (["-H", f"Bearer {SECRET}: x", CLOSED], "argument -H/--header: the 1st: no header name"),
    "-H with a line break": (["-H", f"X-Api-Key: {SECRET}\r\nX-Evil: 1", CLOSED], "the 1st: a value a header"),
    "-H not Latin-1": (["-H", f"X-Api-Key: {SECRET}€", CLOSED], "the 1st: a value a header cannot carry"),
    "--subscription-key with a line break": (["--subscription-key", f"{SECRET}\n", CLOSED], "--subscription-key:"),
    "--key-header not a name": (["--key-header", f"{SECRET} x", "--subscription-key", "k", CLOSED], "--key-header:"),
    "an unquoted -H value": ([CLOSED, "-H", "Authorization:", "Bearer", SECRET], "2 argument(s) it does not take"),
    "an abbreviated option": ([f"--tok={SECRET}", CLOSED], "1 argument(s) it does not take"),
}


@pytest.mark.parametrize(("args", "message"), INPUTS.values(), ids=INPUTS.keys())
async def test_an_input_error_is_exit_2_naming_the_argument_never_the_value(args: list[str], message: str) -> None:
    """Each was a traceback or an echo of the secret: now exit 2, one error line, the secret nowhere."""
    code, out, err = await connect(*args)
    assert (code, out) == (2, ""), err
    assert "Traceback" not in err and SECRET not in err, err
    assert message in err.splitlines()[-1], err


async def test_the_url_connected_to_and_a_token_offer_chosen_are_shown_without_credentials() -> None:
    """A server choosing the offer that carries the token: neither it nor the URL's token is printed."""

    def choose_the_token(connection: ServerConnection, offers: Sequence[Subprotocol]) -> Subprotocol | None:
        return next((offer for offer in offers if offer.startswith("bearer.")), None)

    async def hold(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(hold, "127.0.0.1", 0, select_subprotocol=choose_the_token) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ws?room=1&access_token={SECRET}"
        code, out, err = await connect(url, "-s", "chat.v1", "-s", f"bearer.{SECRET}")
        _, as_json, _ = await connect(url, "-s", f"bearer.{SECRET}", "--json")
    assert code == 0, err
    assert f"* connected to ws://127.0.0.1:{port}/ws?room=1&access_token=REDACTED (subprotocol REDACTED)" in out
    assert SECRET not in out + as_json + err and '"subprotocol": "REDACTED"' in as_json


# Pieces of argv, a secret in every place a value goes (a header's, an offer, a query's, a userinfo's).
_JUNK = st.text(st.sampled_from([" ", ",", ":", "\n", "\r", "\t", "\x00", "\x7f", "€", "ü", "@", "#", "?", "=", "&",
                                 "[", "%", "/", "a", "-", "."]), max_size=4)  # fmt: skip
_HEADER = st.builds(lambda n, sep, junk: f"{n}{sep} {SECRET}{junk}", st.sampled_from(["Authorization", "X-Api-Key",
                    "X-Tenant", "Bad Name", ""]), st.sampled_from([":", "", " "]), _JUNK)  # fmt: skip
_OFFER = st.builds(lambda prefix, junk: f"{prefix}{SECRET}{junk}", st.sampled_from(["bearer.", "access_token.", ""]),
                   _JUNK)  # fmt: skip
_URL = st.builds(
    lambda scheme, userinfo, host, port, junk: f"{scheme}://{userinfo}{host}{port}/ws?token={SECRET}{junk}",
    st.sampled_from(["ws", "wss", "http", "WS", ""]), st.sampled_from(["", f"u:{SECRET}@", f"{SECRET}@"]),
    st.sampled_from(["127.0.0.1", "[::1]", "[::1", "10.0.0.5", ""]), st.sampled_from(["", ":9", ":99999", ":x"]),
    _JUNK,
)  # fmt: skip
_ARGS = st.lists(
    st.one_of(
        st.tuples(st.just("-H"), _HEADER),
        st.tuples(st.just("-s"), _OFFER),
        st.tuples(st.just("--subscription-key"), st.builds(lambda j: SECRET + j, _JUNK)),
        st.tuples(st.just("--token"), st.builds(lambda j: SECRET + j, _JUNK)),
        st.tuples(st.just("--key-header"), st.sampled_from(["X-Key", "Bad Name", ""])),
        st.tuples(st.sampled_from([SECRET, f"--tok={SECRET}", f"-x{SECRET}"])),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_URL, _ARGS, st.booleans())
def test_no_connect_input_is_a_traceback_or_echoed(url: str, options: list[tuple[str, ...]], url_first: bool) -> None:
    """Any mix of these inputs: exit 0 (the stand-in session: it would have connected) or 2, never an
    exception, and the secret in no line written."""
    argv = [part for option in options for part in option]
    argv = ["connect", url, *argv] if url_first else ["connect", *argv, url]
    out, err = io.StringIO(), io.StringIO()

    async def connected(*args: Any, **kwargs: Any) -> int:
        return 0  # nothing leaves the machine: the URL's host may be anything

    with mock.patch.object(connect_module, "session", connected), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):  # fmt: skip
        try:
            code: int | str | None = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    assert code in (0, 2), (argv, err.getvalue())
    assert SECRET not in out.getvalue() + err.getvalue(), (argv, err.getvalue())


# --- run --redis ----------------------------------------------------------------------------------


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``run`` of a configuration that does not exist: it stops after reading its arguments."""
    environ = {k: v for k, v in cli_env().items() if not k.startswith("ASGI_WS_GATEWAY_")}  # this checkout's
    command = [sys.executable, "-m", "asgi_ws_gateway", "run", str(tmp_path / "absent.yaml"), "--management", "/_gw"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, env={**environ, **env},
        cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize("url", [f"redis://:{SECRET}@127.0.0.1:1/0", f"redis://127.0.0.1:1/0?password={SECRET}",
                                 f"redis+sentinel://u:{SECRET}@127.0.0.1:1/gw"])  # fmt: skip
def test_run_warns_that_ps_shows_a_redis_password(tmp_path: Path, url: str) -> None:
    """As ``--token`` does: the warning names the variable to use, never the password."""
    result = _run(tmp_path, "--redis", url, ASGI_WS_GATEWAY_ADMIN_TOKEN="t" * 32)
    assert "warning: --redis carries credentials, and every user's ps shows them: use $ASGI_WS_GATEWAY_REDIS" in (
        result.stderr
    )
    assert SECRET not in result.stderr + result.stdout


def test_run_does_not_warn_of_a_redis_url_without_credentials_or_from_the_variable(tmp_path: Path) -> None:
    plain = _run(tmp_path, "--redis", "redis://127.0.0.1:1/0", ASGI_WS_GATEWAY_ADMIN_TOKEN="t" * 32)
    from_env = _run(tmp_path, ASGI_WS_GATEWAY_REDIS=f"redis://:{SECRET}@127.0.0.1:1/0",
                    ASGI_WS_GATEWAY_ADMIN_TOKEN="t" * 32)  # fmt: skip
    assert "every user's ps" not in plain.stderr + from_env.stderr
    assert SECRET not in from_env.stderr
