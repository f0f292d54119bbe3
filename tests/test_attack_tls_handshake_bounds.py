"""Attack: TLS handshakes that never finish, opening or closing, against uvicorn terminating TLS with the
gateway's protocols.

The protocol is handed a TLS connection only once its handshake is done, so the request-head deadline
and the shedding near the open-file limit do not see one in its handshake: the event loop's own bound
held it, 60 s. Before: a client that sent nothing held its descriptor 60.0 s (10 s in plain text), and
113 of them took every descriptor of a worker under a 128 open-file limit: every TLS client and health
check was closed unserved for 60 s, nothing logged. With ``--loop
asgi_ws_gateway.server:tls_bounded_loop`` the handshake gets ``header_timeout``; ``asgi-ws-gateway run
--ssl-certfile ... --ssl-keyfile ...`` serves on that loop, and is held to the same bounds. The close too, once its
peer takes in nothing: a client that read its answer and then neither answered the gateway's close_notify
nor closed held the descriptor 30.0 s (``ssl_shutdown_timeout``), where a plain connection lingers 2 s;
a client still reading is not cut (a bound of ``header_timeout`` on the loop cut it). Real uvicorn
processes, real sockets, a real certificate.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from asgi_ws_gateway.server.head_deadline import TLS_UNBOUNDED
from support import tls as test_tls
from support.processes import ServerProcess, ready_server
from support.tls import healthz, make_ca

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")

HEADER_TIMEOUT = 1.0
LOOP_TIMEOUT = 60.0  # asyncio's and uvloop's ssl_handshake_timeout: what held a handshake before
LOOP_SHUTDOWN_TIMEOUT = 30.0  # their ssl_shutdown_timeout: what held a close before
LIMIT = 128
LOOP = "asgi_ws_gateway.server:tls_bounded_loop"


@contextmanager
def _tls_server(
    tmp_path: Path,
    ca: test_tls.TestCA,
    open_files: int | None = None,
    loop: str = LOOP,
    app: tuple[str, ...] = ("--factory", "asgi_ws_gateway.server.serving:standalone_app"),
    kind: str = "uvicorn",
) -> Iterator[ServerProcess]:
    """The documented commands: uvicorn ending TLS, the gateway's protocols and loop, a standalone gateway
    (or ``app``, from ``tmp_path``); or (``kind="run"``) ``asgi-ws-gateway run`` with its TLS options."""
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/"]}]}))
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({open_files}, {open_files}))\n"
    tls = ["--ssl-keyfile", str(ca.key_file), "--ssl-certfile", str(ca.cert_file)]

    def command(port: int) -> list[str]:
        if kind == "run":
            module, argv = "asgi_ws_gateway", ["asgi-ws-gateway", "run", str(config), "--port", str(port), *tls]
        else:
            module = "uvicorn"
            argv = ["uvicorn", *app, "--port", str(port), *tls, "--loop", loop,
                    "--http", "asgi_ws_gateway.server:GatewayHTTPProtocol",
                    "--ws", "asgi_ws_gateway.server:GatewayWebSocketProtocol"]  # fmt: skip
        script = f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_module({module!r}, run_name='__main__')"
        return ["-c", (limit if open_files else "") + script]

    env = {"ASGI_WS_GATEWAY_CONFIG": str(config), "ASGI_WS_GATEWAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT)}
    with ready_server(command, cwd=tmp_path, env=env) as server:
        yield server
        server.stop()
        output = server.output()
    assert "Traceback" not in output
    assert output.count(TLS_UNBOUNDED) == (0 if loop == LOOP else 1)


def _client_hello(ca: test_tls.TestCA) -> bytes:
    """A real TLS 1.3 ClientHello for 127.0.0.1."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context(cafile=str(ca.ca_file)).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _held(sock: socket.socket, drip: bytes = b"", within: float = LOOP_TIMEOUT / 2) -> bool:
    """Whether the server still holds ``sock`` open after ``within`` seconds (by default 30, half the loop's
    own handshake bound), ``drip`` sent a byte every 0.2 s meanwhile (False: it closed the TCP connection first)."""
    deadline = time.monotonic() + within
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if drip:
                sock.send(drip[:1])
                drip = drip[1:]
            if not sock.recv(4096):
                return False
        except TimeoutError:
            continue
        except ConnectionResetError:
            return False
    return True


SERVERS = pytest.mark.parametrize("server", ["uvicorn", "run"])
"""uvicorn with the documented flags, and ``asgi-ws-gateway run --ssl-certfile ... --ssl-keyfile ...``."""


@pytest.fixture(scope="module", params=["uvicorn", "run"])
def tls_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, test_tls.TestCA]]:
    """One server of each kind (as :data:`SERVERS`) and its CA, for the tests whose clients each open their
    own connection and leave the server's settings as they are: a start costs more than most of them (its
    output checked once the module is done with it)."""
    directory = tmp_path_factory.mktemp("tls-server")
    ca = make_ca(directory)
    with _tls_server(directory, ca, kind=request.param) as process:
        yield process, ca


@pytest.mark.parametrize("drip", [False, True], ids=["silent", "client-hello-a-byte-at-a-time"])
def test_a_tls_handshake_that_does_not_finish_is_closed_at_the_head_deadline(
    tls_server: tuple[ServerProcess, test_tls.TestCA], drip: bool
) -> None:
    """A client that opens TCP and sends nothing, or drips its ClientHello, is closed at ``header_timeout``."""
    process, ca = tls_server
    with socket.create_connection(("127.0.0.1", process.port)) as sock:
        assert not _held(sock, _client_hello(ca) if drip else b"")


@SERVERS
def test_a_flood_of_silent_handshakes_locks_a_worker_out_for_the_head_deadline_only(
    tmp_path: Path, server: str
) -> None:
    """Silent TLS handshakes filling the open-file limit are closed at the deadline, and clients served again."""
    ca = make_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with _tls_server(tmp_path, ca, open_files=LIMIT, kind=server) as process, ExitStack() as stack:
        for _ in range(LIMIT):  # more than the worker can hold: the last ones wait in the listen queue
            stack.enter_context(socket.create_connection(("127.0.0.1", process.port), timeout=5))
        deadline = time.monotonic() + LOOP_TIMEOUT / 2
        while True:
            try:
                with (
                    socket.create_connection(("127.0.0.1", process.port), timeout=5) as raw,
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
                ):
                    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
                    if tls.recv(4096).startswith(b"HTTP/1.1 200"):
                        break
            except (ssl.SSLError, OSError):
                pass
            assert time.monotonic() < deadline, "the worker served no TLS client while the handshakes held"
            time.sleep(0.2)


@contextmanager
def _silent_flood(port: int, count: int) -> Iterator[None]:
    """``count`` connections to ``port`` that send nothing, each one the server closes opened again at once,
    for as long as the block runs."""
    stop = threading.Event()

    def flood() -> None:
        with selectors.DefaultSelector() as selector:

            def open_one() -> None:
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                selector.register(sock, selectors.EVENT_READ)

            for _ in range(count):
                open_one()
            while not stop.is_set():
                for key, _ in selector.select(0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        closed = not sock.recv(4096)
                    except OSError:
                        closed = True
                    if closed:
                        selector.unregister(sock)
                        sock.close()
                        open_one()
            for key in list(selector.get_map().values()):
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _served(port: int, context: ssl.SSLContext) -> bool:
    """Whether a TLS client's ``GET /healthz`` is answered 200 (within 5 s of each step)."""
    try:
        return healthz(port, context).startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, OSError):
        return False


ATTEMPTS = 20


@SERVERS
def test_silent_handshakes_kept_up_at_the_open_file_limit_do_not_lock_tls_clients_out(
    tmp_path: Path, server: str
) -> None:
    """Silent connections held at the open-file limit, each closed one opened again, are shed for TLS clients
    as for plain ones: before, a connection in its TLS handshake was not shed (nor seen) and 200 of them,
    kept up, locked every TLS client out for as long as they went on (0 of 143 served in 15 s; plain text
    145 of 145)."""
    ca = make_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with _tls_server(tmp_path, ca, open_files=LIMIT, kind=server) as process:
        with _silent_flood(process.port, 2 * LIMIT):
            time.sleep(0.5)  # (the flood at the limit first)
            served = sum(_served(process.port, context) for _ in range(ATTEMPTS))
        output = process.output()
    assert served >= ATTEMPTS // 2, f"{served} of {ATTEMPTS} TLS clients served"
    assert "open-file limit nearly reached" in output


@pytest.mark.parametrize(
    "request_head",
    [b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"],
    ids=["connection-close", "head-not-complete-408"],
)
def test_a_client_that_never_answers_close_notify_is_closed_at_the_head_deadline(
    tls_server: tuple[ServerProcess, test_tls.TestCA], request_head: bytes
) -> None:
    """The gateway closes after its answer; a client that keeps its end open, silent, is let go of soon after."""
    process, ca = tls_server
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with (
        socket.create_connection(("127.0.0.1", process.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as client,
    ):
        client.sendall(request_head)
        client.settimeout(15)
        answer = b""
        while chunk := client.recv(4096):  # b"": the gateway's close_notify, left unanswered
            answer += chunk
        assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 408"))
        with socket.socket(fileno=os.dup(client.fileno())) as tcp:  # the TCP connection under the TLS one
            assert not _held(tcp, within=LOOP_SHUTDOWN_TIMEOUT / 2)


def test_tls_served_on_a_loop_without_the_bounds_is_warned_of_once(tmp_path: Path) -> None:
    """uvicorn's own loop serves TLS as before, with one WARNING naming the loop to use (checked on leaving)."""
    ca = make_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with _tls_server(tmp_path, ca, loop="auto") as server:
        for _ in range(2):
            assert healthz(server.port, context).startswith(b"HTTP/1.1 200")


BIG = 8 << 20  # more than the kernel's send buffer takes (4 MiB at most): the rest waits in the transports


def test_a_slow_reader_reads_a_large_response_whole_before_the_close(tmp_path: Path) -> None:
    """A response written at once and closed after (``Connection: close``) reaches a client that reads it
    on steadily for longer than ``header_timeout``: the close's bound waits while the client takes in."""
    (tmp_path / "big.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200,"
        f" 'headers': [(b'content-length', b'{BIG}')]}})\n"
        f"    await send({{'type': 'http.response.body', 'body': b'x' * {BIG}}})\n"
    )
    ca = make_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with (
        _tls_server(tmp_path, ca, app=("big:app",)) as server,
        socket.socket() as raw,
    ):
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 15)
        raw.settimeout(15)
        raw.connect(("127.0.0.1", server.port))
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            received, started = b"", time.monotonic()
            # A read returns one TLS record (16 KiB at most): ~1.6 MB/s, 5 s for the whole, several header_timeouts
            # (a pause of 0.04 s made it ~0.4 MB/s, 20 s).
            while chunk := client.recv(1 << 16):
                received += chunk
                time.sleep(0.01)
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert time.monotonic() - started > 2 * HEADER_TIMEOUT  # (the close's bound was reached)
            assert len(body) == BIG
