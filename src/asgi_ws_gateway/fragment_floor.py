"""What a fragment of a message counts toward the size limit at least: one number for every connector
(the splice's scanner, the frame relay's assembler, both legs of the relay)."""

from __future__ import annotations

FRAGMENT_FLOOR = 64
"""Bytes each frame of a fragmented message counts toward the size limit at least, but for its last:
empty or tiny fragments, which the bytes they carry do not bound, cost a receiver per frame (uvicorn's
``websockets-sansio`` keeps an object per fragment: two million empty ones grew one by 19.9 MB). 64
bytes: Autobahn's smallest fragments (9.3.1, 9.4.1), which a limit of their message's size still passes."""

__all__ = ["FRAGMENT_FLOOR"]
