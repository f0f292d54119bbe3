"""A replacement worker's start-up output, held in a file until it serves (then written as it was) or fails
(then its supervisor shows it, or not: the same failure again says nothing new).

A dead worker's replacement that fails its start-up (the file mid-edit) leaves its place vacant, tried again
later; each try printed the same block of configuration problems, with uvicorn's lines around it, for as long
as the file stayed invalid. The worker cannot know what was shown before; its supervisor can, so the worker
writes its start-up output (file descriptor 2, where uvicorn's log configuration writes) to a file the
supervisor named, and the supervisor reads it when the worker failed.

Both of its standard streams are held, each in a file of its own (file descriptor 1 too: a plugin's
``print()`` at import, a library's warning printed there, came out at once, on every try, ahead of the
held lines written before it), and each goes back to its own stream. When both are the same file (``>log
2>&1``, a terminal, one journald stream), they are held in one file, so their lines keep their order.

What is shown of a failure is bounded (:data:`SHOWN_HEAD` bytes from its start, :data:`SHOWN_TAIL` from its
end, a line saying how much is left out between): a plugin that wrote megabytes as it started had them read
whole into the supervisor's memory, and shown again each time the failure changed.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
import threading
from typing import BinaryIO

from .log_writer import flush_all, write_all, write_out

HOLD_LIMIT = 10.0
"""Seconds a start-up's output is held at most: a start-up still going then (an in-process app's lifespan
waiting on its database) is written out, and what it says next as it comes, not held while it hangs. A
failure the hold is for (an invalid file) comes in a second or two, under load too."""

SHOWN_HEAD = 32 * 1024
"""Bytes of a held stream's start shown at most (the start-up's first lines: the server's, the file's problems)."""
SHOWN_TAIL = 32 * 1024
"""Bytes of a held stream's end shown at most (its last lines: what failed)."""

Holder = tuple[str, str]
"""The files a worker's standard output and standard error (file descriptors 1, 2) are held in."""
Held = tuple[bytes, bytes]
"""What a worker held of its standard output and standard error (each bounded, for the supervisor to show)."""
_STREAMS = (1, 2)

_COPY_CHUNK = 64 * 1024

_PID = re.compile(rb"\[\d+\]")  # "Started server process [4242]": the same failure in another process


class HeldStartup:
    """File descriptors 1 and 2 of this process written to the ``holder`` files from now until
    :meth:`release` or :meth:`keep`."""

    def __init__(self, holder: Holder) -> None:
        self.holder = holder
        self._saved: dict[int, int] = {}  # each held stream's own file, put back at the end
        self._switching = threading.Lock()
        try:
            held = [os.open(path, os.O_WRONLY | os.O_APPEND) for path in holder]
        except OSError:
            return  # a file is gone: the output is written as it comes
        # One destination for both (2>&1): one file, their lines in the order written.
        targets = dict(zip(_STREAMS, [held[1], held[1]] if _same_file(*_STREAMS) else held, strict=True))
        _flush()
        for fd, target in targets.items():
            self._saved[fd] = os.dup(fd)
            os.dup2(target, fd)
        for fd in held:
            os.close(fd)
        # A hung start-up's lines (the lifespan's "has not answered" WARNING) were held for as long as it hung.
        self._timer = threading.Timer(HOLD_LIMIT, self.release)
        self._timer.daemon = True
        self._timer.start()

    def release(self) -> None:
        """Started, or starting for :data:`HOLD_LIMIT` seconds, or ending otherwise than by a failed start-up:
        the output held written out, as it came, each stream to its own, by its log writer's thread: written
        here, it waited for a stream that took nothing, in the event loop before the first connection."""
        if self._restore():
            for fd, path in zip(_STREAMS, self.holder, strict=True):
                write_out(fd, HeldFile(path))

    def keep(self) -> None:
        """Failed its start-up: the output stays in the files, for the supervisor to show or not."""
        self._restore()

    def _restore(self) -> bool:
        with self._switching:  # the timer's thread and the worker's may both come
            if not self._saved:
                return False
            self._timer.cancel()
            _flush()
            for fd, saved in self._saved.items():
                os.dup2(saved, fd)
                os.close(saved)
            self._saved.clear()
            return True


class HeldFile:
    """A held stream's file, copied to its stream by the log writer's thread in its turn
    (:func:`.log_writer.write_out`), then removed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write_to(self, fd: int) -> None:
        try:
            with open(self.path, "rb") as held:
                while chunk := held.read(_COPY_CHUNK):  # all of it, not all at once in memory
                    write_all(fd, chunk)
        finally:
            self.discard()

    def lines(self) -> int:
        count = 0
        with contextlib.suppress(OSError), open(self.path, "rb") as held:
            while chunk := held.read(_COPY_CHUNK):
                count += chunk.count(b"\n")
        return max(count, 1)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def new_holder() -> Holder | None:
    """New empty files for a worker's start-up output (the supervisor's to read and remove); None when no
    temporary file can be made (a full or read-only disk): the worker then writes its output as it comes."""
    paths: list[str] = []
    try:
        for stream in ("stdout", "stderr"):
            handle, path = tempfile.mkstemp(prefix=f"asgi-ws-gateway-startup-{stream}-", suffix=".log")
            os.close(handle)
            paths.append(path)
    except OSError:
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return None
    return paths[0], paths[1]


def take(holder: Holder) -> Held:
    """What a worker held in ``holder``'s files (nothing of a stream it released or never wrote), bounded;
    the files removed."""
    stdout, stderr = (_take_one(path) for path in holder)
    return stdout, stderr


def _take_one(path: str) -> bytes:
    """What a worker held in ``path`` (at most :data:`SHOWN_HEAD` + :data:`SHOWN_TAIL` bytes of it, and a
    line saying how many were left out); the file removed.

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
        output = _bounded(file, found.st_size)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return output


def _bounded(file: BinaryIO, size: int) -> bytes:
    """``file``'s first and last lines within :data:`SHOWN_HEAD` and :data:`SHOWN_TAIL` bytes, and between
    them one line saying how many bytes were left out (all of it if it is no longer than both)."""
    if size <= SHOWN_HEAD + SHOWN_TAIL:
        return file.read(SHOWN_HEAD + SHOWN_TAIL)
    head = file.read(SHOWN_HEAD)
    head = head[: head.rfind(b"\n") + 1] or head  # whole lines, unless one line is longer than all of it
    file.seek(size - SHOWN_TAIL)
    tail = file.read(SHOWN_TAIL)
    start = tail.find(b"\n") + 1
    tail = tail[start:] if 0 < start < len(tail) else tail
    omitted = size - len(head) - len(tail)
    return head + f"... {omitted} bytes of this worker's start-up output omitted ...\n".encode() + tail


def same_failure(output: Held, shown: Held | None) -> bool:
    """Whether ``output`` says what ``shown`` said, process ids aside."""
    return shown is not None and all(
        _PID.sub(b"[]", new) == _PID.sub(b"[]", old) for new, old in zip(output, shown, strict=True)
    )


def show(output: Held) -> None:
    """``output`` written to this process's standard output and standard error, as the worker would have
    written it, after the lines logged before, by their log writer's thread: written by the supervisor
    itself, a stream that took nothing held it, and with it every signal (a SIGTERM) and worker replacement."""
    for fd, held in zip(_STREAMS, output, strict=True):
        if held:
            write_out(fd, held)


def _same_file(first: int, second: int) -> bool:
    try:
        one, other = os.fstat(first), os.fstat(second)
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def _flush() -> None:
    flush_all()  # the log lines queued for a writer thread go where descriptor 2 points until now
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: the switch matters more
            stream.flush()


__all__ = [
    "HOLD_LIMIT",
    "SHOWN_HEAD",
    "SHOWN_TAIL",
    "Held",
    "HeldStartup",
    "Holder",
    "new_holder",
    "same_failure",
    "show",
    "take",
]
