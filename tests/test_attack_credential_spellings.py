"""The credentials the gateway sent an upstream, as a backend writes them back into a refusal or a close
reason, and what finding their pieces costs.

- A base64 key (``+``, ``/``, ``=`` every few characters) echoed percent-encoded (a redirect's URL),
  JSON-escaped (``\\/``) or HTML-escaped was cut into runs shorter than the 8 bytes looked for: none
  found, the whole key there to read. A ``Basic`` credential came back decoded (a backend naming the
  account and the password it refused), and a Latin-1 key as UTF-8 in a refusal (its start) likewise.
- Finding the pieces grew each place a 4-byte block occurs in a secret both ways: a key of one byte
  repeated (a client's own ``Authorization``, which goes upstream) and a page echoing it cut took
  0.7 s at 4 KB and ~3 s at 8 KB, the event loop held. Now linear: counted in Python lines run.
- The credentials were indexed again for the refusal's body and for each of its header values, and each
  looked for in each: a client's 32 KiB of header values (12-23 spellings each byte) and a refusal of
  124 header lines cost 2-4 s of the event loop, 4 x 8 KiB of varied bytes ~30 s; 740 ``?key=``
  parameters (2,229 credentials) and a 64 KiB page ~95 ms. Now indexed once per refusal
  (``upstream.secret_index``), a credential looked for whole only where its first 8 bytes are: counted
  in Python lines run, and the same bytes out as the definition's (hypothesis).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway.errors import UpstreamRejected
from asgi_ws_gateway.upstream import refusal_secrets, secret_index
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.close_secrets import SentCredentials
from asgi_ws_gateway.upstream.refusal_secrets import (
    MAX_SPELLED,
    scrubbed_bytes,
    sent_credentials,
    without_credentials,
    without_pieces,
)
from support.clients import connect
from support.processes import ready_server

KEY = "Ab3+x/Q9=Kp7/Zt+Wq2=Mn5/Rs8+"
"""A base64 key: no run of 8 characters without a ``+``, ``/`` or ``=``."""
PASSWORD = "S3cret-Passw0rd"
BASIC = base64.b64encode(f"svc-account:{PASSWORD}".encode()).decode()
LATIN = "cl\u00e9-secr\u00e8te-\u00e0-ne-pas-montrer"
HEX = "9f86D081-884c7D65-9a2fEAA0-c55aD015"

ECHOES = {
    "percent-encoded": "Ab3%2Bx%2FQ9%3DKp7%2FZt%2BWq2%3DMn5%2FRs8%2B",
    "percent-encoded, / kept": "Ab3%2Bx/Q9%3DKp7/Zt%2BWq2%3DMn5/Rs8%2B",
    "json-escaped": "Ab3+x\\/Q9=Kp7\\/Zt+Wq2=Mn5\\/Rs8+",
    "basic password": PASSWORD,
    "basic account": f"svc-account:{PASSWORD}",
    "latin-1 as utf-8": LATIN,
    "latin-1 as utf-8, percent-encoded": "cl%C3%A9-secr%C3%A8te-%C3%A0-ne-pas-montrer",
    "hex, upper-cased": HEX.upper(),
    "hex, lower-cased": HEX.lower(),
}


def _request(url: str = "ws://b/x") -> UpstreamRequest:
    headers = [("X-Api-Key", KEY), ("Authorization", f"Basic {BASIC}"), ("X-Tenant-Key", LATIN), ("X-Hex-Token", HEX)]
    return UpstreamRequest(url=url, headers=headers, subprotocols=[], scope={})


@pytest.mark.parametrize("echo", list(ECHOES.values()), ids=list(ECHOES))
def test_a_refusal_loses_a_credential_as_a_backend_writes_it_back(echo: str) -> None:
    body = f'{{"error": "refused", "key": "{echo}"}}'.encode()
    scrubbed = without_credentials(
        UpstreamRejected(401, [(b"location", echo.encode())], body), sent_credentials([_request()])
    )
    assert scrubbed.body == b'{"error": "refused", "key": "REDACTED"}'
    assert scrubbed.headers == [(b"location", b"REDACTED")]


@pytest.mark.parametrize("echo", list(ECHOES.values()), ids=list(ECHOES))
def test_a_close_reason_loses_a_credential_as_a_backend_writes_it_back(echo: str) -> None:
    assert SentCredentials(_request()).scrubbed(f"bad key {echo}!") == "bad key REDACTED!"


def test_an_html_escaped_credential_goes() -> None:
    key = "p&ss<w0rd>&more<x>&y"
    request = UpstreamRequest(url="ws://b/x", headers=[("X-Api-Key", key)], subprotocols=[], scope={})
    body = b"<p>bad key p&amp;ss&lt;w0rd&gt;&amp;more&lt;x&gt;&amp;y</p>"
    assert (
        without_credentials(UpstreamRejected(401, [], body), sent_credentials([request])).body
        == b"<p>bad key REDACTED</p>"
    )


@contextlib.asynccontextmanager
async def _upstream_refusing_with(body: bytes) -> AsyncIterator[int]:
    async def answer(reader: Any, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 401 Refused\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_an_echoing_refusal_through_the_gateway_carries_no_spelling_of_the_key(tmp_path: Path) -> None:
    body = " | ".join(ECHOES[name] for name in ("percent-encoded", "json-escaped")).encode()
    async with _upstream_refusing_with(body) as port:
        policies = [{"set-header": {"header": "X-Api-Key", "value": KEY}}]
        apis = [
            {"name": "splice", "path": "/splice", "upstreams": [f"ws://127.0.0.1:{port}/"], "policies": policies},
            {"name": "relay", "path": "/relay", "upstreams": [f"ws://127.0.0.1:{port}/"], "policies": policies,
             "passthrough": False},
        ]  # fmt: skip
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": apis}))
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml"]
        with ready_server(lambda p: [*command, "--port", str(p)], cwd=tmp_path) as server:
            for api in ("splice", "relay"):
                with pytest.raises(Exception) as refused:
                    async with await connect(f"ws://127.0.0.1:{server.port}/{api}"):
                        pass
                response = refused.value.response  # type: ignore[attr-defined]
                assert (response.status_code, bytes(response.body)) == (401, b"REDACTED | REDACTED"), api


async def test_a_client_s_costly_credentials_get_the_refusal_s_status_alone(tmp_path: Path) -> None:
    """3,000 ``"`` in the client's own ``X-Api-Key`` (36 KB spelled, past MAX_SPELLED): the upstream's 401 reaches
    it without the page that echoes the key, on the splice and the relay, and the gateway keeps serving."""
    key = '"' * 3000
    async with _upstream_refusing_with(b"refused key: " + key.encode()) as port:
        apis = [
            {"name": "splice", "path": "/splice", "upstreams": [f"ws://127.0.0.1:{port}/"]},
            {"name": "relay", "path": "/relay", "upstreams": [f"ws://127.0.0.1:{port}/"], "passthrough": False},
        ]
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": apis}))
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml"]
        with ready_server(lambda p: [*command, "--port", str(p)], cwd=tmp_path) as server:
            for api in ("splice", "relay"):
                with pytest.raises(Exception) as refused:
                    async with await connect(
                        f"ws://127.0.0.1:{server.port}/{api}", additional_headers={"X-Api-Key": key}
                    ):
                        pass
                response = refused.value.response  # type: ignore[attr-defined]
                assert (response.status_code, bytes(response.body)) == (401, b""), api
            assert "Traceback" not in server.output()


# -- what it costs --


def _lines_run(call: Callable[[], object]) -> int:
    """The Python lines of :mod:`refusal_secrets` and :mod:`secret_index` that ``call`` runs: a count,
    not a time."""
    count = 0
    modules = {refusal_secrets.__file__, secret_index.__file__}

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if frame.f_code.co_filename not in modules:
            return None
        count += event == "line"
        return trace

    before = sys.gettrace()
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(before)
    return count


@pytest.mark.parametrize(
    "shape",
    [
        lambda n: (b"A" * n, (b"A" * (n - 1) + b"B") * 4),  # one byte repeated, echoed one byte short
        lambda n: (b"AB" * (n // 2), (b"AB" * (n // 2 - 1) + b"C") * 4),
        lambda n: (bytes(range(32, 96)) * (n // 64), (bytes(range(32, 96)) * (n // 64))[1:-1] * 4),
    ],
    ids=["one-byte", "two-bytes", "period-64"],
)
def test_finding_the_pieces_of_a_credential_is_linear(shape: Callable[[int], tuple[bytes, bytes]]) -> None:
    lines = []
    for secret, page in (shape(500), shape(2000)):
        lines.append(_lines_run(functools.partial(without_pieces, page, [secret])))
    assert lines[1] < 6 * lines[0], lines  # 4 times the bytes: ~16 times the lines when it was quadratic


_BYTES = st.binary(min_size=0, max_size=60).map(lambda raw: bytes(b"ab"[byte % 2] for byte in raw))


@settings(max_examples=300, deadline=None)
@given(st.lists(_BYTES.filter(lambda secret: len(secret) >= 8), min_size=1, max_size=3), st.lists(_BYTES, max_size=4))
def test_each_byte_in_a_window_of_8_a_secret_holds_goes_and_no_other(secrets: list[bytes], parts: list[bytes]) -> None:
    """What :func:`without_pieces` takes out: the windows of 8 bytes some secret holds, one word for
    each run of them that overlap or touch, and nothing else."""
    data = b"|".join(parts)
    windows = {secret[at : at + 8] for secret in secrets for at in range(len(secret) - 7)}
    covered = [False] * len(data)
    for start in range(len(data) - 7):
        if data[start : start + 8] in windows:
            covered[start : start + 8] = [True] * 8
    expected = bytearray()
    for at, byte in enumerate(data):
        if not covered[at]:
            expected.append(byte)
        elif at == 0 or not covered[at - 1]:
            expected += b"REDACTED"
    assert without_pieces(data, secrets) == bytes(expected)


@pytest.mark.parametrize(
    ("secrets", "data", "scrubbed"),
    [
        ([b"xxxxxxxxxx", b"TEDyyyyy"], b"ab xxxxxxxxxxyyyyy cd", b"ab REDACREDACTED cd"),  # after the word
        ([b"zzzzzzzzzz", b"qqqREDAC"], b"qqqzzzzzzzzzz!", b"REDACTEDTED!"),  # before it
        ([b"wwwwwwwwww", b"aREDACTEDb"], b"awwwwwwwwwwb..", b"REDACTED.."),  # around it
    ],
)
def test_a_credential_that_a_redacted_word_completes_goes_as_replacing_in_turn_took_it(
    secrets: list[bytes], data: bytes, scrubbed: bytes
) -> None:
    """A credential found whole only once an earlier (longer) one was written ``REDACTED`` goes too, as
    ``data.replace`` of each in turn took it: the index looks again around each word it writes."""
    assert scrubbed_bytes(data, secrets) == scrubbed


def _refusal(header_lines: int, body: bytes) -> UpstreamRejected:
    return UpstreamRejected(401, [(b"x-h%d" % n, b"value of header number %d" % n) for n in range(header_lines)], body)


_PAGE = bytes(b"abcdefghijklmnop"[(n * 7 + n // 16) % 16] for n in range(4096))


def test_a_refusal_s_header_lines_cost_their_own_bytes_not_the_credentials_again() -> None:
    """A client's 2 KB key (~13 KB spelled), a refusal of 10 or 100 header lines: each line costs
    its own ~25 bytes to read (~34 lines run), not the credentials indexed again (~26,000 lines each:
    2.3 million for the 90 more lines before)."""
    key = "".join(
        'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="&'[n * 37 % 67] for n in range(2000)
    )
    request = UpstreamRequest(url="ws://b/x", headers=[("X-Api-Key", key)], subprotocols=[], scope={})
    credentials = sent_credentials([request])
    few, many = (_lines_run(functools.partial(without_credentials, _refusal(n, _PAGE), credentials)) for n in (10, 100))
    assert many - few < 90 * 100, (few, many)


def test_many_credentials_cost_their_bytes_once_per_refusal() -> None:
    """2,000 credential parameters (``?key=`` each) and a refusal of 20 header lines and a 4 KiB page:
    each credential is indexed once and looked for whole only where its first 8 bytes are (~18 lines
    run each; ~274 before: indexed again and looked for in each of the 21 texts)."""
    url = "ws://b/x?" + "&".join(f"key=v{n:07d}x" for n in range(2000))
    credentials = sent_credentials([UpstreamRequest(url=url, headers=[], subprotocols=[], scope={})])
    assert len(credentials) == 2000
    lines = _lines_run(lambda: without_credentials(_refusal(20, _PAGE), credentials))
    assert lines < 40 * len(credentials), lines


def test_more_credentials_than_are_worth_indexing_leave_the_status_alone() -> None:
    """4 x 8,100 bytes of ``"`` (97 KB spelled: percent-, JSON-, HTML-escaped) cost a refusal of 124 header
    lines and a 64 KiB page 2 s of the event loop, 39 ms once indexed: past :data:`MAX_SPELLED` the
    refusal keeps its status and loses its body and headers, unread; the close reason goes, unread too."""
    headers = [(f"X-Api-Key-{n}", '"' * 8100) for n in range(4)]
    request = UpstreamRequest(url="ws://b/x", headers=headers, subprotocols=[], scope={})
    credentials = sent_credentials([request])
    assert sum(map(len, credentials)) > MAX_SPELLED
    refusal = _refusal(124, b"%22" * 21845)
    bare = without_credentials(refusal, credentials)
    assert (bare.status, bare.headers, bare.body) == (401, [], b"")
    assert _lines_run(lambda: without_credentials(refusal, credentials)) < 100
    sent = SentCredentials(request)
    assert sent.scrubbed("a reason of some length") == ""
    assert SentCredentials(_request()).scrubbed("a reason of some length") == "a reason of some length"


def _replaced_in_turn(data: bytes, secrets: list[bytes]) -> bytes:
    """The definition of :func:`scrubbed_bytes`: each secret replaced whole, in turn, then the pieces."""
    for secret in secrets:
        data = data.replace(secret, b"REDACTED")
    if len(data) < 8:
        return data
    listed = set(secrets)
    pieces = [secret for secret in secrets if secret.partition(b" ")[2].strip() not in listed]
    windows = {secret[at : at + 8] for secret in pieces for at in range(len(secret) - 7)}
    covered = [False] * len(data)
    for start in range(len(data) - 7):
        if data[start : start + 8] in windows:
            covered[start : start + 8] = [True] * 8
    out = bytearray()
    for at, byte in enumerate(data):
        if not covered[at]:
            out.append(byte)
        elif at == 0 or not covered[at - 1]:
            out += b"REDACTED"
    return bytes(out)


_LETTERS = st.binary(min_size=0, max_size=40).map(lambda raw: bytes(b"REDACTab "[byte % 9] for byte in raw))
_SECRETS = st.lists(_LETTERS.filter(lambda secret: len(secret) >= 8), min_size=1, max_size=5).map(
    lambda secrets: sorted(set(secrets), key=len, reverse=True)
)


@settings(max_examples=400, deadline=None)
@given(_SECRETS, st.lists(st.one_of(_LETTERS, st.sampled_from([b"Bearer ", b"REDACTED"])), max_size=8), st.booleans())
def test_scrubbing_is_the_definition_byte_for_byte(secrets: list[bytes], parts: list[bytes], blocks: bool) -> None:
    """What :func:`scrubbed_bytes` writes, through the index (each window looked up, or read at every
    fifth byte once its blocks are built): each secret replaced whole in turn, longest first (one
    that a ``REDACTED`` written before completes too), then the pieces; a scheme's credential counted
    by the credential alone when it is listed."""
    data = b"".join(parts + [secrets[0]] * (len(parts) % 2))  # often one whole, sometimes cut by others
    secrets = sorted(
        {*secrets, *(b"Bearer " + secret for secret in secrets[:1] if len(parts) % 3 == 0)}, key=len, reverse=True
    )
    index = secret_index.SecretIndex(secrets)
    if blocks:
        index.without_pieces(bytes(10_000))  # more read than the windows number: the blocks are built
    assert index.scrubbed(data) == _replaced_in_turn(data, secrets) == scrubbed_bytes(data, secrets)
