"""Whether the configuration file this process serves is still the file on disk, for
``ws_gateway.config.file_changed`` (docs/telemetry.md).

A reload that fails (SIGHUP with ``--workers`` N and the file invalid or deleted: the old workers serve on)
and a one-process ``run``, which reloads nothing, leave the process serving a configuration that is not
its file's. The log said so once, at the SIGHUP; nothing an operator alerts on did, so the file could be
left so for days, the next restart the first to find it broken.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..loading import read_regular_file


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class ServedFile:
    """The file a configuration was read from, and its bytes' digest then."""

    def __init__(self, path: Path, served: bytes) -> None:
        self.path = path
        self._served = served
        self._seen: tuple[int, int, int, int] | None = None  # the file's stat when last compared
        self._changed = False

    def changed(self) -> bool:
        """Whether the file now holds other bytes, or cannot be read (deleted, a FIFO now, too large).

        Read again only when its inode, size or times changed: a metric collection costs a ``stat``."""
        try:
            seen = os.stat(self.path)
        except OSError:
            self._seen = None
            return True
        key = (seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns)
        if key != self._seen:
            try:
                self._changed = digest(read_regular_file(self.path)) != self._served
            except OSError:
                self._changed = True
            self._seen = key
        return self._changed


_served: ServedFile | None = None


def serve(path: Path, served: bytes) -> None:
    """The process now serves the configuration read from ``path`` when its bytes had ``served`` as digest."""
    global _served
    _served = ServedFile(path.absolute(), served)


def file_changed() -> bool:
    """Whether the configuration file the process serves is no longer the file on disk (False: no file)."""
    served = _served  # set on the event loop's thread, read on the metric reader's
    return served is not None and served.changed()


__all__ = ["ServedFile", "digest", "file_changed", "serve"]
