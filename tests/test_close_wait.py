"""The close wait's rule, one for every connector (``relay/close_wait.py``): pure logic, no sockets."""

from __future__ import annotations

from asgi_ws_gateway.relay.close_wait import CLOSE_WAIT_BYTES, CLOSE_WAIT_LOOKS, CloseWait

MAX = 1 << 20


def test_a_peer_taking_in_some_at_each_look_is_waited_for_until_the_last_look() -> None:
    """Progress at every look: the wait goes on, and ends at ``CLOSE_WAIT_LOOKS`` looks whatever it."""
    wait = CloseWait(0, MAX)
    goes = [wait.goes_on(look * 1000) for look in range(1, CLOSE_WAIT_LOOKS + 1)]
    assert goes == [True] * (CLOSE_WAIT_LOOKS - 1) + [False]
    assert wait.looks == CLOSE_WAIT_LOOKS


def test_a_peer_that_took_in_nothing_since_the_last_look_ends_the_wait() -> None:
    wait = CloseWait(500, MAX)
    assert wait.goes_on(600)
    assert not wait.goes_on(600)


def test_a_peer_past_the_byte_bound_and_a_message_ends_the_wait_at_that_look() -> None:
    """Within the bound (16 MiB and a message) it goes on; one byte past it, it ends, progress or not."""
    wait = CloseWait(100, MAX)
    assert wait.goes_on(100 + CLOSE_WAIT_BYTES + MAX)
    assert not wait.goes_on(100 + CLOSE_WAIT_BYTES + MAX + 1)


def test_a_look_tells_progress_and_spent_tells_the_bounds_apart() -> None:
    """What a splice weighs for each of its sides: a look's progress, and the bounds on their own."""
    wait = CloseWait(0, MAX)
    for look in range(1, CLOSE_WAIT_LOOKS):
        assert wait.look(look) and not wait.spent(look)
    assert wait.look(CLOSE_WAIT_LOOKS)  # progress still, at the last look ...
    assert wait.spent(CLOSE_WAIT_LOOKS)  # ... which is over the bound


def test_a_wait_paused_and_begun_again_compares_with_the_count_at_its_new_start() -> None:
    wait = CloseWait(0, MAX)
    assert wait.goes_on(10)
    wait.again(50)
    assert not wait.goes_on(50)
    assert wait.looks == 2 and wait.began == 0
