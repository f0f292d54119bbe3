"""The management command line through its real entry point, against ``run --management``."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from asgi_ws_gateway import load_config
from support.clients import connect, expect_close, expect_status
from support.configs import api_entry, build_config, write_config
from support.management import TOKEN
from support.processes import Cli, Standalone, cli, in_process_cli, standalone
from support.servers import free_port
from support.upstream import UpstreamServer


def _write_config(path: Path, name: str, public: str, upstream: str) -> None:
    write_config(path.parent, build_config(upstream, name=name, path=public), path.name)


@pytest.fixture
def config(tmp_path: Path, upstream: UpstreamServer) -> Path:
    path = tmp_path / "gateway.yaml"
    _write_config(path, "echo", "/ws/echo", upstream.url("/echo"))
    return path


@pytest.fixture
def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """:func:`cli` in this process: each test's first call runs the command line, the others ``cli.main``."""
    return in_process_cli(capsys, monkeypatch)


def _api_file(tmp_path: Path, upstream: UpstreamServer, name: str, **extra: object) -> str:
    return str(write_config(tmp_path, api_entry(upstream, name=name, path=f"/ws/{name}", **extra), f"{name}.json"))


async def test_help_lists_the_commands_and_exit_codes(in_process: Cli) -> None:
    code, out, _ = await cli("--help")
    assert code == 0
    for word in ("apis", "products", "subscriptions", "connections", "export", "connect", "Exit codes"):
        assert word in out
    code, out, _ = await in_process("connect", "--help")
    assert code == 0 and "/close [CODE [REASON]]" in out
    assert (await in_process("apis"))[0] == 2  # no action: a usage error


async def test_apis_commands_with_their_exit_codes(
    config: Path, tmp_path: Path, upstream: UpstreamServer, in_process: Cli
) -> None:
    async with standalone(config) as gateway:
        url = ("--url", gateway.url)
        code, out, err = await cli("apis", "create", _api_file(tmp_path, upstream, "chat"), *url)
        assert code == 0, err
        assert "name: chat" in out
        code, out, _ = await in_process("apis", "list", *url)
        assert code == 0
        assert [line.split()[:2] for line in out.splitlines()] == [["NAME", "PATH"], ["echo", "/ws/echo"],
                                                                   ["chat", "/ws/chat"]]  # fmt: skip
        code, out, _ = await in_process("apis", "list", "--json", *url)
        assert [a["name"] for a in json.loads(out)] == ["echo", "chat"]
        assert (await in_process("apis", "create", _api_file(tmp_path, upstream, "chat"), *url))[0] == 5  # exists
        code, _, err = await in_process("apis", "create", _api_file(tmp_path, upstream, "bad", colour=1), *url)
        assert code == 2 and "colour: unknown field" in err
        assert (await in_process("apis", "show", "nope", *url))[0] == 3
        assert (await in_process("apis", "list", *url, ASGI_WS_GATEWAY_ADMIN_TOKEN="wrong"))[0] == 4
        assert (await in_process("apis", "list", "--url", "http://127.0.0.1:1/_gateway"))[0] == 1
        code, _, _ = await cli("apis", "update", "chat", "-", *url, "--drain",
                               stdin=f"path: /ws/chat2\nupstreams: [{upstream.url('/echo')}]\n")  # fmt: skip
        assert code == 0
        assert (await in_process("apis", "delete", "echo", *url))[0] == 0
        exported = tmp_path / "exported.yaml"
        assert (await in_process("export", "-o", str(exported), *url))[0] == 0
        assert [(a.name, a.path) for a in load_config(exported).apis] == [("chat", "/ws/chat2")]


async def test_subscriptions_and_connections_commands(config: Path, upstream: UpstreamServer, in_process: Cli) -> None:
    async with standalone(config) as gateway:
        url = ("--url", gateway.url)
        assert (await cli("products", "create", "gold", "--api", "echo", *url))[0] == 0
        code, out, err = await in_process("subscriptions", "create", "gold", "--id", "s1", "--name", "alice", *url)
        assert code == 0 and "shown this once" in err
        key = out.rsplit("key: ", 1)[1].strip()
        assert len(key) >= 40
        code, out, _ = await in_process("subscriptions", "suspend", "s1", "--json", *url)
        assert json.loads(out)["state"] == "suspended"
        code, out, _ = await in_process("subscriptions", "list", *url)
        assert out.splitlines()[1].split() == ["s1", "gold", "alice", "suspended"] and key not in out
        code, out, _ = await in_process("subscriptions", "regenerate-key", "s1", "--json", *url)
        new_key = json.loads(out)["key"]
        assert new_key != key
        assert (await in_process("products", "delete", "gold", *url))[0] == 5  # still subscribed
        # The product now guards the API on every worker: no key, no connection.
        assert (await expect_status(gateway.ws("/ws/echo")))[0] == 401
        suspended = {"X-Subscription-Key": new_key}
        assert (await expect_status(gateway.ws("/ws/echo"), additional_headers=suspended))[0] == 403
        assert (await in_process("subscriptions", "activate", "s1", *url))[0] == 0

        async with await connect(gateway.ws("/ws/echo"), additional_headers={"X-Subscription-Key": new_key}) as ws:
            code, out, _ = await in_process("connections", "list", "--json", *url)
            (live,) = json.loads(out)
            assert live["subscription"] == "s1"  # who the gateway admitted, as the policies established
            code, out, _ = await in_process("connections", "send", live["id"], "hello from the cli", *url)
            assert code == 0 and out.startswith("done (on worker ")
            assert await ws.recv() == "hello from the cli"
            assert (await in_process("connections", "send", live["id"], "00ff", "--binary", *url))[0] == 0
            assert await ws.recv() == b"\x00\xff"
            assert (await in_process("connections", "kick", "nope", *url))[0] == 3
            code, _, _ = await in_process("connections", "kick", live["id"], "--code", "4003", "--reason", "bye", *url)
            assert code == 0
            assert await expect_close(ws) == (4003, "bye")


async def test_connect_prints_frames_with_timestamps_and_the_close_code(config: Path, upstream: UpstreamServer) -> None:
    async with standalone(config) as gateway:
        code, out, _ = await cli("connect", gateway.ws("/ws/echo"), "--linger", "0.3",
                                 stdin="hello\n/json {\"a\": 1}\n/binary 00ff\n")  # fmt: skip
        assert code == 0
        lines = out.splitlines()
        assert lines[0].endswith(f"* connected to {gateway.ws('/ws/echo')}")
        events = [line.split(" ", 1)[1] for line in lines[1:]]
        frames = ["hello  (5 B)", '{"a": 1}  (8 B)', "[binary] 00 ff  (2 B)"]
        assert [e[2:] for e in events if e.startswith(">")] == frames  # sent, in order
        assert [e[2:] for e in events if e.startswith("<")] == frames  # echoed, in order
        assert events[-1] == "* closed 1000"
        assert all(len(line.split(" ", 1)[0]) == len("12:00:00.000") for line in lines)

        code, out, _ = await cli("connect", gateway.ws("/ws/nowhere"), "--json")
        assert code == 1 and json.loads(out)["status"] == 404

    with UpstreamServer() as closer:
        _write_config(config, "c", "/ws/close", closer.url("/close/4009"))
        async with standalone(config) as gateway:
            code, out, _ = await cli("connect", gateway.ws("/ws/close"), "-H", "X-Test: 1", "--json", stdin="go away\n")
            records = [json.loads(line) for line in out.splitlines()]
    assert code == 6
    assert records[-1]["event"] == "close" and (records[-1]["code"], records[-1]["reason"]) == (4009, "go away")
    assert (await cli("connect", "ws://127.0.0.1:1/", "-H", "no colon"))[0] == 2


# What a hostile server sends: an OSC 52 clipboard write, a screen clear, a newline and a forged
# event, a carriage return, a bidi override, a C1 control; and a close reason forging a line too.
HOSTILE_FRAMES = ["\x1b]52;c;aGFja2Vk\x07", "\x1b[2J\x1b[H", "ok\n12:00:00.000 * closed 1000", "a\rb\u202ec\x9b"]
HOSTILE_REASON = "bye\x1b[31m\r\n12:00:00.000 * closed 1000"
EVENT_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} [*<>!] \S")


def _shown_raw(out: str) -> list[str]:
    """The characters a terminal would obey, or break a line at, found in ``out`` (newlines aside)."""
    return [c for c in out.replace("\n", "") if not c.isprintable() or c in "\x1b\x07\r\u202e\u2028"]


async def test_connect_shows_a_servers_control_characters_as_escapes_one_event_a_line() -> None:
    async def hostile(ws: ServerConnection) -> None:
        for frame in HOSTILE_FRAMES:
            await ws.send(frame)
        await ws.close(4000, HOSTILE_REASON)

    async with serve(hostile, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        code, out, _ = await cli("connect", url, "--linger", "10")
        _, as_json, _ = await cli("connect", url, "--linger", "10", "--json")
    assert code == 6
    assert _shown_raw(out) == []
    lines = out.splitlines()
    assert len(lines) == 1 + len(HOSTILE_FRAMES) + 1  # open, each frame, close
    assert all(EVENT_LINE.match(line) for line in lines), lines
    events = [line.split(" ", 1)[1] for line in lines]
    shown = ["\\x1b]52;c;aGFja2Vk\\x07", "\\x1b[2J\\x1b[H", "ok\\n12:00:00.000 * closed 1000", "a\\rb\\u202ec\\x9b"]
    sizes = [len(frame.encode()) for frame in HOSTILE_FRAMES]
    assert events[1:-1] == [f"< {text}  ({size} B)" for text, size in zip(shown, sizes, strict=True)]
    assert events[-1] == '* closed 4000 "bye\\x1b[31m\\r\\n12:00:00.000 * closed 1000"'
    records = [json.loads(line) for line in as_json.splitlines()]  # --json: the exact values, JSON-escaped
    assert [r["data"] for r in records if r["event"] == "received"] == HOSTILE_FRAMES
    assert (records[-1]["code"], records[-1]["reason"]) == (4000, HOSTILE_REASON)


async def test_connect_shows_a_refusals_body_as_escapes_on_one_line() -> None:
    body = 'denied\x1b[2J\n12:00:00.000 * connected to ws://elsewhere/\r\n{"a": "\\u0007"}'

    def refuse(ws: ServerConnection, request: Request) -> Response:
        return ws.respond(403, body)

    async with serve(lambda ws: ws.close(), "127.0.0.1", 0, process_request=refuse) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        code, out, _ = await cli("connect", url)
    assert code == 1
    assert _shown_raw(out) == []
    (line,) = out.splitlines()
    assert line.split(" ", 1)[1] == (
        '! handshake refused: 403 denied\\x1b[2J\\n12:00:00.000 * connected to ws://elsewhere/\\r\\n{"a": "\\\\u0007"}'
    )


async def test_run_without_an_admin_token_refuses_to_start(config: Path) -> None:
    code, _, err = await cli("run", str(config), "--management", "/_gateway", ASGI_WS_GATEWAY_ADMIN_TOKEN="")
    assert code == 2 and "ASGI_WS_GATEWAY_ADMIN_TOKEN" in err


@pytest.mark.parametrize("token", [" padded-admin-token-0123", "admin token with spaces", "tökén-with-non-ascii-123"])
async def test_run_refuses_an_admin_token_no_client_could_send(config: Path, token: str) -> None:
    """A header carries visible ASCII only: the API used to start and refuse every request."""
    code, _, err = await cli("run", str(config), "--management", "/_gateway", ASGI_WS_GATEWAY_ADMIN_TOKEN=token)
    assert code == 2 and "ASGI_WS_GATEWAY_ADMIN_TOKEN: the admin token must be visible ASCII characters" in err


async def test_changes_survive_a_killed_gateway(config: Path, tmp_path: Path, upstream: UpstreamServer) -> None:
    """SIGKILL right after the API answered: the state file already holds every change."""
    first: Standalone
    async with standalone(config) as first:
        for i in range(3):
            await first.client.create_api({"name": f"k{i}", "path": f"/ws/k{i}", "upstreams": [upstream.url("/echo")]})
        await first.client.create_product("p", ["k0"])
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
    assert (tmp_path / "gateway.state.json").exists()
    async with standalone(config) as second:
        names = [a["name"] for a in await second.client.list_apis()]
        assert names == ["echo", "k0", "k1", "k2"]
        assert [p["name"] for p in await second.client.list_products()] == ["p"]
        async with await connect(second.ws("/ws/k2")) as ws:
            await ws.send("back")
            assert await ws.recv() == "back"
    assert TOKEN not in (tmp_path / "gateway.state.json").read_text()


async def test_run_serves_the_management_api_on_its_own_port(config: Path) -> None:
    management_port = free_port()
    async with standalone(config, management_port=management_port) as gateway:
        assert [a["name"] for a in await gateway.client.list_apis()] == ["echo"]
        status, _, _ = await expect_status(f"ws://127.0.0.1:{management_port}/ws/echo")
        assert status == 403  # the management port serves no WebSocket API (Starlette refuses the route)
        async with await connect(gateway.ws("/ws/echo")) as ws:
            await ws.send("gateway port")
            assert await ws.recv() == "gateway port"
        code, _, _ = await cli("apis", "list", "--url", f"http://127.0.0.1:{gateway.port}/_gateway")
        assert code == 3  # the gateway's port has no management API: the standalone app answers 404


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"{k}: &{k} [{', '.join([f'*{p}'] * 11)}]\n" for p, k in zip("abcde", "bcdef", strict=True))
            + "name: *f\n",
            "holds more than 1,000,000 values once its aliases are expanded",
        ),
        ("name: &r [*r]\n", "an alias refers to a value that contains it"),
        ("[" * 3000 + "]" * 3000 + "\n", "nested too deeply to read"),
    ],
    ids=["alias-bomb", "cycle", "deep"],
)
async def test_a_hostile_file_is_refused_before_anything_is_sent(tmp_path: Path, text: str, problem: str) -> None:
    """``apis create FILE`` read an alias bomb as is, and expanding it to send it as JSON ate the shell's memory."""
    path = tmp_path / "api.yaml"
    path.write_text(text)
    code, out, err = await cli("apis", "create", str(path), "--url", "http://127.0.0.1:9")  # nothing listens there
    assert (code, out) == (2, "")
    assert err == f"error: {path}: {problem}\n"
