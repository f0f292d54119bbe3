"""A named pipe as a log destination that stalls: a log collector that stopped reading, ``run ... | sleep``.

``StalledPipe(path)`` makes the pipe and holds it open for reading, reading nothing until :meth:`start`;
:meth:`fill` writes into it until it takes no more, so that the next write of a process it is given to waits
(as a pipe whose reader stalled long ago)::

    pipe = StalledPipe(tmp_path / "log.fifo")
    pipe.fill()
    ...                                   # a process writing its log to tmp_path / "log.fifo"
    pipe.start()                          # the collector is back: pipe.data grows
    pipe.close()
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["FILLER", "StalledPipe"]

FILLER = b"filler line of a stalled log reader\n"
"""What :meth:`StalledPipe.fill` writes: the output that came after it is ``data.rpartition(FILLER)[2]``."""


class StalledPipe:
    """Reads the pipe at ``path`` once :meth:`start` is called; until then nobody does (it is only open)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # open, so the gateway's open for writing returns
        self.data = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def fill(self) -> None:
        """Write into the pipe until it is full (64 KiB on Linux)."""
        writer = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(writer, FILLER)
        except BlockingIOError:
            pass
        finally:
            os.close(writer)

    def start(self) -> None:
        os.set_blocking(self.fd, True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := os.read(self.fd, 65536):
            self.data += chunk

    def close(self) -> None:
        if self._thread.ident is None:
            self.start()  # whatever still writes to it is let go
        self._thread.join(10)
        os.close(self.fd)
