"""Guessing the admin token: past 30 refused credentials a minute, an address waits (429), right token or not."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from asgi_ws_gateway.management import ManagementAPIError
from asgi_ws_gateway.management.admin_auth import EXAMPLE_ADMIN_TOKEN, SHORT_TOKEN, token_auth
from asgi_ws_gateway.management.lockout import Lockout
from support.management import TOKEN, api, managed_gateway
from support.upstream import UpstreamServer


def test_an_address_waits_until_its_oldest_refusal_leaves_the_window() -> None:
    now = [0.0]
    lockout = Lockout(limit=3, window=60, clock=lambda: now[0])
    for second in (0, 10, 20):
        assert lockout.wait("1.2.3.4") == 0
        now[0] = second
        lockout.refused("1.2.3.4")
    assert lockout.wait("1.2.3.4") == 40  # the refusal at 0 leaves at 60
    assert lockout.wait("5.6.7.8") == 0  # another address is not concerned
    now[0] = 60
    assert lockout.wait("1.2.3.4") == 0  # two left in the window: heard again
    lockout.refused("1.2.3.4")
    assert lockout.wait("1.2.3.4") == 10  # the one at 10 leaves at 70


def test_the_addresses_kept_are_bounded() -> None:
    lockout = Lockout(limit=1, window=60, addresses=100)
    for i in range(1000):
        lockout.refused(f"10.0.{i // 256}.{i % 256}")
    assert len(lockout) == 100
    assert lockout.wait("10.0.3.231") > 0 and lockout.wait("10.0.0.0") == 0  # the newest kept, the oldest gone


def test_refusals_from_other_addresses_do_not_unlock_a_locked_one() -> None:
    """To make room, addresses that are not locked are forgotten first, however many there are."""
    lockout = Lockout(limit=3, window=60, addresses=10)
    for _ in range(3):
        lockout.refused("203.0.113.66")
    for i in range(1000):
        lockout.refused(f"10.0.{i // 256}.{i % 256}")
    assert len(lockout) == 10
    assert lockout.wait("203.0.113.66") > 0


def test_when_every_address_kept_is_locked_the_earliest_lock_makes_room(caplog: pytest.LogCaptureFixture) -> None:
    """Unlocking one early takes ``addresses`` locked at once; memory stays bounded, one WARNING says so."""
    now = [0.0]
    lockout = Lockout(limit=2, window=60, addresses=3, clock=lambda: now[0])
    for i in range(4):
        now[0] = i
        lockout.refused(f"10.0.0.{i}")
        lockout.refused(f"10.0.0.{i}")
    assert len(lockout) == 3
    assert lockout.wait("10.0.0.0") == 0 and all(lockout.wait(f"10.0.0.{i}") > 0 for i in (1, 2, 3))
    assert "3 clients are locked out at once; the earliest lock (10.0.0.0) ends early" in caplog.text


async def test_guessing_the_token_is_slowed_to_thirty_a_minute(
    upstream: UpstreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_ws_gateway.management.lockout")
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        async with managed.http(token=None) as http:
            for guess in range(30):
                response = await http.get("apis", headers={"Authorization": f"Bearer guess-{guess}"})
                assert response.status_code == 401
            for token in ("guess-30", TOKEN):  # the right token waits too: a guess must not be confirmed
                response = await http.get("apis", headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 429
                assert 0 < int(response.headers["retry-after"]) <= 60
                assert response.json()["detail"] == "too many refused admin credentials from this address"
            assert (await http.get("healthz")).status_code == 200  # what needs no token is not locked
        async with managed.client() as client:  # the SDK says how long
            with pytest.raises(ManagementAPIError) as info:
                await client.list_apis()
            assert info.value.status == 429 and info.value.retry_after is not None and 0 < info.value.retry_after <= 60
    # On loopback the client is the local user where the kernel says (test_management_lockout_local_users.py).
    (message,) = [r.getMessage() for r in caplog.records]
    assert message in {
        f"management API: 30 refused admin credentials from {who} within 60 s; it waits up to 60 s (429)"
        for who in ("127.0.0.1", f"loopback (uid {os.getuid()})")
    }


@pytest.mark.parametrize("where", ["path", "port"])
async def test_behind_a_trusted_proxy_the_client_is_locked_out_not_the_proxy(
    where: str, upstream: UpstreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind ``trusted_proxies`` the lockout keys on the forwarded client, at a path and on a port alike."""
    caplog.set_level(logging.WARNING, logger="asgi_ws_gateway.management.lockout")
    config = {"trusted_proxies": ["127.0.0.1"], "apis": [api("echo", "/ws/echo", upstream)]}
    options = {"port": 0} if where == "port" else {}
    with managed_gateway(config, tmp_path / "state.json", **options) as managed:
        async with managed.http(token=None) as http:
            attacker = {"X-Forwarded-For": "203.0.113.66"}
            for guess in range(30):
                headers = {**attacker, "Authorization": f"Bearer guess-{guess}"}
                assert (await http.get("apis", headers=headers)).status_code == 401
            assert (await http.get("apis", headers={**attacker, "Authorization": f"Bearer {TOKEN}"})).status_code == 429
            admin = {"X-Forwarded-For": "198.51.100.7", "Authorization": f"Bearer {TOKEN}"}
            assert (await http.get("apis", headers=admin)).status_code == 200
    assert [r.getMessage() for r in caplog.records] == [
        "management API: 30 refused admin credentials from 203.0.113.66 within 60 s; it waits up to 60 s (429)"
    ]


async def test_a_forwarding_header_from_an_untrusted_peer_does_not_move_the_lockout(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """Without ``trusted_proxies`` an attacker cannot escape the lockout by naming another address."""
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        async with managed.http(token=None) as http:
            for guess in range(30):
                headers = {"X-Forwarded-For": f"203.0.113.{guess}", "Authorization": f"Bearer guess-{guess}"}
                assert (await http.get("apis", headers=headers)).status_code == 401
            headers = {"X-Forwarded-For": "198.51.100.7", "Authorization": f"Bearer {TOKEN}"}
            assert (await http.get("apis", headers=headers)).status_code == 429


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    """A host holds a /64: a new address in it for each guess is the same client, another /64 is not."""
    lockout = Lockout(limit=3, window=60)
    for host in (1, 2, 3):
        lockout.refused(f"2001:db8:0:1::{host}")
    assert lockout.wait("2001:db8:0:1:ffff::9") > 0
    assert lockout.wait("2001:db8:0:2::1") == 0
    assert lockout.wait("::ffff:192.0.2.1") == 0 and lockout.wait("192.0.2.1") == 0  # IPv4: the address itself


@pytest.mark.parametrize(
    "token", ["", " leading-space-admin-token", "admin\ttoken-with-a-tab-0", "jeton-d'accès-non-ascii"]
)
def test_an_admin_token_no_client_could_send_is_refused(token: str) -> None:
    """Starlette reads a header as Latin-1 and strips it: such a token used to lock everyone out unnoticed."""
    with pytest.raises(ValueError, match="admin token"):
        token_auth(token)


def test_a_short_admin_token_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """The lockout slows one address; a word list from many addresses still finds a short token."""
    token_auth("x" * SHORT_TOKEN)
    assert not caplog.records
    token_auth("changeme")
    token_auth(EXAMPLE_ADMIN_TOKEN)  # long, but printed by the example and the README
    assert caplog.messages == [
        "the admin token is 8 characters: guessable; use 16 or more random characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
        "the admin token is the example's, which is public; use 16 or more random characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
    ]
