"""The read-out that stands in for a refused peer's protocol (:mod:`asgi_ws_gateway.passthrough.read_out`),
shared by the splice's sides and the server's client leg: what it counts, when it closes, what it passes on.

End to end, for each relay: ``tests/test_attack_splice_refused_flood.py``."""

from __future__ import annotations

import asyncio
from typing import cast

from asgi_ws_gateway.passthrough.read_out import REFUSED_BYTES, BoundedReadOut
from support.relay_fakes import FakeTransport


class _TlsTransport(FakeTransport):
    def can_write_eof(self) -> bool:
        return False


class _Owner:
    """A refused peer's protocol as the client leg's is: no ``linger_began``."""

    def __init__(self, transport: FakeTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.calls: list[object] = []

    def eof_received(self) -> bool | None:
        self.calls.append("eof")
        return None

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))


class _SideOwner(_Owner):
    """As a splice's side is: told when its transport's lingering close begins."""

    def linger_began(self) -> None:
        self.calls.append("linger")


def test_up_to_the_bound_is_dropped_and_the_transport_left_open() -> None:
    transport = FakeTransport()
    read_out = BoundedReadOut(_Owner(transport))
    read_out.data_received(b"\0" * (REFUSED_BYTES - 1))
    read_out.data_received(b"\0")
    assert not transport.is_closing()


def test_past_the_bound_the_transport_is_closed_not_aborted() -> None:
    transport = FakeTransport()
    read_out = BoundedReadOut(_Owner(transport))
    read_out.data_received(b"\0" * REFUSED_BYTES)
    read_out.data_received(b"\0")
    assert transport.is_closing()
    assert not transport.aborted
    read_out.data_received(b"\0")  # (its linger reads the rest: no second close)


def test_past_the_bound_a_transport_that_cannot_linger_is_aborted() -> None:
    transport = _TlsTransport()
    read_out = BoundedReadOut(_Owner(transport))
    read_out.data_received(b"\0" * (REFUSED_BYTES + 1))
    assert transport.aborted


def test_eof_flow_control_and_the_connection_s_end_go_to_the_owner() -> None:
    owner = _Owner(FakeTransport())
    read_out = BoundedReadOut(owner)
    lost = ConnectionResetError()
    assert read_out.eof_received() is None
    read_out.pause_writing()
    read_out.resume_writing()
    read_out.linger_began()  # an owner without linger_began (the client leg's) is not told
    read_out.connection_lost(lost)
    assert owner.calls == ["eof", "pause", "resume", ("lost", lost)]


def test_an_owner_with_linger_began_is_told_when_the_linger_begins() -> None:
    owner = _SideOwner(FakeTransport())
    BoundedReadOut(owner).linger_began()
    assert owner.calls == ["linger"]
