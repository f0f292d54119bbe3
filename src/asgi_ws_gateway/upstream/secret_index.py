"""Sans-I/O: the credentials sent an upstream, indexed once, and their occurrences in what it answered.

:func:`.refusal_secrets.scrubbed_bytes` takes out each credential whole, longest first, then each run of
:data:`MIN_SCRUBBED` bytes or more of one. It was worked out from the credentials' list at each call:
every one of them looked for in turn (``secret in data``), and the sets of their windows built again,
for the refusal's body and for each of its header values. A client chooses its own credentials (its
``Authorization``, a ``?key=`` per parameter), all sent upstream: 32 KiB of header values spelled
12-23 ways (:func:`.refusal_secrets._spellings`), and a refusal of 124 header lines, cost 2-4 s of the
event loop per refusal (~15 s with varied bytes: 400 KB spelled); 740 ``?key=`` parameters (2,229
secrets) and an error page of 64 KiB, ~95 ms.

:class:`SecretIndex` is built once per handshake (a refusal, a close reason): the windows of
:data:`MIN_SCRUBBED` bytes of every credential, their blocks, and which credentials begin with each
window. One scan of the data finds every window it shares with a credential; a credential is looked for
whole only when its first window is there, so a page of near misses costs one scan, whatever the count
of credentials. The result is the same, byte for byte, as looking for every one.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from ..redact import REDACTED

MIN_SCRUBBED = 8
"""Bytes a credential must have to be looked for: a shorter value ("1", "on") is a word a page holds
anyway, and taking it out would garble the page, not hide a secret."""

_REDACTED = REDACTED.encode()
_BLOCK = 4
_STRIDE = MIN_SCRUBBED - _BLOCK + 1
"""A run of :data:`MIN_SCRUBBED` bytes holds a whole :data:`_BLOCK` starting at one of any
:data:`_STRIDE` positions in a row."""
_SLICE_COST = 100
"""Bytes ``bytes.find`` reads in the time a Python slice and a set lookup take (CPython 3.11, roughly)."""


class SecretIndex:
    """``credentials`` (longest first, each of :data:`MIN_SCRUBBED` bytes or more), indexed to be found
    in data at the cost of one scan of it."""

    __slots__ = ("_blocks", "_heads", "_lengths", "_pieces", "_read", "_set", "_windows", "secrets")

    def __init__(self, credentials: Sequence[bytes]) -> None:
        self.secrets: tuple[bytes, ...] = tuple(credentials)
        listed = set(self.secrets)
        # A credential after a scheme (``Bearer abc…``) counts by the credential alone when that is listed
        # too: ``Bearer a`` would otherwise take the start of a page's "Bearer authentication".
        pieces = [secret for secret in self.secrets if secret.partition(b" ")[2].strip() not in listed]
        self._pieces = _grams(pieces, MIN_SCRUBBED)
        # Found in a text: a piece's windows, and where each credential (those too) may begin.
        self._windows = self._pieces | {secret[:MIN_SCRUBBED] for secret in self.secrets}
        self._blocks: set[bytes] | None = None  # (built once more bytes were read than there are windows)
        self._read = 0
        self._heads: dict[bytes, list[int]] = {}
        for number, secret in enumerate(self.secrets):
            self._heads.setdefault(secret[:MIN_SCRUBBED], []).append(number)
        self._lengths = {head: {len(self.secrets[n]) for n in numbers} for head, numbers in self._heads.items()}
        self._set = listed

    def scrubbed(self, data: bytes) -> bytes:
        """``data`` with each credential ``REDACTED``, then each run of :data:`MIN_SCRUBBED` bytes or more
        that is part of one (:meth:`without_pieces`). Never longer than it was."""
        if not self.secrets or len(data) < MIN_SCRUBBED:
            return data
        shared = self._shared(data)
        whole = self._without_whole(data, shared)
        if whole is not data:
            if len(whole) < MIN_SCRUBBED:
                return whole
            data, shared = whole, self._shared(whole)
        return _written(data, [start for start, window in shared if window in self._pieces])

    def without_pieces(self, data: bytes) -> bytes:
        """``data`` with each run of :data:`MIN_SCRUBBED` bytes or more of a credential ``REDACTED`` (one
        word per run), as :func:`.refusal_secrets.without_pieces` says."""
        if not self.secrets or len(data) < MIN_SCRUBBED:
            return data
        return _written(data, [start for start, window in self._shared(data) if window in self._pieces])

    def _without_whole(self, data: bytes, shared: list[tuple[int, bytes]]) -> bytes:
        """``data`` with each credential replaced whole, longest first, as ``data.replace`` in turn would:
        only those whose first window ``data`` holds are looked for (where it holds it, while nothing is
        replaced), and, once one is replaced, those whose first window a ``REDACTED`` written makes with
        its neighbours: any other window of the text is one ``data`` held."""
        heads = self._heads
        found: dict[bytes, list[int]] = {}
        for start, window in shared:
            if window in heads:
                found.setdefault(window, []).append(start)
        waiting = [number for window in found for number in heads[window]]
        heapq.heapify(waiting)
        original = data
        there: dict[bytes, set[bytes] | None] = {}  # by first window: the credentials ``original`` holds
        while waiting:
            number = heapq.heappop(waiting)
            secret = self.secrets[number]
            head = secret[:MIN_SCRUBBED]
            if data is original:
                if head not in there:
                    there[head] = self._held(original, head, found[head])
                held = there[head]
                if secret not in (data if held is None else held):
                    continue
            elif secret not in data:
                continue
            parts = data.split(secret)
            data = _REDACTED.join(parts)
            at = -MIN_SCRUBBED
            for part in parts[:-1]:
                at += len(part) + MIN_SCRUBBED
                for start in range(max(0, at - MIN_SCRUBBED + 1), min(at + MIN_SCRUBBED, len(data) - MIN_SCRUBBED + 1)):
                    window = data[start : start + MIN_SCRUBBED]
                    if window in heads and window not in found:
                        found[window] = []  # (where: unknown once the text changed)
                        for later in heads[window]:
                            if later > number:
                                heapq.heappush(waiting, later)
        return data

    def _held(self, data: bytes, head: bytes, starts: list[int]) -> set[bytes] | None:
        """The credentials beginning with ``head`` that ``data`` holds, read where it holds ``head``
        (``starts``); None when reading each there costs more than looking for each in all of ``data``
        (a page repeating ``head``, long credentials: a Python slice costs what ~100 bytes of ``bytes.find``
        do, and its bytes copied)."""
        lengths = self._lengths[head]
        if len(starts) * (len(lengths) * _SLICE_COST + sum(lengths)) > len(self._heads[head]) * len(data):
            return None
        secrets = self._set
        return {data[start : start + length] for start in starts for length in lengths} & secrets

    def _shared(self, data: bytes) -> list[tuple[int, bytes]]:
        """Each window of :data:`MIN_SCRUBBED` bytes of ``data`` that a credential holds, as ``(start,
        window)``, in order. Linear in ``data`` whatever it and the credentials hold.

        Each window is looked up until more bytes were read than the credentials' windows number (a close
        reason, a refusal's few header values); from then on, with their blocks of 4 bytes indexed too
        (once: as many entries as windows), ``data`` is read at every fifth byte: a window spans 5 starts,
        one a multiple of 5, and the 4 bytes from there are a block of it, so only the 5 windows around a
        block found are looked up (an error page of 64 KiB in ~1 ms)."""
        windows, blocks = self._windows, self._blocks
        found: list[tuple[int, bytes]] = []
        last = len(data) - MIN_SCRUBBED
        if blocks is None:
            self._read += len(data)
            if self._read <= len(windows):
                for start in range(last + 1):
                    if (window := data[start : start + MIN_SCRUBBED]) in windows:
                        found.append((start, window))
                return found
            blocks = self._blocks = _grams(self.secrets, _BLOCK)  # (each in a window: every secret has 8 bytes)
        for at in range(0, len(data) - _BLOCK + 1, _STRIDE):
            if data[at : at + _BLOCK] in blocks:
                for start in range(max(0, at - _STRIDE + 1), min(at, last) + 1):
                    window = data[start : start + MIN_SCRUBBED]
                    if window in windows:
                        found.append((start, window))
        return found


def _grams(secrets: Sequence[bytes], size: int) -> set[bytes]:
    return {secret[at : at + size] for secret in secrets for at in range(len(secret) - size + 1)}


def _written(data: bytes, starts: list[int]) -> bytes:
    """``data`` with the windows at ``starts`` (in order) ``REDACTED``, one word for each run of them
    that overlap or touch."""
    if not starts:
        return data
    out = bytearray()
    written = 0
    for start in starts:
        end = start + MIN_SCRUBBED
        if end <= written:
            continue
        if start > written or not out:
            out += data[written:start] + _REDACTED
        written = end  # (an overlapping run lengthens the one before: one word)
    return bytes(out + data[written:])


__all__ = ["MIN_SCRUBBED", "SecretIndex"]
