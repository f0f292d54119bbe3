"""``check-origin`` entries that loaded silently and admitted every site, or matched nothing.

``https://*.com``, ``https://*.co.uk`` and ``https://*.`` admitted every site under them (and counted
as a check-origin: the cookie-token warning was silenced); ``https://bücher.example`` never matched,
since browsers send ``https://xn--bcher-kva.example``; user info, a query or a fragment in an entry
were ignored or made it match nothing. Now each is a configuration problem by field path, and a
Unicode host is matched in the form browsers send.

``check``'s answer for each entry is read from ``cli.main`` (the console script's function) called in
this process; the entries of ``IN_A_PROCESS`` run the real command line too, for its wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway import cli
from asgi_ws_gateway.policies.network import compile_origin
from support.processes import EXE, ServerProcess, cli_env, ready_server
from support.rawhttp import handshake, status_of
from support.servers import free_port
from support.upstream import UpstreamServer

FIELD = "apis[0].policies[0].check-origin.allowed[1]: "
"""The second entry's field path: each entry is reported by its index."""


def _config(upstream: str, allowed: list[str]) -> dict[str, Any]:
    api = {
        "name": "chat",
        "path": "/ws/chat",
        "upstreams": [upstream],
        "policies": [{"check-origin": {"allowed": allowed}}],
    }
    return {"apis": [api]}


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


Check = Callable[[Path, list[str]], tuple[int, str]]
IN_A_PROCESS = {"https://*.com", "https://bücher.example"}
"""The entries also checked by a process."""


def _check(tmp_path: Path, allowed: list[str]) -> tuple[int, str]:
    path = _write(tmp_path, _config("ws://127.0.0.1:9/", allowed))
    done = subprocess.run([str(EXE), "check", str(path)], capture_output=True, text=True, timeout=60, env=cli_env())
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Check:
    """``_check`` answered by ``cli.main`` in this process: its exit code and what it printed."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts the working directory first, as uvicorn does

    def check(tmp_path: Path, allowed: list[str]) -> tuple[int, str]:
        path = _write(tmp_path, _config("ws://127.0.0.1:9/", allowed))
        capsys.readouterr()
        try:
            code = cli.main(["check", str(path)])
        except SystemExit as exc:  # a usage error
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out + err

    return check


def _cases(cases: list[Any]) -> list[Any]:
    """Every case answered in this process (``as_process`` False), those of ``IN_A_PROCESS`` by a process too."""
    rows = [case if isinstance(case, tuple) else (case,) for case in cases]
    return [pytest.param(*row, False, id=str(i)) for i, row in enumerate(rows)] + [
        pytest.param(*row, True, id=f"{i}-process") for i, row in enumerate(rows) if row[0] in IN_A_PROCESS
    ]


@pytest.mark.parametrize(
    ("entry", "problem", "as_process"),
    _cases(
        [
            ("https://*.com", "*.com admits every site under the top-level domain .com"),
            ("http://*.dev:*", "*.dev admits every site under the top-level domain .dev"),
            ("https://*.", "a wildcard needs the domain it covers"),
            ("https://*.co.uk", "co.uk is a public suffix"),
            ("https://*.com.au", "com.au is a public suffix"),
            ("https://*.github.io", "github.io is a public suffix"),
            ("https://u:p@app.example.com", "an origin has no user name or password"),
            ("https://app.example.com?x#y", "an origin has no path, query or fragment"),
            ("https://app.example.com#y", "an origin has no path, query or fragment"),
            ("https://app.example.com/chat", "an origin has no path, query or fragment"),
            ("https://app.example.com:99999", "the port must be a number from 1 to 65535"),
            ("https://app.example.com:https", "the port must be a number from 1 to 65535"),
            ("https://app..example.com", "is not a host name"),
            ("https://straße.example", "write it as browsers send it, xn--"),
            # an IPv6 zone id: browsers never send one
            ("http://[fe80::1%25eth0]", "an IPv6 zone id"),
            ("http://[fe80::1%eth0]:8080", "an IPv6 zone id"),
            # a host the WHATWG parser reads as an IPv4 address, which is none: the browser refuses the URL
            ("http://app.123", "is neither a host name nor an IPv4 address"),
            ("http://256.0.0.1", "is not an IPv4 address"),
            ("http://*.127.0.0.1", "a wildcard covers the subdomains of a name, not an IP address"),
            # a trailing dot does not hide a top-level domain or a public suffix
            ("https://*.com.", "*.com admits every site under the top-level domain .com"),
            ("https://*.co.uk.", "co.uk is a public suffix"),
            ("http://*.onion", "*.onion admits every site under the top-level domain .onion"),
        ]
    ),
)
def test_check_refuses_an_entry_that_admits_every_site_or_matches_nothing(
    tmp_path: Path, in_process: Check, entry: str, problem: str, as_process: bool
) -> None:
    """Exit 2, the field path, the entry and what is wrong with it."""
    code, output = (_check if as_process else in_process)(tmp_path, ["https://app.example.com", entry])
    assert code == 2, output
    assert f"{FIELD}'{entry}'" in output and problem in output, output


@pytest.mark.parametrize(
    ("entry", "as_process"),
    _cases(
        [
            "https://*.example.com",
            "https://*.example.co.uk",
            "https://me.github.io",
            "http://*.localhost:*",
            "https://bücher.example",
            "https://app.example.com/",
            "http://[::1]:8080",
            # a trailing dot: browsers on such a host send exactly that origin
            "https://app.example.com.",
            "https://localhost.",
            "https://*.example.com.",
            # an empty port is the default one, as the WHATWG URL parser reads it
            "https://app.example.com:",
            "http://[::1]:",
            # special-use and private names, like *.localhost: no one registers a site under them
            "http://*.test:*",
            "http://*.internal",
            "http://*.local:*",
            "https://*.example",
            "https://*.invalid",
            "https://*.home.arpa",
            # IP literals in any form the WHATWG parser reads
            "http://[0:0:0:0:0:0:0:1]:*",
            "http://[::ffff:127.0.0.1]",
            "http://127.1",
            "http://2130706433:8080",
        ]
    ),
)
def test_check_accepts_an_entry_naming_one_site(
    tmp_path: Path, in_process: Check, entry: str, as_process: bool
) -> None:
    code, output = (_check if as_process else in_process)(tmp_path, [entry])
    assert code == 0, output


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def _run(tmp_path: Path, config: dict[str, Any]) -> ServerProcess:
    path = _write(tmp_path, config)
    return ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port)])


async def _status(port: int, origin: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake("/ws/chat", f"Origin: {origin}\r\nCookie: session=s3cr3t\r\n".encode()))
        return status_of(await reader.readuntil(b"\r\n\r\n"))
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # close() only schedules the FIN: stop() blocks the loop next
            await writer.wait_closed()


async def test_run_matches_a_unicode_host_as_browsers_send_it(tmp_path: Path, upstream: UpstreamServer) -> None:
    """``https://bücher.example`` admits the ``Origin`` browsers send for it, and nothing else."""
    with _run(tmp_path, _config(upstream.url("/echo"), ["https://bücher.example"])) as server:
        assert await _status(server.port, "https://xn--bcher-kva.example") == 101
        assert await _status(server.port, "https://xn--bcher-kva.example.evil.com") == 403
        assert await _status(server.port, "https://evil.example") == 403


def test_run_refuses_to_start_with_an_entry_over_a_top_level_domain(tmp_path: Path) -> None:
    """``run`` with ``https://*.com`` exits 2 naming the field; it admitted ``https://evil.com`` before."""
    path = _write(tmp_path, _config("ws://127.0.0.1:9/", ["https://*.com"]))
    done = subprocess.run(
        [str(EXE), "run", str(path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "check-origin.allowed[0]: 'https://*.com'" in done.stdout + done.stderr


def test_check_reports_every_bad_entry_by_its_index(tmp_path: Path) -> None:
    """Each bad entry of ``allowed`` is its own problem, by index; only the first was reported."""
    entries = ["https://app.example.com", "https://*.com", "https://u:p@a.example", "http://[fe80::1%25eth0]"]
    code, output = _check(tmp_path, entries)
    assert code == 2, output
    assert "3 problem(s)" in output, output
    for index in (1, 2, 3):
        assert f"check-origin.allowed[{index}]: '{entries[index]}'" in output, output
    assert "allowed[0]" not in output, output


# -- matched as browsers send the origin ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "sent", "not_sent"),
    [
        ("http://[0:0:0:0:0:0:0:1]:*", "http://[::1]:8080", "http://[::2]:8080"),
        ("http://[::ffff:127.0.0.1]", "http://[::ffff:7f00:1]", "http://[::ffff:7f00:2]"),
        ("http://[2001:DB8:0:0:1:0:0:1]", "http://[2001:db8::1:0:0:1]", "http://[2001:db8:0:0:1::1]"),
        ("http://[1:0:0:2:0:0:0:3]", "http://[1:0:0:2::3]", "http://[1::2:0:0:0:3]"),
        ("http://127.1", "http://127.0.0.1", "http://127.1"),
        ("http://0x7f.1:8080", "http://127.0.0.1:8080", "http://127.0.0.1"),
        ("http://2130706433", "http://127.0.0.1", "http://2130706433"),
        ("http://0177.0.0.1", "http://127.0.0.1", "http://177.0.0.1"),
        ("http://127.0.0.1.", "http://127.0.0.1", "http://127.0.0.1."),
        ("https://app.example.com.", "https://app.example.com.", "https://app.example.com"),
        ("https://app.example.com:", "https://app.example.com", "https://app.example.com:8443"),
        ("http://*.test:*", "http://chat.test:3000", "http://test:3000"),
        ("https://*.example.com.", "https://a.example.com.", "https://a.example.com"),
    ],
)
def test_an_entry_matches_the_origin_browsers_send_for_it(entry: str, sent: str, not_sent: str) -> None:
    """The entry, parsed as the WHATWG URL parser does, matches the serialised origin, not its own text."""
    pattern = compile_origin(entry)
    assert pattern.fullmatch(sent), pattern.pattern
    assert not pattern.fullmatch(not_sent), pattern.pattern


async def test_run_admits_the_origin_browsers_send_for_an_ip_literal(tmp_path: Path, upstream: UpstreamServer) -> None:
    """``[0:0:0:0:0:0:0:1]`` and ``127.1`` admit what browsers send on those hosts (``[::1]``,
    ``127.0.0.1``); they loaded and matched nothing before. A trailing-dot host admits itself."""
    entries = ["http://[0:0:0:0:0:0:0:1]:*", "http://127.1:*", "https://app.example.com."]
    with _run(tmp_path, _config(upstream.url("/echo"), entries)) as server:
        assert await _status(server.port, "http://[::1]:5173") == 101
        assert await _status(server.port, "http://127.0.0.1:5173") == 101
        assert await _status(server.port, "https://app.example.com.") == 101
        assert await _status(server.port, "http://[::2]:5173") == 403
        assert await _status(server.port, "https://app.example.com") == 403
