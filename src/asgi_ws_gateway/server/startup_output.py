"""A replacement worker's start-up output, held in a file until it serves (then written as it was) or fails
(then its supervisor shows it, or not: the same failure again says nothing new).

A dead worker's replacement that fails its start-up (the file mid-edit) leaves its place vacant, tried again
later; each try printed the same block of configuration problems, with uvicorn's lines around it, for as long
as the file stayed invalid. The worker cannot know what was shown before; its supervisor can, so the worker
writes its start-up output (file descriptor 2, where uvicorn's log configuration writes) to a file the
supervisor named, and the supervisor reads it when the worker failed.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
import threading

HOLD_LIMIT = 10.0
"""Seconds a start-up's output is held at most: a start-up still going then (an in-process app's lifespan
waiting on its database) is written out, and what it says next as it comes, not held while it hangs. A
failure the hold is for (an invalid file) comes in a second or two, under load too."""

_PID = re.compile(rb"\[\d+\]")  # "Started server process [4242]": the same failure in another process


class HeldStartup:
    """File descriptor 2 of this process written to ``path`` from now until :meth:`release` or :meth:`keep`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stderr: int | None = None
        self._switching = threading.Lock()
        try:
            held = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            return  # the file is gone: the output is written as it comes
        _flush()
        self._stderr = os.dup(2)
        os.dup2(held, 2)
        os.close(held)
        # A hung start-up's lines (the lifespan's "has not answered" WARNING) were held for as long as it hung.
        self._timer = threading.Timer(HOLD_LIMIT, self.release)
        self._timer.daemon = True
        self._timer.start()

    def release(self) -> None:
        """Started, or starting for :data:`HOLD_LIMIT` seconds, or ending otherwise than by a failed start-up:
        the output held written out, as it came."""
        if self._restore():
            with contextlib.suppress(OSError), open(self.path, "rb") as held:
                _write_all(2, held.read())
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def keep(self) -> None:
        """Failed its start-up: the output stays in the file, for the supervisor to show or not."""
        self._restore()

    def _restore(self) -> bool:
        with self._switching:  # the timer's thread and the worker's may both come
            if self._stderr is None:
                return False
            self._timer.cancel()
            _flush()
            os.dup2(self._stderr, 2)
            os.close(self._stderr)
            self._stderr = None
            return True


def new_holder() -> str | None:
    """A new empty file for a worker's start-up output (the supervisor's to read and remove); None when no
    temporary file can be made (a full or read-only disk): the worker then writes its output as it comes."""
    try:
        handle, path = tempfile.mkstemp(prefix="asgi-ws-gateway-startup-", suffix=".log")
    except OSError:
        return None
    os.close(handle)
    return path


def take(path: str) -> bytes:
    """What a worker held in ``path`` (nothing if it released or never wrote it); the file removed.

    Only the file :func:`new_holder` made is read: one that served removed it, yet the supervisor takes
    every replacement's when it ends, and another user may have put a symlink, a hard link or a file of
    their own under that name in the shared temporary directory (a file shown in the log, or a forged log).
    """
    try:
        held = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b""
    with open(held, "rb") as file:
        found = os.fstat(file.fileno())
        if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid() or found.st_nlink != 1:
            return b""
        output = file.read()
    with contextlib.suppress(OSError):
        os.unlink(path)
    return output


def same_failure(output: bytes, shown: bytes | None) -> bool:
    """Whether ``output`` says what ``shown`` said, process ids aside."""
    return shown is not None and _PID.sub(b"[]", output) == _PID.sub(b"[]", shown)


def show(output: bytes) -> None:
    """``output`` written to this process's standard error, as the worker would have written it."""
    _flush()
    _write_all(2, output)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: the switch matters more
            stream.flush()


__all__ = ["HOLD_LIMIT", "HeldStartup", "new_holder", "same_failure", "show", "take"]
