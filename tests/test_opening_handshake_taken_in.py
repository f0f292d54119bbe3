"""The passthrough extension's ``TAKEN_IN`` (the relay's close wait reads it) holds no reference to the protocol."""

from __future__ import annotations

import weakref
from typing import cast

from asgi_ws_gateway.server.client_leg import ClientLeg
from asgi_ws_gateway.server.opening_handshake import _Weakly


class _Leg:
    def _taken_in(self) -> int:
        return 7


def test_taken_in_is_the_protocol_s_count_while_it_lives_and_0_after() -> None:
    """It reads the protocol's count, does not keep the protocol alive, and is 0 once it is gone."""
    leg = _Leg()
    gone = weakref.ref(leg)
    count = _Weakly(cast(ClientLeg, leg))
    assert count() == 7
    del leg
    assert gone() is None
    assert count() == 0
