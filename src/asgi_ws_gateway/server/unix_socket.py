"""``run --uds PATH``: the Unix socket's path checked, and a stale socket replaced, before uvicorn binds it.

uvicorn's ``bind_socket`` (what ``run`` binds with, for one worker or many) fails on any file at the path:
a gateway killed with SIGKILL left its socket behind, and the next start exited 7 with ``[Errno 98]
Address already in use``, an error about an address no one held. A socket no server answers on is
replaced, as ``asyncio``'s own Unix server does; a live one, or a file that is not a socket, is never
touched: those, and a path the system cannot bind, are an error naming the path and why.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

MAX_UDS_PATH = 107
"""Bytes of a Unix socket's path (Linux's ``sun_path`` holds 108, its NUL included)."""


def uds_problem(path: str) -> str | None:
    """Why ``path`` cannot be served on (None: it can; a stale socket there has been removed)."""
    if len(os.fsencode(path)) > MAX_UDS_PATH:
        return f"the path is longer than a Unix socket's ({MAX_UDS_PATH} bytes): use a shorter one"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"its directory {directory} does not exist"
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(found.st_mode):
        return "a file that is not a socket is there (not replaced): remove it or name another path"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                return f"its socket cannot be checked ({exc.strerror})"
        else:
            return "another server listens on it (a gateway already running?)"
    try:
        os.unlink(path)  # a stale socket: nothing listens on it
    except OSError as exc:
        return f"its stale socket cannot be removed ({exc.strerror})"
    return None


SocketStamp = tuple[int, int, int]
"""A socket file's device, inode number and modification time (set when it is bound)."""


def socket_stamp(path: str) -> SocketStamp:
    """What tells the socket file at ``path`` from one bound there later. The inode number alone does not:
    ext4 gives a freed number to the next file at once, so a gateway that replaced the socket of one still
    stopping (a rolling deploy on one host) had its socket removed when that one exited."""
    found = os.lstat(path)
    return (found.st_dev, found.st_ino, found.st_mtime_ns)


def remove_socket(path: str, stamp: SocketStamp) -> None:
    """Remove the socket ``run`` bound at ``path`` (``stamp``) when it stops; one another process bound since stays."""
    try:
        if socket_stamp(path) == stamp:
            os.unlink(path)
    except OSError:
        pass


__all__ = ["MAX_UDS_PATH", "SocketStamp", "remove_socket", "socket_stamp", "uds_problem"]
