"""The management side's files against a local attacker: another user of the host who gets a file to the
state file's path, or to ``export -o``'s, first (real ``run --management`` processes and ``asgi-ws-gateway
export``, a real second user made with ``useradd``, a directory every user can write, as ``/tmp`` is).

The state file is beside the configuration by default (``gateway.yaml``: ``gateway.state.json``, with
``.lock`` and ``.etag-key`` beside it). Before: another user's state document there was applied at start-up
(the configuration's ``ip-filter`` gone, an API of theirs added), a symbolic link there was followed, their
lock file was ``flock``-ed (held by them, start-up waited for ever), a link at the lock's path made the file
it named (a root gateway's ``O_CREAT``), and their ETag key was used. ``export -o`` wrote through their link
(root overwrote the file it named) and into their file (theirs to edit before the operator deploys it).
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websockets
import yaml

from asgi_ws_gateway.management.overlay import FORMAT
from support.processes import EXE, ServerProcess, cli_env, ready_server
from support.servers import free_port
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a second user is made with useradd (root)")

TOKEN = "t" * 40
OWNED = "not used; name a path in a directory only this user can write"


@pytest.fixture(scope="module")
def other_user() -> Iterator[int]:
    """The uid of a user of the host who is not the gateway's (removed afterwards)."""
    if shutil.which("useradd") is None:
        pytest.skip("no useradd")
    name = f"gws{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield int(subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True).stdout)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can write, sticky, as ``/tmp`` is."""
    directory = Path(tempfile.mkdtemp(prefix="gw-shared-", dir="/tmp"))
    directory.chmod(0o1777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def _config(directory: Path, upstream: UpstreamServer) -> Path:
    """An API only clients from 203.0.113.0/24 may use (the test's client is 127.0.0.1: refused)."""
    apis = [{"name": "filtered", "path": "/ws/filtered", "upstreams": [upstream.url("/echo")],
             "policies": [{"ip-filter": {"allow": ["203.0.113.0/24"]}}]}]  # fmt: skip
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump({"apis": apis}))
    return path


def _their_state(upstream: UpstreamServer) -> str:
    """Another user's state document: the filtered API without its filter, and an API of theirs."""
    apis = {name: {"name": name, "path": path, "upstreams": [upstream.url("/echo")]}
            for name, path in (("filtered", "/ws/filtered"), ("theirs", "/ws/theirs"))}  # fmt: skip
    document = {"format": FORMAT, "epoch": "0123456789abcdef", "revision": 1, "apis": apis}
    return json.dumps({**document, "products": {}, "subscriptions": {}, "drains": {}})


def _run(config: Path) -> ServerProcess:
    port = free_port()
    args = ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port), "--management", "/_gateway"]
    return ServerProcess(args, port=port, cwd=config.parent, env={"ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN})


def _refused_at_start(config: Path, path: Path, problem: str) -> None:
    """``run`` exits 7 naming ``path`` and its ``problem`` (a hang, or a server that serves, fails the test)."""
    with _run(config) as server:
        assert server.wait_exit(60) == 7, server.output()
        assert f"{problem}" in server.output(), server.output()
        assert f": {OWNED}" in server.output(), server.output()
        assert f"'{path}'" in server.output(), server.output()


def _plant(path: Path, uid: int, text: str) -> None:
    path.write_text(text)
    os.chown(path, uid, uid)


def test_another_users_state_file_beside_the_configuration_is_not_applied(
    shared_dir: Path, other_user: int, upstream: UpstreamServer
) -> None:
    """Before: applied at start-up; the filtered API admitted 127.0.0.1, and /ws/theirs was served."""
    config = _config(shared_dir, upstream)
    _plant(shared_dir / "gateway.state.json", other_user, _their_state(upstream))
    _refused_at_start(config, shared_dir / "gateway.state.json", "(a file) belongs to user gws")


def test_a_symbolic_link_at_the_state_files_path_is_not_followed(
    shared_dir: Path, other_user: int, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """Before: followed (here to a state document of root's, which a link of another user's chose)."""
    config = _config(shared_dir, upstream)
    (tmp_path / "elsewhere.json").write_text(_their_state(upstream))
    link = shared_dir / "gateway.state.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    os.lchown(link, other_user, other_user)
    _refused_at_start(config, link, "is a symbolic link (not followed)")


def test_a_symbolic_link_at_the_lock_files_path_makes_no_file(
    shared_dir: Path, other_user: int, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """Before: a root gateway opened the lock through the link with O_CREAT, and made the file it named."""
    config = _config(shared_dir, upstream)
    target = tmp_path / "made-by-the-gateway"
    link = shared_dir / "gateway.state.json.lock"
    link.symlink_to(target)
    os.lchown(link, other_user, other_user)
    _refused_at_start(config, link, "is a symbolic link (not followed)")
    assert not target.exists()


def test_another_users_lock_file_is_not_waited_for(shared_dir: Path, other_user: int, upstream: UpstreamServer) -> None:
    """Before: the gateway took the lock on their file, whose flock they held: start-up waited for ever."""
    config = _config(shared_dir, upstream)
    lock = shared_dir / "gateway.state.json.lock"
    _plant(lock, other_user, "")
    fd = os.open(lock, os.O_RDONLY)
    holding = ["python3", "-c", f"import fcntl, sys; fcntl.flock({fd}, fcntl.LOCK_EX); print('held', flush=True); "
               "sys.stdin.read()"]  # fmt: skip
    # Their process, holding the flock on their file until the test ends.
    with subprocess.Popen(holding, user=other_user, pass_fds=[fd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as holder:  # fmt: skip
        os.close(fd)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            _refused_at_start(config, lock, "(a file) belongs to user gws")
        finally:
            holder.kill()


def test_another_users_etag_key_is_not_used(shared_dir: Path, other_user: int, upstream: UpstreamServer) -> None:
    """Before: their 32 bytes keyed the ETags (they know the key: a secret shown as REDACTED can be guessed)."""
    config = _config(shared_dir, upstream)
    key = shared_dir / "gateway.state.json.etag-key"
    _plant(key, other_user, "k" * 32)
    _refused_at_start(config, key, "(a file) belongs to user gws")


def test_a_state_file_every_user_may_write_is_not_applied(shared_dir: Path, upstream: UpstreamServer) -> None:
    """The gateway's user's own file, but mode 0666: any user could have written the document in it."""
    config = _config(shared_dir, upstream)
    state = shared_dir / "gateway.state.json"
    state.write_text(_their_state(upstream))
    state.chmod(0o666)
    _refused_at_start(config, state, "may be written by every user (mode 0666)")


@pytest.fixture
def group_with(other_user: int) -> Iterator[Callable[[bool], int]]:
    """Make a group holding this user, and the other user too when asked; its gid (removed afterwards)."""
    made: list[str] = []

    def make(with_other: bool) -> int:
        name = f"gwg{uuid.uuid4().hex[:8]}"
        subprocess.run(["groupadd", name], check=True)
        made.append(name)
        other = subprocess.run(["id", "-nu", str(other_user)], check=True, capture_output=True, text=True).stdout
        members = [pwd.getpwuid(os.geteuid()).pw_name, *([other.strip()] if with_other else [])]
        subprocess.run(["gpasswd", "-M", ",".join(members), name], check=True, capture_output=True)
        return grp.getgrnam(name).gr_gid

    yield make
    for name in made:
        subprocess.run(["groupdel", name], check=False)


@pytest.mark.skipif(shutil.which("groupadd") is None or shutil.which("gpasswd") is None, reason="no groupadd")
@pytest.mark.parametrize("with_other", [True, False])
def test_a_state_file_its_group_lets_another_user_write_is_not_applied(
    tmp_path: Path, upstream: UpstreamServer, group_with: Callable[[bool], int], with_other: bool
) -> None:
    """Mode 0660 and a group holding another user: they could have written the document in it (before: applied,
    /ws/theirs served). A group of this user's alone is no one else's: read as before."""
    config = _config(tmp_path, upstream)
    state = tmp_path / "gateway.state.json"
    state.write_text(_their_state(upstream))
    os.chown(state, -1, group_with(with_other))
    state.chmod(0o660)
    if with_other:
        _refused_at_start(config, state, "may be written by its group gwg")
        return
    with _run(config) as server:
        server.wait_ready()
        assert asyncio.run(_status(server.port, "/ws/theirs")) == 101, server.output()
        assert server.stop() == 0, server.output()


def test_a_state_file_replaced_by_another_users_while_running_is_not_applied(
    shared_dir: Path, other_user: int, upstream: UpstreamServer
) -> None:
    """In a directory others can write without the sticky bit they can replace the file: the worker keeps the
    state it runs. Before: its next poll applied theirs (the filtered API then admitted 127.0.0.1)."""
    shared_dir.chmod(0o777)
    config = _config(shared_dir, upstream)
    with _run(config) as server:
        server.wait_ready()
        theirs = shared_dir / "theirs.json"
        _plant(theirs, other_user, _their_state(upstream))
        os.replace(theirs, shared_dir / "gateway.state.json")
        _wait_for_output(server, ("belongs to user gws", "applied management revision 1"))
        assert "applied management revision 1" not in server.output(), server.output()
        assert asyncio.run(_status(server.port, "/ws/filtered")) == 403


async def _status(port: int, path: str) -> int:
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}", open_timeout=30):
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


@pytest.fixture(scope="module")
def management_url(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gateway's management API for the ``export`` tests, which only read its configuration (a gateway
    started per test was most of their CPU)."""
    config = _config(tmp_path_factory.mktemp("exported"), upstream)

    def command(port: int) -> list[str]:
        return ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port), "--management", "/_gateway"]

    with ready_server(command, cwd=config.parent, env=cli_env()) as server:
        yield f"http://127.0.0.1:{server.port}/_gateway"


def _export(output: str, url: str) -> subprocess.CompletedProcess[str]:
    """``asgi-ws-gateway export -o OUTPUT --url URL``, its output captured."""
    args = [str(EXE), "export", "-o", output, "--url", url]
    return subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=60)


def _wait_for_output(server: ServerProcess, lines: tuple[str, ...], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(line in server.output() for line in lines):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)


@pytest.mark.parametrize("planted", ["link", "file"])
async def test_export_writes_neither_through_another_users_link_nor_into_their_file(
    shared_dir: Path, other_user: int, management_url: str, tmp_path: Path, planted: str
) -> None:
    """Before: exit 0, the file their link named overwritten with the configuration (as root), or the
    configuration written into their file (mode 0666: theirs to change before the operator runs it)."""
    victim = tmp_path / "precious"
    victim.write_text("precious\n")
    output = shared_dir / "exported.yaml"
    if planted == "link":
        output.symlink_to(victim)
        os.lchown(output, other_user, other_user)
    else:
        _plant(output, other_user, "")
        output.chmod(0o666)
    done = await asyncio.to_thread(_export, str(output), management_url)
    assert done.returncode == 2, done.stderr
    problem = "is a symbolic link (not followed)" if planted == "link" else "(a file) belongs to user gws"
    assert done.stderr.startswith(f"error: --output: [Errno 1] {problem}") and OWNED in done.stderr, done.stderr
    assert victim.read_text() == "precious\n"
    assert output.is_symlink() or output.read_text() == ""


async def test_export_still_replaces_a_file_of_this_users(management_url: str, tmp_path: Path) -> None:
    """The usual export: the file made, then written again in place, shorter (nothing of the old left)."""
    output = tmp_path / "exported.yaml"
    output.write_text("x" * 100_000)
    done = await asyncio.to_thread(_export, str(output), management_url)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(output.read_text())["apis"][0]["name"] == "filtered"


@pytest.mark.parametrize("where", ["private", "shared"])
async def test_export_follows_this_users_link_only_where_no_other_user_can_replace_it(
    shared_dir: Path, management_url: str, tmp_path: Path, where: str
) -> None:
    """The operator's own link (``current.yaml -> v3.yaml``) in a directory of theirs: written through, to the
    file it names (it was: exit 2). In a directory every user can write, another user could put theirs in its
    place between the look and the open: refused, as theirs is."""
    target = tmp_path / "v3.yaml"
    target.write_text("x" * 100_000)
    link = (tmp_path if where == "private" else shared_dir) / "current.yaml"
    link.symlink_to(target)
    done = await asyncio.to_thread(_export, str(link), management_url)
    if where == "private":
        assert done.returncode == 0, done.stderr
        assert yaml.safe_load(target.read_text())["apis"][0]["name"] == "filtered"
    else:
        assert done.returncode == 2, done.stderr
        problem = "is a symbolic link (not followed): other users can write its directory (mode 1777)"
        assert done.stderr.startswith(f"error: --output: [Errno 1] {problem}"), done.stderr
        assert target.read_text() == "x" * 100_000
    assert link.is_symlink()


async def test_export_writes_to_dev_stdout(management_url: str) -> None:
    """``-o /dev/stdout`` (root's link, in root's /dev, to the process's own output): written, as before the
    links were refused (it was: exit 2, 'is a symbolic link')."""
    done = await asyncio.to_thread(_export, "/dev/stdout", management_url)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["apis"][0]["name"] == "filtered"
