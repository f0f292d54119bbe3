"""Who may connect to a Unix socket file: what decides whether a peer on it may be trusted as a proxy.

Connecting to a Unix socket needs write permission on its file and search permission on every directory
above it. ``trusted_proxies: ["unix:"]`` believes the forwarding header of whoever connects, so a socket
every local user can reach lets any of them pass as any client (``ip-filter``, ``{client.ip}`` keys).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

DEFAULT_UDS_MODE = 0o660
"""``run --uds``'s socket mode: its owner and group may connect (a proxy in the group), no one else."""


def open_to_every_user(path: str) -> str | None:
    """Why every local user can connect to the socket at ``path`` (its mode, e.g. ``"mode 0666"``), or
    None: the file is not writable by others, a directory above it is closed to them, or it cannot be read.

    "Others" in the file-mode sense: a user neither its owner nor in its group. A directory above it
    that others cannot search (no ``o+x``) keeps them out whatever the socket's mode: the directories of
    its real path, which anyone may take (a closed directory on the way to a symbolic link kept no one
    out, the link's target being open).
    """
    return every_user_may(path, stat.S_IWOTH)


def every_user_may(path: str, permission: int) -> str | None:
    """Why every local user has ``permission`` (``stat.S_IROTH``, ``S_IWOTH``) on the file at ``path``
    (``"mode 0666"``), or None: others lack it, a directory above the file's real path is closed to them
    (no ``o+x``), or it cannot be looked at."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if not mode & permission:
            return None
        directory = os.path.dirname(os.path.realpath(path))
        while True:
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return None
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
    except OSError:  # gone, or a directory above it this process cannot search: nothing to tell
        return None
    return f"mode {mode:04o}"


def replaceable_by_others(path: str) -> str | None:
    """Why another user can remove the socket at ``path``, or a directory above it, and put their own in its
    place (``its directory /srv/gw is mode 0777, writable by all without the sticky bit``), or None. The proxy
    would then connect to theirs and hand it every client's connection.

    A directory lets another user replace what is in it when it is theirs (an owner may chmod it, and may
    remove anything even from a sticky one), or when they may write it (others, or members of its group
    besides this user and root) and it is not sticky; this holds for every directory up to ``/`` (a
    directory above is renamed away and one of theirs put in its place), and a symbolic link on the way
    leads where its owner chooses."""
    me = os.geteuid()
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if (link := _others_link(directory, me)) is not None:
            return link
        current = os.path.realpath(directory)
        while True:
            found = os.stat(current)
            if (problem := _open_directory(current, found, me)) is not None:
                return problem
            parent = os.path.dirname(current)
            if parent == current:
                return None
            current = parent
    except OSError:
        return None


def _others_link(directory: str, me: int) -> str | None:
    """Why a symbolic link on the way to ``directory`` leads where another user than ``me`` and root chooses:
    it is theirs, or in a directory where they can put another in its place; or None."""
    current = "/"
    for part in directory.split("/"):
        if not part:
            continue
        parent, current = current, os.path.join(current, part)
        found = os.lstat(current)
        if stat.S_ISLNK(found.st_mode):
            if found.st_uid not in (0, me):
                return f"{current} is a symbolic link of {user_named(found.st_uid)}"
            if (problem := _open_directory(parent, os.stat(parent), me)) is not None:
                return f"{current} is a symbolic link and {problem}"
            current = os.path.realpath(current)
    return None


def _open_directory(directory: str, found: os.stat_result, me: int) -> str | None:
    """Why another user than ``me`` and root can replace an entry of ``directory`` (``found``), or None."""
    if found.st_uid not in (0, me):
        return f"its directory {directory} belongs to {user_named(found.st_uid)}"
    mode = stat.S_IMODE(found.st_mode)
    if mode & stat.S_ISVTX:  # only an entry's owner, the directory's and root remove or rename an entry
        return None
    if mode & stat.S_IWOTH:
        return f"its directory {directory} is mode {mode:04o}, writable by all without the sticky bit"
    if mode & stat.S_IWGRP and (writers := _group_users(found.st_gid) - _users_of(me) - _users_of(0)):
        group = _group_name(found.st_gid)
        return (f"its directory {directory} is mode {mode:04o} and its group {group} holds {len(writers)} other "
                f"user{'s' if len(writers) > 1 else ''}, without the sticky bit")  # fmt: skip
    return None


def group_of_others(gid: int) -> str | None:
    """Group ``gid`` named with the users it holds besides this user and root (``"gw (gid 1003), holding 1
    other user(s)"``), or None when it holds none: a group-writable file of such a group is this user's alone."""
    me = os.geteuid()
    others = _group_users(gid) - _users_of(me) - _users_of(0)
    return f"{_group_name(gid)}, holding {len(others)} other user(s)" if others else None


def _group_users(gid: int) -> set[str]:
    """The users of group ``gid``: those whose primary group it is and its listed members."""
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        members = set()
    return members | {user.pw_name for user in pwd.getpwall() if user.pw_gid == gid}


def _users_of(uid: int) -> set[str]:
    return {user.pw_name for user in pwd.getpwall() if user.pw_uid == uid}


def _group_name(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def writable_by_others(directory: str) -> str | None:
    """Why another user can put a file in ``directory`` (``"mode 1777"``, ``"it belongs to user bob (uid
    1001)"``, a group of other users that may write it), or None: it is this user's or root's, and neither
    every user nor a group holding another user may write it."""
    try:
        found = os.stat(directory)
    except OSError:
        return None
    if found.st_uid not in (os.geteuid(), 0):
        return f"it belongs to {user_named(found.st_uid)}"
    mode = stat.S_IMODE(found.st_mode)
    if mode & stat.S_IWOTH:
        return f"mode {mode:04o}"
    me = os.geteuid()
    if mode & stat.S_IWGRP and (writers := _group_users(found.st_gid) - _users_of(me) - _users_of(0)):
        return f"mode {mode:04o}, its group {_group_name(found.st_gid)} holding {len(writers)} other user(s)"
    return None


BROAD_GROUPS = frozenset({"users", "staff", "everyone"})
"""Groups meant to hold every (human) user: ``users`` is gid 100 on Debian, ``staff`` every user on macOS."""


def group_too_wide(path: str) -> str | None:
    """Why the group of the socket at ``path`` holds more than the proxy (``group users (gid 100), 3 other
    users``), or None: the group cannot connect, or holds at most one user besides the owner (the proxy).

    Its users are those who have it as their primary group (``pwd``) and its listed members (``grp``).
    """
    try:
        found = os.stat(path)
        if not found.st_mode & stat.S_IWGRP:
            return None
        group = grp.getgrgid(found.st_gid)
    except (OSError, KeyError):
        return None
    others = {user.pw_name for user in pwd.getpwall() if user.pw_gid == found.st_gid} | set(group.gr_mem)
    others -= {user.pw_name for user in pwd.getpwall() if user.pw_uid == found.st_uid}
    if group.gr_name not in BROAD_GROUPS and len(others) <= 1:
        return None
    return f"{group.gr_name} (gid {found.st_gid}), {len(others)} other users"


def user_named(uid: int) -> str:
    """``uid`` as an error names it: ``user alice (uid 1001)``, or ``uid 1001`` when it has no name."""
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def file_kind(found: os.stat_result) -> str:
    """What ``found`` (an ``lstat``) is, as an error names it: ``a symbolic link``, ``a FIFO``, ..."""
    kinds = {stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO",
             stat.S_IFDIR: "a directory", stat.S_IFREG: "a file"}  # fmt: skip
    return kinds.get(stat.S_IFMT(found.st_mode), "a special file")


SQUATTED = "a directory only this user can write (e.g. /run/gateway): another user can keep theirs there"
"""The remedy for a path another user took first: in ``/tmp`` the gateway's user cannot remove their file."""


__all__ = [
    "BROAD_GROUPS",
    "DEFAULT_UDS_MODE",
    "SQUATTED",
    "every_user_may",
    "file_kind",
    "group_of_others",
    "group_too_wide",
    "open_to_every_user",
    "replaceable_by_others",
    "user_named",
    "writable_by_others",
]
