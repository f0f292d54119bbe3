"""Private keys every user of the host can read: one WARNING per file and process as the key is loaded.

A TLS key is who the gateway is (``--ssl-keyfile``: to its clients; an upstream's client certificate and
Redis's: to them). A key file left at mode 0644 in a directory others can enter let any local user copy it
and pose as the gateway, and nothing said so (OpenSSH and PostgreSQL refuse such a key; the gateway warns,
as a mounted secret is often 0644 in a container whose only user is the gateway's).
"""

from __future__ import annotations

import logging
import stat

from .redact import printable
from .socket_access import every_user_may

logger = logging.getLogger(__name__)

_warned: set[str] = set()  # one line per file and process: configurations are loaded again on each change


def readable_by_every_user(path: str) -> str | None:
    """Why every local user can read the file at ``path`` (``"mode 0644"``), or None: not readable by others,
    a directory above it closed to them (no ``o+x``), or it cannot be looked at.

    The directories are those of the file a symbolic link names (a mounted secret's ``tls.key`` links into
    ``..data/``): the link's own said a key in an open directory was closed to others when the link was
    kept in a private one, and the reverse."""
    return every_user_may(path, stat.S_IROTH)


def warn_if_readable(path: str) -> None:
    """Log one WARNING when the private key file ``path`` can be read by every local user (never its content)."""
    problem = readable_by_every_user(path)
    if problem is None or path in _warned:
        return
    _warned.add(path)
    logger.warning(
        "the private key file %s can be read by every user of this host (%s): whoever copies it can pose as "
        "this gateway; chmod 600 (or 640 with a group only the gateway's user is in)",
        printable(path, quote=False),
        problem,
    )


__all__ = ["readable_by_every_user", "warn_if_readable"]
