"""A ``wss://`` upstream's ``ca_bundle``: checked when the configuration is, not at its first use.

Only the management gate was asked before (may this file be read here?): a path that did not exist,
or a file that held no certificate, passed ``check`` and then ended ``run`` with a traceback when the
upstream's TLS context was made. The same load the connections do now runs at start-up, and its
problem is told in fixed words (no file content, no OpenSSL text about it).
"""

from __future__ import annotations

import ssl

from ..loading import cannot_read, check_file, read_regular_file


class CaBundleProblem(ValueError):
    """A ``ca_bundle`` cannot be loaded; the words quote nothing of the file."""


def checked_ca_bundle(path: str) -> None:
    """Raise :class:`CaBundleProblem` (or ``LoadRefused``) unless ``path`` loads as a bundle of CAs."""
    check_file(path)
    try:
        read_regular_file(path)  # a FIFO or a device would hang or flood OpenSSL's own read
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        raise CaBundleProblem("holds no PEM certificate") from None
    except OSError as exc:
        raise CaBundleProblem(cannot_read(exc)) from None


__all__ = ["CaBundleProblem", "checked_ca_bundle"]
