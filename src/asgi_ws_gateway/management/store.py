"""Where the overlay is kept: in memory, in a local file (the embedded default), or in Redis.

Every store offers one atomic operation, :meth:`StateStore.update`: read the latest overlay, let a
function derive the next one (it may raise to abort), and save it, so that concurrent changes from
any number of tasks, workers or hosts are serialized and none is lost. A store that cannot be read
or written raises :class:`~.errors.Unavailable` (a 503 from the management API), its cause chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from ..redact import printable
from .errors import Unavailable
from .overlay import Overlay
from .own_files import open_own_lock, read_own_file

logger = logging.getLogger(__name__)

Change = Callable[[Overlay], Overlay]
"""Derives the next overlay from the latest one; raising aborts the update (nothing is saved)."""
T = TypeVar("T")
ETAG_KEY_BYTES = 32
STAT_SETTLED = 2.0
"""Seconds since a state file's last change after which its ``stat`` tells it unchanged (see ``FileStore``)."""
STAT_TRUSTED = 30.0
"""Seconds a state file's ``stat`` alone is trusted before its bytes are hashed again."""


class StateFileInvalid(ValueError):
    """The state file holds something other than a state document (edited by hand, or not ours)."""


def read_state(document: str | bytes, where: str) -> Overlay:
    """The overlay a stored state document holds (``where``: the file or key, for the message).

    Raises:
        StateFileInvalid: not JSON, not UTF-8, a field missing or of another type, nested too deeply.
    """
    try:
        return Overlay.from_json(document)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise StateFileInvalid(f"{where} is not a state document ({type(exc).__name__}: {exc})") from None


class StateStore(Protocol):
    """Keeps the overlay. Implementations: :class:`MemoryStore`, :class:`FileStore`, ``RedisStore``."""

    async def load(self) -> Overlay:
        """The latest overlay (an empty one at revision 0 if nothing was saved yet)."""
        ...

    async def update(self, change: Change) -> Overlay:
        """Apply ``change`` to the latest overlay atomically and save its result, which is returned.

        ``change`` may be called more than once (optimistic stores retry on a conflict), so it must
        not have side effects; the stores here call it in a worker thread (``asyncio.to_thread``, the
        context copied): it validates the whole configuration, CPU-bound, and the event loop serves
        its connections meanwhile.
        """
        ...

    async def revision(self) -> int:
        """The latest revision, cheaply."""
        ...

    async def version(self) -> tuple[str, int, str]:
        """The latest state's epoch, revision and a token that changes with every save, cheaply: workers
        poll it to catch up, and to see the store go back to an older or another state — even one that,
        restored and changed again, reuses a revision number (:func:`~.overlay.compare_states`)."""
        ...

    async def etag_key(self) -> bytes:
        """A random secret every reader of this store shares, made on the first call and kept: the
        management API's ETags are keyed with it, so that an ETag, a hash of a document with its
        secrets, tells nothing of a secret shown as ``REDACTED`` (a short one could be found by
        hashing guesses). Never shown."""
        ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """This process only; nothing survives a restart (tests, the example)."""

    def __init__(self, overlay: Overlay | None = None) -> None:
        self._overlay = overlay or Overlay()
        self._lock = asyncio.Lock()
        self._etag_key = secrets.token_bytes(ETAG_KEY_BYTES)

    async def load(self) -> Overlay:
        return self._overlay

    async def update(self, change: Change) -> Overlay:
        async with self._lock:
            self._overlay = await asyncio.to_thread(change, self._overlay)
            return self._overlay

    async def revision(self) -> int:
        return self._overlay.revision

    async def version(self) -> tuple[str, int, str]:
        return self._overlay.epoch, self._overlay.revision, ""  # never replaced under the gateway

    async def etag_key(self) -> bytes:
        return self._etag_key

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class _Read:
    """The state file as last read: its ``stat`` (device, inode, size, mtime and ctime in ns), the SHA-256 of
    its bytes, the state they hold, and whether the stat alone may tell it unchanged until ``trusted_until``
    (``time.monotonic()``)."""

    stat: tuple[int, ...] | None  # None: there was no file
    digest: str
    overlay: Overlay
    trusted_until: float


def _stat_key(path: Path) -> tuple[int, ...] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


class FileStore:
    """A JSON file, written atomically: a complete new file is synced to disk, then renamed over the old.

    A crash leaves either the old or the new file, never a torn one; an update has reached the disk
    before :meth:`update` returns. Processes on one host serialize their updates with an exclusive
    ``flock`` on ``<path>.lock``, so several workers may share the file. The ETag key is kept in
    ``<path>.etag-key`` (mode 0600), made on first use.

    The state last read or written is kept (one state: the one the gateway runs): a read of the file
    whose ``stat`` did not change returns it; one whose bytes hash the same returns it unparsed. A poll
    of an unchanged 16 MB state is a ``stat``, not a parse (each took seconds of the event loop and kept
    a copy of every API document).

    Args:
        path: the state file (created on the first update, with its directory).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = f"the file {printable(str(self.path))}"
        """Where the stored changes are, for the operator to read."""
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._key_path = self.path.with_name(self.path.name + ".etag-key")
        self._lock = asyncio.Lock()
        self._latest: _Read | None = None
        self._reading = threading.Lock()  # one thread reads (and parses) at a time; the others find its result

    async def load(self) -> Overlay:
        return (await self._call(self._current)).overlay

    async def update(self, change: Change) -> Overlay:
        async with self._lock:  # one thread of this process at a time; flock orders the processes
            return await self._call(self._update, change)

    async def revision(self) -> int:
        return (await self.load()).revision

    async def version(self) -> tuple[str, int, str]:
        latest = await self._call(self._current)  # the file may have been replaced (restored from a backup)
        return latest.overlay.epoch, latest.overlay.revision, latest.digest

    async def etag_key(self) -> bytes:
        return await self._call(self._read_or_make_key)

    async def aclose(self) -> None:
        return None

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        """``function`` in a thread; a file that cannot be read, written or parsed is :class:`Unavailable`
        (a full disk, a read-only one, permissions, a hand-edited file)."""
        try:
            return await asyncio.to_thread(function, *args)
        except (OSError, StateFileInvalid) as exc:
            raise Unavailable.of("state store (file)", exc) from exc

    def _current(self) -> _Read:
        """The file's state: the one kept while the file's ``stat`` is trusted and unchanged, else read again
        (parsed only when its bytes changed). In a worker thread."""
        with self._reading:
            now = time.monotonic()
            since = time.time_ns()
            stat = _stat_key(self.path)
            latest = self._latest
            if latest is not None and latest.stat == stat and now < latest.trusted_until:
                return latest
            try:
                data: bytes | None = read_own_file(self.path)
            except FileNotFoundError:
                data, stat = None, None
            digest = "" if data is None else hashlib.sha256(data).hexdigest()
            if latest is not None and latest.digest == digest:
                overlay = latest.overlay
            else:
                overlay = Overlay() if data is None else read_state(data, str(self.path))
            self._latest = _Read(stat, digest, overlay, now + self._trust(stat, since))
            return self._latest

    @staticmethod
    def _trust(stat: tuple[int, ...] | None, now_ns: int) -> float:
        """How long the ``stat`` read at ``now_ns`` (``time.time_ns()``) may stand for the bytes read after it.

        A file written within the same tick of the file system's clock as the last change may keep its
        size and times (and take a freed inode): only a stat older than :data:`STAT_SETTLED` is trusted,
        and for :data:`STAT_TRUSTED` at most (a file system whose stat lags, NFS's attribute cache, or
        times set back by a restore)."""
        if stat is None or now_ns - max(stat[3], stat[4]) < STAT_SETTLED * 1e9:
            return 0.0
        return STAT_TRUSTED

    def _update(self, change: Change) -> Overlay:
        with self._locked():
            new = change(self._current().overlay)
            data = new.to_json().encode()
            self._write(data)
            with self._reading:
                self._latest = _Read(_stat_key(self.path), hashlib.sha256(data).hexdigest(), new, 0.0)
            return new

    def _read_or_make_key(self) -> bytes:
        with self._locked():  # two workers starting at once make one key
            try:
                key = read_own_file(self._key_path)
            except FileNotFoundError:
                key = b""
            if len(key) == ETAG_KEY_BYTES:
                return key
            fd, temp = tempfile.mkstemp(prefix=f".{self._key_path.name}.", dir=self.path.parent)  # mode 0600
            with os.fdopen(fd, "wb") as out:
                out.write(key := secrets.token_bytes(ETAG_KEY_BYTES))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self._key_path)
            return key

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_own_lock(self._lock_path), "rb") as lock:  # never another user's, who could hold it
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write(self, data: bytes) -> None:
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a power loss
        finally:
            os.close(directory)


__all__ = ["Change", "FileStore", "MemoryStore", "StateFileInvalid", "StateStore", "read_state"]
