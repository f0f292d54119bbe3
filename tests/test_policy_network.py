"""ip-filter and check-origin as pure logic."""

from __future__ import annotations

import pytest

from support.policies import build, context, denied, problems


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.9.9.9", False),  # in deny, which wins
        ("192.168.1.1", False),  # not in allow
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::ffff:10.1.2.3", True),  # IPv4-mapped IPv6 is the IPv4 address
    ],
)
async def test_ip_filter(client: str, allowed: bool) -> None:
    policy = build({"ip-filter": {"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.9.0.0/16"]}})
    ctx = context(client=(client, 1))
    if allowed:
        await policy.apply(ctx)
    else:
        assert (await denied(policy.apply(ctx))).status == 403


async def test_ip_filter_uses_the_address_trusted_proxies_report() -> None:
    policy = build({"ip-filter": {"deny": ["198.51.100.0/24"]}})
    forged = [("X-Forwarded-For", "198.51.100.7")]
    await policy.apply(context(headers=forged, client=("203.0.113.1", 1)))  # untrusted peer: header ignored
    ctx = context(headers=forged, client=("10.0.0.1", 1), trusted=["10.0.0.0/8"])
    assert (await denied(policy.apply(ctx))).reason == "ip_forbidden"


def test_ip_filter_bad_network_is_a_problem() -> None:
    assert problems({"ip-filter": {"allow": ["10.0.0.0/33"]}}) == [
        "apis[0].policies[0].ip-filter.allow: '10.0.0.0/33' is not an IP address or network"
    ]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("HTTPS://APP.EXAMPLE.COM", True),
        ("https://app.example.com:443", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),  # *. needs a subdomain
        ("https://evil-example.com", False),
        ("https://example.com.evil.com", False),
        ("http://app.example.com", False),  # scheme matters
        ("https://app.example.com:8443", False),
        ("http://localhost:5173", True),
        ("http://localhost", True),
        ("null", False),
    ],
)
async def test_check_origin(origin: str, allowed: bool) -> None:
    policy = build(
        {"check-origin": {"allowed": ["https://app.example.com", "https://*.example.com", "http://localhost:*"]}}
    )
    ctx = context(headers=[("Origin", origin)])
    if allowed:
        await policy.apply(ctx)
    else:
        denial = await denied(policy.apply(ctx))
        assert (denial.status, denial.reason) == (403, "origin_forbidden")


async def test_check_origin_missing() -> None:
    strict = build({"check-origin": {"allowed": ["https://app.example.com"]}})
    assert (await denied(strict.apply(context()))).reason == "origin_missing"
    await build({"check-origin": {"allowed": ["https://app.example.com"], "allow_missing": True}}).apply(context())


def test_check_origin_bad_entries() -> None:
    assert problems({"check-origin": {"allowed": ["app.example.com"]}}) == [
        "apis[0].policies[0].check-origin.allowed[0]: 'app.example.com' is not an origin like https://app.example.com"
    ]
    assert problems({"check-origin": {"allowed": ["https://app.*.com"]}})[0].endswith(
        "a wildcard may only start the host, as in https://*.example.com"
    )
