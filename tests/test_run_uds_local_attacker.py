"""``run --uds PATH`` against a local attacker: another user of the host (real ``run`` processes, a real
second user made with ``useradd``, clients through ``unix_connect`` and plain sockets).

Before: the socket was uvicorn's mode 0666, so with ``trusted_proxies: ["unix:"]`` any local user could
connect past the proxy and forge X-Forwarded-For; two gateways started at once on a stale socket could
each take it for stale (one removing the other's fresh socket); a Unix-socket connection's access line
gave its trusted proxy as ``-``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway.server.unix_socket import claim_socket, remove_socket
from asgi_ws_gateway.server.unix_socket_lock import socket_path_lock
from asgi_ws_gateway.socket_access import replaceable_by_others
from support.processes import ServerProcess, main_in_process
from support.uds import claim_refusal
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a second user is made with useradd (root)")

SYSTEM_PYTHON = "/usr/bin/python3"
"""What the other user runs (the test's own interpreter may be in a directory only root can enter)."""
OPEN_WARNING = "every local user can connect to the socket"


@pytest.fixture(scope="module")
def other_user() -> Iterator[str]:
    """A user of the host who is neither the gateway's user nor in its group (removed afterwards)."""
    if shutil.which("useradd") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("no useradd, or no system Python for the other user")
    name = f"gwt{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def open_dir(socket_dir: Path) -> Path:
    """``socket_dir`` searchable by every user: only the socket's own mode keeps them out."""
    socket_dir.chmod(0o755)
    return socket_dir


def _config(tmp: Path, upstream: UpstreamServer | None, **top: Any) -> Path:
    url = upstream.url("/headers") if upstream is not None else "ws://127.0.0.1:9/"
    apis = [{"name": "filtered", "path": "/ws/filtered", "upstreams": [url],
             "policies": [{"ip-filter": {"allow": ["203.0.113.0/24"]}}]}]  # fmt: skip
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({"apis": apis, "telemetry": {"access_log": "json"}, **top}))
    return path


def _run(tmp: Path, config: Path, *args: str) -> ServerProcess:
    return ServerProcess(["-m", "asgi_ws_gateway", "run", str(config), *args], port=0, cwd=tmp)


def _refused(tmp_path: Path, sock: Path, *, through_run: bool) -> str:
    """What ``run --uds sock`` writes to stderr as it exits 7, refused the path before it serves: by a ``run``
    process, or as :func:`~support.uds.claim_refusal` reads it in this process."""
    if not through_run:
        return claim_refusal(sock)
    with _run(tmp_path, _config(tmp_path, None), "--uds", str(sock)) as server:
        assert server.wait_exit() == 7
        return server.stderr()


_FORGE = """
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    try:
        s.connect(sys.argv[1])
    except OSError as exc:
        print(type(exc).__name__)
        raise SystemExit(0)
    s.sendall(b"GET /ws/filtered HTTP/1.1\\r\\nHost: gw\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n"
              b"X-Forwarded-For: 203.0.113.7\\r\\n\\r\\n")
    print(s.recv(4096).split(b"\\r\\n")[0].decode())
"""


def _identity(user: str) -> tuple[int, int]:
    """``user``'s uid and gid, for ``subprocess``'s ``user=`` and ``group=`` (with ``extra_groups=[]``):
    ``user=`` alone kept root's group and groups."""
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _as_user(user: str, sock: Path, groups: tuple[int, ...] = ()) -> str:
    """What another user (with ``groups`` besides their own) connecting to ``sock`` and forging X-Forwarded-For
    gets: the status line, or the error."""
    uid, gid = _identity(user)
    done = subprocess.run([SYSTEM_PYTHON, "-c", _FORGE, str(sock)], user=uid, group=gid, extra_groups=list(groups),
                          capture_output=True, text=True, timeout=30, check=True, cwd="/")  # fmt: skip
    return done.stdout.strip()


# --- the socket's mode ---------------------------------------------------------------------------------------


async def test_the_socket_is_0660_and_another_user_cannot_forge_a_client(
    tmp_path: Path, open_dir: Path, upstream: UpstreamServer, other_user: str
) -> None:
    """Default ``--uds-mode`` 660: a user outside the group is refused the connection (it was 0666: the
    forged X-Forwarded-For passed ip-filter as 203.0.113.7 and reached the upstream); no WARNING."""
    sock = open_dir / "gw.sock"
    with _run(tmp_path, _config(tmp_path, upstream, trusted_proxies=["unix:"]), "--uds", str(sock)) as server:
        server.wait_for_line("Application startup complete")
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o660
        assert _as_user(other_user, sock) == "PermissionError"
        server.stop()
        output = server.output()
    assert OPEN_WARNING not in output
    assert upstream.handshakes == []


async def test_an_open_mode_with_unix_trusted_is_warned_of_at_start_up(
    tmp_path: Path, open_dir: Path, upstream: UpstreamServer, other_user: str
) -> None:
    """``--uds-mode 666`` is served as asked, with a WARNING naming the risk and the remedy: and indeed
    another user's forged header passes as the client."""
    sock = open_dir / "gw.sock"
    config = _config(tmp_path, upstream, trusted_proxies=["unix:"])
    with _run(tmp_path, config, "--uds", str(sock), "--uds-mode", "666") as server:
        server.wait_for_line(OPEN_WARNING)
        server.wait_for_line("Application startup complete")
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o666
        assert _as_user(other_user, sock) == "HTTP/1.1 101 Switching Protocols"
        server.stop()
        output = server.output()
    assert output.count(OPEN_WARNING) == 1
    assert "(mode 0666)" in output and "use --uds-mode 660" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(("mode", "trusted"), [("600", ["unix:"]), ("666", [])])
def test_no_warning_where_no_one_else_can_forge(tmp_path: Path, open_dir: Path, mode: str, trusted: list[str]) -> None:
    """0600 (owner only), or 0666 without ``unix:`` trusted (no header believed): served with that mode, no WARNING."""
    sock = open_dir / "gw.sock"
    with _run(tmp_path, _config(tmp_path, None, trusted_proxies=trusted), "--uds", str(sock), "--uds-mode", mode) as s:
        s.wait_for_line("Application startup complete")
        assert stat.S_IMODE(os.lstat(sock).st_mode) == int(mode, 8)
        s.stop()
        assert OPEN_WARNING not in s.output()


def test_an_open_socket_behind_a_closed_directory_and_a_link_is_warned_of(
    tmp_path: Path, open_dir: Path, upstream: UpstreamServer, other_user: str
) -> None:
    """``--uds closed/link/gw.sock``, the link to an open directory: the closed directory keeps no one out
    of the socket's real path. Before: no WARNING, and another user forged a client through it."""
    (open_dir / "real").mkdir(mode=0o755)
    closed = open_dir / "closed"
    closed.mkdir(mode=0o700)
    (closed / "link").symlink_to(open_dir / "real")
    sock = closed / "link" / "gw.sock"
    config = _config(tmp_path, upstream, trusted_proxies=["unix:"])
    with _run(tmp_path, config, "--uds", str(sock), "--uds-mode", "666") as server:
        server.wait_for_line("Application startup complete")
        assert _as_user(other_user, open_dir / "real" / "gw.sock") == "HTTP/1.1 101 Switching Protocols"
        server.stop()
        output = server.output()
    assert output.count(OPEN_WARNING) == 1, output


def test_an_open_mode_in_a_closed_directory_is_not_warned_of(tmp_path: Path, socket_dir: Path) -> None:
    """0666 in a directory others cannot enter (``socket_dir`` is 0700): no one else can reach it, no WARNING."""
    sock = socket_dir / "gw.sock"
    config = _config(tmp_path, None, trusted_proxies=["unix:"])
    with _run(tmp_path, config, "--uds", str(sock), "--uds-mode", "666") as server:
        server.wait_for_line("Application startup complete")
        server.stop()
        assert OPEN_WARNING not in server.output()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("9", "is not an octal mode"), ("rw-rw----", "is not an octal mode"), ("", "is not an octal mode"),
     ("06600", "is not an octal mode"), ("1777", "permission bits only"), ("460", "the owner needs read and write"),
     ("0o066", "the owner needs read and write")],
)  # fmt: skip
def test_a_bad_uds_mode_is_a_usage_error(tmp_path: Path, socket_dir: Path, mode: str, expected: str) -> None:
    """Exit 2 naming the value and what a mode is; nothing bound."""
    sock = socket_dir / "gw.sock"
    code, _, err = main_in_process("run", str(_config(tmp_path, None)), "--uds", str(sock), "--uds-mode", mode)
    assert code == 2
    assert "--uds-mode" in err and expected in err
    assert not sock.exists()


def test_uds_mode_needs_uds(tmp_path: Path) -> None:
    """``--uds-mode`` alone would be dropped without a word: exit 2."""
    code, _, err = main_in_process("run", str(_config(tmp_path, None)), "--uds-mode", "600")
    assert code == 2
    assert "--uds-mode is the mode of --uds's socket: give --uds" in err


def test_the_socket_is_never_wider_than_its_mode(socket_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Created with its mode under any umask (0 here: a plain bind makes 0777), not ``chmod``-ed after the bind
    (uvicorn's chmod, by path, followed a symbolic link put in the socket's place); the umask is restored."""
    sock = str(socket_dir / "gw.sock")

    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("chmod by path")

    monkeypatch.setattr(os, "chmod", no_chmod)
    previous = os.umask(0)
    try:
        listener, stamp = claim_socket(sock, 0o600, 8)
        assert os.umask(0) == 0
    finally:
        os.umask(previous)
    with listener:
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(sock)  # listening already
    remove_socket(sock, stamp)
    assert not os.path.lexists(sock)
    assert not os.path.lexists(sock + ".lock")  # the lock file goes with the lock


# --- two gateways at once: the path's lock ----------------------------------------------------------------


def _waits_for_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked in an flock (``/proc/locks`` lists a waiter with ``->``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[fields.index("->") + 4] == str(pid):
            return True
    return False


async def test_a_start_waits_while_another_claims_the_path(tmp_path: Path, socket_dir: Path) -> None:
    """Two ``run --uds`` on a stale socket at once: while one holds the path's lock (here the test, which then
    binds a live socket there) the other waits, then finds the path served and exits 7, leaving that socket.
    Before, each checked at once: both could take the socket for stale, one removing the other's fresh socket."""
    sock = socket_dir / "gw.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sock))
    live = socket.socket(socket.AF_UNIX)
    try:
        with contextlib.ExitStack() as lock:
            lock.enter_context(socket_path_lock(str(sock)))  # held before the second gateway starts
            with _run(tmp_path, _config(tmp_path, None), "--uds", str(sock)) as second:
                await _until_waiting_for_lock(second)
                sock.unlink()  # the first gateway's claim: the stale socket replaced by its own
                live.bind(str(sock))
                live.listen()
                inode = os.lstat(sock).st_ino
                lock.close()
                assert second.wait_exit() == 7
                assert f"error: --uds {sock}: another server listens on it" in second.stderr()
        assert os.lstat(sock).st_ino == inode
    finally:
        live.close()


async def _until_waiting_for_lock(server: ServerProcess) -> None:
    for _ in range(600):
        if _waits_for_lock(server.process.pid):
            return
        assert server.process.poll() is None, server.output()
        await asyncio.sleep(0.05)
    pytest.fail(f"never waited for the lock: {server.output()}")


async def test_a_stopping_gateway_removes_its_socket_under_the_lock(tmp_path: Path, socket_dir: Path) -> None:
    """A gateway stopping while another claims the path (holding the lock, replacing the socket) waits for
    the lock before it looks: the new socket stays. Before, its look and its unlink could straddle the claim."""
    sock = socket_dir / "gw.sock"
    with _run(tmp_path, _config(tmp_path, None), "--uds", str(sock)) as old:
        old.wait_for_line("Application startup complete")
        with contextlib.ExitStack() as lock, socket.socket(socket.AF_UNIX) as new:
            lock.enter_context(socket_path_lock(str(sock)))
            old.process.terminate()
            await _until_waiting_for_lock(old)
            sock.unlink()
            new.bind(str(sock))
            new.listen()
            lock.close()
            assert old.wait_exit() == 0
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(sock))  # the new one's, still there


@pytest.mark.parametrize("planted", ["symlink", "other user's file", "directory"])
def test_a_planted_lock_file_is_refused(tmp_path: Path, socket_dir: Path, other_user: str, planted: str) -> None:
    """Another user's symlink, file or directory at ``PATH.lock`` (a world-writable directory): exit 7 naming
    it, the link's target neither created nor touched, nothing bound (the symlink through ``run``)."""
    sock = socket_dir / "gw.sock"
    lock = socket_dir / "gw.sock.lock"
    target = tmp_path / "victim"
    if planted == "symlink":
        lock.symlink_to(target)
        expected = "is a symbolic link"
    elif planted == "directory":
        lock.mkdir()
        expected = "cannot be opened"
    else:
        lock.write_text("")
        user = pwd.getpwnam(other_user)
        os.chown(lock, user.pw_uid, user.pw_gid)
        expected = f"(a file) belongs to user {other_user} (uid {user.pw_uid})"
    stderr = _refused(tmp_path, sock, through_run=planted == "symlink")
    assert f"error: --uds {sock}: its lock file {lock} {expected}" in stderr
    assert "Traceback" not in stderr
    assert not target.exists()
    assert not sock.exists()


# --- what a local attacker may put at PATH ---------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["symlink to a file", "dangling symlink", "symlink to a socket", "directory"])
def test_what_is_planted_at_the_path_is_refused_and_left(tmp_path: Path, socket_dir: Path, planted: str) -> None:
    """A symlink (to a file, to nothing, to a stale socket) or a directory at PATH: exit 7, left as it was,
    never followed (no socket made at a link's target; the link to a socket through ``run``)."""
    sock = socket_dir / "gw.sock"
    target = socket_dir / "target"
    if planted == "symlink to a file":
        target.write_text("keep me")
    elif planted == "symlink to a socket":
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(str(target))
    if planted == "directory":
        sock.mkdir()
    else:
        sock.symlink_to(target)
    stderr = _refused(tmp_path, sock, through_run=planted == "symlink to a socket")
    assert f"error: --uds {sock}: a file that is not a socket is there (not replaced)" in stderr
    assert sock.is_dir() if planted == "directory" else sock.is_symlink()
    assert planted != "dangling symlink" or not target.exists()
    assert planted != "symlink to a file" or target.read_text() == "keep me"


def test_another_users_live_socket_in_a_shared_directory_is_left(
    tmp_path: Path, open_dir: Path, other_user: str
) -> None:
    """Another user serving at PATH first (``/tmp``-like, sticky and world-writable): exit 7 naming them (never
    probed: see the squat test below), their socket kept."""
    open_dir.chmod(0o1777)
    sock = open_dir / "gw.sock"
    user = pwd.getpwnam(other_user)
    command = [SYSTEM_PYTHON, "-c", "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
               "s.listen(); print('ready', flush=True); sys.stdin.read()", str(sock)]  # fmt: skip
    uid, gid = _identity(other_user)
    with subprocess.Popen(command, user=uid, group=gid, extra_groups=[], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, cwd="/") as impostor:  # fmt: skip
        try:
            assert impostor.stdout is not None and impostor.stdout.readline() == "ready\n"
            stderr = _refused(tmp_path, sock, through_run=False)
            assert f"a socket there belongs to user {other_user} (uid {user.pw_uid})" in stderr
            assert os.lstat(sock).st_uid == user.pw_uid
        finally:
            impostor.kill()


async def test_stop_leaves_a_socket_that_replaced_ours_while_running(tmp_path: Path, socket_dir: Path) -> None:
    """PATH replaced under a running gateway (unlinked, another socket bound there): stopping removes not it."""
    sock = socket_dir / "gw.sock"
    with _run(tmp_path, _config(tmp_path, None), "--uds", str(sock)) as server:
        server.wait_for_line("Application startup complete")
        sock.unlink()
        with socket.socket(socket.AF_UNIX) as impostor:
            impostor.bind(str(sock))
            impostor.listen()
            assert server.stop() == 0
            assert stat.S_ISSOCK(os.lstat(sock).st_mode)
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(sock))  # still the impostor's, listening


@pytest.mark.parametrize("directory_mode", [0o777, 0o1777])
def test_a_directory_anyone_can_write_is_warned_of(tmp_path: Path, socket_dir: Path, directory_mode: int) -> None:
    """In a directory writable by all and not sticky another user can unlink the socket and bind theirs (the
    proxy then connects to it): a WARNING at start-up. Sticky (``/tmp``'s 1777): no one else can remove it."""
    os.chmod(socket_dir, directory_mode)
    sock = socket_dir / "gw.sock"
    with _run(tmp_path, _config(tmp_path, None), "--uds", str(sock)) as server:
        server.wait_for_line("Application startup complete")
        server.stop()
        output = server.output()
    warned = f"--uds {sock}: another local user can replace the socket (its directory {socket_dir} is mode 0777"
    assert (warned in output) == (directory_mode == 0o777)


def test_a_directory_of_another_users_is_warned_of(tmp_path: Path, socket_dir: Path, other_user: str) -> None:
    """Its owner may remove the socket (or chmod the directory first): a WARNING naming them. Before: none."""
    socket_dir.chmod(0o755)
    theirs = socket_dir / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, *_identity(other_user))
    sock = theirs / "gw.sock"
    with _run(tmp_path, _config(tmp_path, None), "--uds", str(sock)) as server:
        server.wait_for_line("Application startup complete")
        server.stop()
        output = server.output()
    uid = pwd.getpwnam(other_user).pw_uid
    assert (
        f"another local user can replace the socket (its directory {theirs} belongs to user {other_user} (uid {uid}))"
        in output
    )


def _layout(root: Path, case: str, other: tuple[int, int], group: int) -> Path:
    """The socket's path under ``root`` (mode 0755, root's) for ``case``: its directories made as it says."""
    root.chmod(0o755)
    sub = root / "sub"
    sub.mkdir(mode=0o755)
    sub.chmod(0o755)
    if case in ("theirs", "theirs, sticky"):
        os.chown(sub, *other)
        sub.chmod(0o1777 if case.endswith("sticky") else 0o755)
    elif case == "above it, writable by all":
        root.chmod(0o777)
    elif case in ("group of others", "group of no one else", "group of others, sticky"):
        os.chown(sub, 0, group)
        sub.chmod(0o1770 if case.endswith("sticky") else 0o770)
    elif case == "sticky, root's":
        sub.chmod(0o1777)
    elif case in ("their link", "our link in an open directory", "our link"):
        links = root / "links"
        links.mkdir()
        links.chmod(0o777 if case == "our link in an open directory" else 0o1777 if case == "their link" else 0o755)
        (links / "to-sub").symlink_to(sub)
        if case == "their link":
            os.lchown(links / "to-sub", *other)
        return links / "to-sub" / "gw.sock"
    return sub / "gw.sock"


REPLACEABLE = {
    "theirs": True,
    "theirs, sticky": True,  # a sticky directory's owner removes any entry
    "above it, writable by all": True,  # sub renamed away, theirs put in its place
    "group of others": True,
    "their link": True,
    "our link in an open directory": True,
    "group of others, sticky": False,
    "group of no one else": False,
    "sticky, root's": False,  # /tmp's: no one else removes the gateway's own socket
    "our link": False,
}


@pytest.mark.parametrize(("case", "replaceable"), REPLACEABLE.items(), ids=list(REPLACEABLE))
def test_who_can_replace_the_socket_is_read_on_the_whole_path(
    socket_dir: Path, other_user: str, shared_group: str, case: str, replaceable: bool
) -> None:
    """Every directory up to ``/`` and each symbolic link on the way: another user's, or one they may write
    without the sticky bit, lets them put their socket (or directory) in the gateway's place. Before: only
    the socket's own directory, and only its mode for all."""
    group = grp.getgrnam(shared_group).gr_gid
    if case != "group of no one else":
        subprocess.run(["gpasswd", "-M", f"{other_user},nobody", shared_group], check=True)
    path = _layout(socket_dir, case, _identity(other_user), group)
    problem = replaceable_by_others(str(path))
    assert (problem is not None) == replaceable, problem
    if case == "theirs":
        assert (
            problem
            == f"its directory {socket_dir / 'sub'} belongs to user {other_user} (uid {_identity(other_user)[0]})"
        )


# --- another user takes the path first (a shared directory such as /tmp) -----------------------------------------


_PLANT = """
import os, socket, sys, time
path, what = sys.argv[1], sys.argv[2]
if what == "file":
    open(path, "w").close()
    os.chmod(path, 0o666)
elif what == "symlink":
    os.symlink("/etc/hostname", path)
elif what == "fifo":
    os.mkfifo(path, 0o666)
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    if what == "stale socket":
        s.close()
    else:  # a live socket whose backlog is full (listen(0) and one connection never accepted)
        s.listen(0)
        filler = socket.socket(socket.AF_UNIX)
        filler.connect(path)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def _planted_by(user: str, path: Path, what: str) -> Iterator[None]:
    """``what`` made at ``path`` by ``user`` (their process kept alive meanwhile: a live socket stays live)."""
    uid, gid = _identity(user)
    with subprocess.Popen([SYSTEM_PYTHON, "-c", _PLANT, str(path), what], user=uid, group=gid, extra_groups=[],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/") as planter:  # fmt: skip
        try:
            assert planter.stdout is not None and planter.stdout.readline() == "ready\n"
            yield
        finally:
            planter.kill()


@pytest.mark.parametrize("what", ["file", "symlink", "fifo", "stale socket", "live socket, backlog full"])
@pytest.mark.parametrize("at_lock", [False, True], ids=["PATH", "PATH.lock"])
def test_another_users_squat_on_the_path_is_refused_naming_them(
    tmp_path: Path, open_dir: Path, other_user: str, what: str, at_lock: bool
) -> None:
    """Another user's file, symlink, FIFO or socket at PATH or PATH.lock in a sticky, world-writable directory
    (``/tmp``): exit 7 naming the path and its owner, never followed, never waited on, left as it was. Before:
    their stale socket was removed (by a root gateway) and PATH taken; a live one whose backlog they kept full
    held the start-up in ``connect`` for ever; the errors named no owner. Through ``run``: a live socket at
    PATH (a wait there would hold this process, not a child) and a symlink at PATH.lock."""
    open_dir.chmod(0o1777)
    sock = open_dir / "gw.sock"
    planted = open_dir / "gw.sock.lock" if at_lock else sock
    user = pwd.getpwnam(other_user)
    with _planted_by(other_user, planted, what):
        before = os.lstat(planted)
        through_run = what == ("symlink" if at_lock else "live socket, backlog full")
        stderr = _refused(tmp_path, sock, through_run=through_run)
        after = os.lstat(planted)
    assert (after.st_ino, after.st_uid) == (before.st_ino, user.pw_uid)
    assert stderr.count(f"error: --uds {sock}: ") == 1
    assert f"belongs to user {other_user} (uid {user.pw_uid})" in stderr
    assert "a directory only this user can write" in stderr
    assert "Traceback" not in stderr
    assert at_lock or not os.path.lexists(str(sock) + ".lock")
    assert not at_lock or not os.path.lexists(sock)


# --- the socket's group -----------------------------------------------------------------------------------------

GROUP_WARNING = "the socket's group"


@pytest.fixture
def shared_group(other_user: str) -> Iterator[str]:
    """A group of its own (removed afterwards); the test lists its members."""
    name = f"gwg{uuid.uuid4().hex[:8]}"
    subprocess.run(["groupadd", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", name], check=False)


@pytest.mark.parametrize(
    ("group", "members", "warned"),
    [("shared", ["other", "nobody"], True), ("shared", ["other"], False), ("users", [], True)],
    ids=["two other members", "the proxy alone", "the users group"],
)
def test_a_socket_group_shared_by_many_users_is_warned_of(
    tmp_path: Path, open_dir: Path, upstream: UpstreamServer, other_user: str, shared_group: str,
    group: str, members: list[str], warned: bool,
) -> None:  # fmt: skip
    """0660 with ``unix:`` trusted lets every member of the socket's group forge a client: one WARNING naming
    the group and the remedy when it holds more than the proxy (two users besides the gateway's, or a group
    such as ``users``, gid 100, every user's on many hosts). Before: not a word, and a member's forged header
    passed ip-filter as 203.0.113.7. One other member (the proxy): no WARNING."""
    name = shared_group if group == "shared" else group
    if members:  # "users" is left as it is (no members on a plain host: broad by its name)
        listed = ",".join(other_user if m == "other" else m for m in members)
        subprocess.run(["gpasswd", "-M", listed, name], check=True)
    gid = grp.getgrnam(name).gr_gid
    os.chown(open_dir, 0, gid)
    open_dir.chmod(0o2750)  # setgid: the socket gets the group
    sock = open_dir / "gw.sock"
    with _run(tmp_path, _config(tmp_path, upstream, trusted_proxies=["unix:"]), "--uds", str(sock)) as server:
        server.wait_for_line("Application startup complete")
        assert os.lstat(sock).st_gid == gid
        assert _as_user(other_user, sock, (gid,)) == "HTTP/1.1 101 Switching Protocols"  # a member can forge
        server.stop()
        output = server.output()
    assert output.count(GROUP_WARNING) == (1 if warned else 0)
    if warned:
        assert f"--uds {sock}: every member of the socket's group {name} (gid {gid})" in output
        assert "--uds-mode 600" in output
