"""``run --uds PATH``: the Unix socket's path checked, a stale socket replaced, and the socket bound.

uvicorn's ``bind_socket`` (what ``run`` binds with, for one worker or many) fails on any file at the path:
a gateway killed with SIGKILL left its socket behind, and the next start exited 7 with ``[Errno 98]
Address already in use``, an error about an address no one held. A socket no server answers on is
replaced, as ``asyncio``'s own Unix server does; a live one, or a file that is not a socket, is never
touched: those, and a path the system cannot bind, are an error naming the path and why. Anything of
another user's there (taken first in ``/tmp``) is refused naming them, before any probe: root removed
their stale socket, and their live one with a full backlog held the probe's ``connect`` for ever.

The check, the replacement and the bind happen under the path's lock (:mod:`.unix_socket_lock`), and
the socket is bound with its final mode (``--uds-mode``, default :data:`DEFAULT_UDS_MODE`). uvicorn
binds and then changes the mode to 0666: a mode with which any local user could connect and, with
``unix:`` trusted, forge a client's address; and its change, by path, followed a symbolic link put in
the socket's place.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat

from ..socket_access import (
    DEFAULT_UDS_MODE,
    SQUATTED,
    file_kind,
    group_too_wide,
    open_to_every_user,
    replaceable_by_others,
    user_named,
)
from .unix_socket_lock import LockRefused, socket_path_lock

logger = logging.getLogger(__name__)

MAX_UDS_PATH = 107
"""Bytes of a Unix socket's path (Linux's ``sun_path`` holds 108, its NUL included)."""


class SocketPathUnusable(Exception):
    """``run --uds PATH`` cannot serve on PATH; ``problem`` says why (``error: --uds PATH: <problem>``)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def path_problem(path: str) -> str | None:
    """Why no socket can be bound at ``path`` whatever is there (too long, no directory), or None."""
    if len(os.fsencode(path)) > MAX_UDS_PATH:
        return f"the path is longer than a Unix socket's ({MAX_UDS_PATH} bytes): use a shorter one"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"its directory {directory} does not exist"
    return None


def uds_problem(path: str) -> str | None:
    """Why ``path`` cannot be served on (None: it can; a stale socket there has been removed). Called under
    the path's lock (:func:`claim_socket`): without it two ``run`` checking at once both took a socket for
    stale, and the second removed the first's fresh one."""
    if (problem := path_problem(path)) is not None:
        return problem
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if found.st_uid != os.geteuid():  # taken first in a shared directory: never probed, followed nor removed
        owner = user_named(found.st_uid)
        return f"{file_kind(found)} there belongs to {owner} (not replaced, not followed): name a path in {SQUATTED}"
    if not stat.S_ISSOCK(found.st_mode):
        return "a file that is not a socket is there (not replaced): remove it or name another path"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)  # a listener whose backlog is full held a blocking connect for ever
        try:
            probe.connect(path)
        except BlockingIOError:
            return "another server listens on it (a gateway already running?)"
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


def claim_socket(path: str, mode: int, backlog: int) -> tuple[socket.socket, SocketStamp]:
    """The socket bound at ``path`` with ``mode`` and listening, and its stamp (for :func:`remove_socket`).

    A stale socket there is replaced; checked, replaced and bound under the path's lock. The file is
    created with ``mode`` (the process's umask set for the bind: ``run`` has no other thread yet), never
    wider for an instant, and never ``chmod``-ed by its path.

    Raises:
        SocketPathUnusable: why not (see :func:`uds_problem`; the lock file; the bind itself).
    """
    if (problem := path_problem(path)) is not None:  # said as it is, not as a lock file that cannot be made
        raise SocketPathUnusable(problem)
    try:
        with socket_path_lock(path):
            if (problem := uds_problem(path)) is not None:
                raise SocketPathUnusable(problem)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                previous = os.umask(0o777 & ~mode)
                try:
                    listener.bind(path)
                finally:
                    os.umask(previous)
                # Listening from now on, not once a worker has started (seconds): until then another run
                # --uds on the path was refused a connection, took the socket for a stale one and replaced it.
                listener.listen(backlog)
                stamp = socket_stamp(path)
            except OSError as exc:
                listener.close()
                raise SocketPathUnusable(f"it cannot be bound ({exc.strerror or exc})") from None
    except LockRefused as refused:
        raise SocketPathUnusable(refused.problem) from None
    listener.set_inheritable(True)  # the workers serve it
    return listener, stamp


def warn_of_other_users(path: str, *, unix_trusted: bool) -> None:
    """A WARNING when ``trusted_proxies`` lists ``unix:`` and every local user can connect to ``path``:
    any of them can then forge the forwarding header and pass as any client; else one when its group holds
    more than the proxy (``users``: every user again). Another when another user can
    replace the socket (:func:`~..socket_access.replaceable_by_others`): the proxy would connect to theirs."""
    if (directory := replaceable_by_others(path)) is not None:
        logger.warning(
            "--uds %s: another local user can replace the socket (%s): the proxy would then hand every client's "
            "connection to their server; use a directory only the gateway's user can write, in directories only "
            "it and root can (e.g. /run/gateway)",
            path,
            directory,
        )
    if unix_trusted and (mode := open_to_every_user(path)) is not None:
        logger.warning(
            "--uds %s: every local user can connect to the socket (%s) and trusted_proxies lists 'unix:': any "
            "of them can send X-Forwarded-For or Forwarded and pass as any client (ip-filter, limits keyed by "
            "{client.ip}); use --uds-mode 660 (the default) with the proxy's group, or a directory only the "
            "proxy's user can enter",
            path,
            mode,
        )
    elif unix_trusted and (group := group_too_wide(path)) is not None:
        logger.warning(
            "--uds %s: every member of the socket's group %s can connect to it and trusted_proxies lists "
            "'unix:': any of them can send X-Forwarded-For or Forwarded and pass as any client; use --uds-mode 600 "
            "with the proxy running as the gateway's user, or a group of the proxy's alone (a setgid directory: "
            "install -d -o gateway -g www-data -m 2750 /run/gateway)",
            path,
            group,
        )


def remove_socket(path: str, stamp: SocketStamp) -> None:
    """Remove the socket ``run`` bound at ``path`` (``stamp``) when it stops; one another process bound since
    stays. Under the path's lock: a gateway starting meanwhile replaces a stale socket between our look and
    our unlink no more."""
    try:
        if socket_stamp(path) != stamp:  # gone, or another's already: never ours again, no lock needed
            return
        with socket_path_lock(path):
            if socket_stamp(path) == stamp:
                os.unlink(path)
    except LockRefused as refused:
        logger.warning("--uds %s: its socket is left in place: %s", path, refused.problem)
    except OSError:
        pass


__all__ = [
    "DEFAULT_UDS_MODE",
    "MAX_UDS_PATH",
    "SocketPathUnusable",
    "SocketStamp",
    "claim_socket",
    "remove_socket",
    "socket_stamp",
    "uds_problem",
    "warn_of_other_users",
]
