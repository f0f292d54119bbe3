"""Which header a proxy sets reaches the upstream and the policies: by its kind and by who sent it.

The client's address, host, URL and scheme (``X-Real-IP``, ``Forwarded``, ``X-Original-URL``,
``X-Scheme``) are dropped from every peer: the upstream learns them from the gateway's
``X-Forwarded-For``/``-Proto``/``-Host``. Before, from a peer in ``trusted_proxies``, the client's own
``X-Real-IP``, ``True-Client-IP``, ``Forwarded`` and ``X-Original-URL`` went upstream unchanged while
the gateway believed only ``forwarded_header`` (an ``ip-filter`` admitted 203.0.113.9 from
``X-Forwarded-For``; a Tornado upstream read 6.6.6.6 from ``X-Real-IP``); from any client,
``X-Scheme: https`` (Tornado then reported https), ``X-Url-Scheme``, ``Front-End-Https``, ``X-Https``.

The user an authenticating proxy let in and the client certificate a TLS-ending proxy verified
(``Remote-User``, ``X-Auth-Request-User``, ``Cf-Access-Jwt-Assertion``, ``X-MS-CLIENT-PRINCIPAL-NAME``,
``Ssl-Client-Cert``, ``X-SSL-Client-Verify``) are forgeries from a direct client, which sent them
upstream before, and kept from a trusted proxy, the only one that can have vouched for them, for
the policies (``{header.*}``, ``validate-jwt``) and the upstream (``upstream.proxy_headers.is_vouched_header``).
A real ``asgi-ws-gateway run``, an upstream that records the headers it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway.upstream.headers import HOP_BY_HOP, replaced_forwarding_header
from asgi_ws_gateway.upstream.proxy_headers import is_proxy_header, is_vouched_header
from support.clients import connect, expect_status
from support.jwts import HS_SECRET, token
from support.processes import ServerProcess, ready_server
from support.upstream import UpstreamServer

ADDRESS = ["X-Real-IP", "True-Client-IP", "Forwarded", "X-Original-URL", "X-Client-IP", "CF-Connecting-IP"]
MISSED_ADDRESS = ["X-Script-Name", "X-Nf-Client-Connection-Ip", "Cdn-Src-Ip", "X-Real-Port", "X-Client-Port"]
"""Address and URL names a re-attack found the rule missed (Netlify's, a CDN's, the root path): sent on
from any client."""
SCHEME = ["X-Scheme", "X-Url-Scheme", "X_Url_Scheme", "Front-End-Https", "FrontEndHttps", "X-Forwarded-Ssl",
          "X-ForwardedSsl", "X-Https", "X-Arr-Ssl", "X-Forwarded-Scheme"]  # fmt: skip
IDENTITY = [
    "Remote-User", "X-Remote-User", "Remote-Groups", "Remote-Email", "X-Auth-Request-User", "X-Auth-Request-Email",
    "X-Auth-Request-Groups", "X-Auth-Request-Access-Token", "X-Amzn-Oidc-Identity", "X-Amzn-Oidc-Data",
    "X-Amzn-Oidc-Accesstoken", "X-MS-CLIENT-PRINCIPAL", "X-MS-CLIENT-PRINCIPAL-NAME", "X-MS-CLIENT-PRINCIPAL-ID",
    "X-MS-CLIENT-PRINCIPAL-IDP", "X-MS-TOKEN-AAD-ID-TOKEN", "X-Authenticated-User", "X-Authenticated-Userid",
    "X-Forwarded-User", "X-Forwarded-Email", "X-Goog-Authenticated-User-Email", "X-Goog-Iap-Jwt-Assertion",
    "Cf-Access-Authenticated-User-Email", "Cf-Access-Jwt-Assertion", "X-Pomerium-Jwt-Assertion", "X-Vouch-User",
    "X-Consumer-ID", "X-Consumer-Username", "X-Credential-Identifier", "X-Anonymous-Consumer", "X-WEBAUTH-USER",
    "X-JWT-Assertion",
]  # fmt: skip
MISSED_IDENTITY = [
    "X-Authentik-Username", "X-Authentik-Groups", "Tailscale-User-Login", "Tailscale-User-Name", "X-Auth-Username",
    "X-Auth-Userid", "X-Auth-Subject", "X-Auth-Email", "X-Auth-Groups", "X-Auth-Roles", "X-Auth-ExpiresIn",
    "X-Consumer-Custom-ID", "X-Consumer-Groups", "X-Credential-Username", "X-Anonymous-Groups", "X-Remote-Email",
    "X-Remote-Group", "X-Remote-Extra-Scopes",
]  # fmt: skip
"""The user names authentik's outpost, Tailscale Serve and Keycloak Gatekeeper set, which the rule missed
(sent on from any client), and the Kong and Kubernetes names it now lists instead of prefixes."""
CERTIFICATE = ["Ssl-Client-Cert", "X-SSL-Client-Cert", "X-SSL-Client-Verify", "X-SSL-Client-S-DN", "X-Client-Cert",
               "X-Client-Certificate", "X-Client-Verify", "X-Client-DN", "X-ARR-ClientCert", "X-Forwarded-Client-Cert",
               "X-Client-Cert-Fingerprint"]  # fmt: skip
PASSED_ON = [
    "X-Endpoint-API-Userinfo", "X-Apigateway-Api-Userinfo", "X-Userinfo", "X-ID-Token", "X-JWT-Payload",
    "X-JWT-Claim-Sub", "X-Endpoint-API-Consumer-Type", "CF-IPCountry", "CF-Visitor", "CloudFront-Viewer-Country",
    "CloudFront-Is-Desktop-Viewer", "X-Azure-FDID", "X-Azure-Ref", "X-Vercel-IP-Country", "Fly-Region",
    "Fastly-SSL", "Akamai-Origin-Hop", "X-Akamai-Edgescape", "Oidc-Claim-Email",
    "OIDC-CLAIM-groups", "Oidc-Access-Token", "X-Amzn-Request-Context", "X-Apigateway-Context",
    "X-Apigateway-Event",
]  # fmt: skip
"""A verified token's claims as Google's ESP and API Gateway, kong-oidc and Envoy pass them on, and what
a CDN or platform says of the client (its country, the platform's own ids, which backends check to admit
only their front door's traffic): an attack pass sent each forged beside a valid token, and the upstream
got it beside the gateway's own identity headers; a re-attack added mod_auth_openidc's ``Oidc-*`` and
the request context serverless adapters pass on (``X-Amzn-Request-Context``, ``X-Apigateway-Event``)."""
ADDRESS += MISSED_ADDRESS
IDENTITY += MISSED_IDENTITY + PASSED_ON
CERTIFICATE += ["X-SSL-Protocol", "Ssl-Cipher"]
ALWAYS = ADDRESS + SCHEME
"""Dropped from every peer."""
VOUCHED = IDENTITY + CERTIFICATE
"""Dropped from an untrusted peer, kept from a trusted proxy."""
PROXY_NAMES = ALWAYS + [name for name in VOUCHED if name not in PASSED_ON]
"""Every kind in one request, within the 100 headers a request may carry."""

END_TO_END = [
    "Authorization", "Cookie", "Origin", "User-Agent", "Accept-Language", "X-Api-Key", "X-Tenant", "X-Request-Id",
    "Traceparent", "Tracestate", "Baggage", "X-Client-Version", "X-Client-Id", "X-Csrf-Token", "X-Requested-With",
    "X-Auth-Token", "X-Auth-User", "X-User-Agent", "X-Correlation-Id", "X-Amzn-Trace-Id", "Cache-Control",
    "Pragma", "X-Device-Id", "X-Session-Id", "Accept-Encoding", "X-Kept", "X-Access-Token", "X-User",
    "X-User-Id-Hint", "X-Tenant-Id", "X-Ms-Client-Request-Id", "X-Paid-Token", "X-Uuid-Token", "X-Guid-Token",
    "X-Android-Token", "X-Valid-Token", "X-Sid-Token", "X-Userinfo-Cache", "X-Id-Token-Hint",
]  # fmt: skip
"""Headers clients send for the upstream: never taken for a proxy's."""

ONCE_DROPPED = [
    "Sec-CH-Prefers-Color-Scheme", "Sec-CH-UA-Platform", "X-Https-Redirect", "X-Api-Scheme-Version",
    "X-Remote-Config", "X-Anonymous-Id", "X-Consumer-Key", "X-Credential-Type", "X-WebAuthn-Challenge",
    "X-Classloader", "X-Hassle",
]  # fmt: skip
"""Clients' own headers the rule dropped, from every client and silently, by a word found anywhere in
the name (``scheme`` in a browser's client hint, ``https``, ``ssl``, ``webauth`` in ``webauthn``) or
by a platform's prefix (``X-Remote-``, ``X-Anonymous-``, ``X-Consumer-``, ``X-Credential-``)."""
END_TO_END += ONCE_DROPPED

SEEN = ["X-Auth-Request-User", "Ssl-Client-Cert", "X-MS-CLIENT-PRINCIPAL-NAME", "X-Real-IP", "X-Scheme"]
"""Names the ``/seen`` API's policies read (``{header.*}``) and set again as ``X-Seen-<name>``."""

SET = {"X-Remote-User": "{client.ip}", "X-Scheme": "wss-by-policy", "Ssl-Client-Verify": "SUCCESS"}
"""What the API's ``set-header`` policies set: the operator's headers, under names the rule drops from a peer."""


def _run(tmp: Path, upstream: UpstreamServer, **top: Any) -> ServerProcess:
    policies: list[dict[str, Any]] = [{"set-header": {"header": k, "value": v}} for k, v in SET.items()]
    policies.append({"set-header": {"header": "X-Seen-Real-IP", "value": "{header.x-real-ip}"}})
    config = {
        "apis": [
            {"name": "open", "path": "/open", "upstreams": [upstream.url("/headers")]},
            {"name": "set", "path": "/set", "upstreams": [upstream.url("/headers")], "policies": policies},
            {"name": "relay", "path": "/relay", "upstreams": [upstream.url("/headers")], "passthrough": False},
            {"name": "allow", "path": "/allow", "upstreams": [upstream.url("/headers")],
             "policies": [{"ip-filter": {"allow": ["203.0.113.0/24"]}}]},
            {"name": "seen", "path": "/seen", "upstreams": [upstream.url("/headers")],
             "policies": [{"set-header": {"header": f"X-Seen-{name}", "value": f"{{header.{name.lower()}}}"}}
                          for name in SEEN]},
            {"name": "jwt", "path": "/jwt", "upstreams": [upstream.url("/headers")],
             "policies": [{"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat",
                                            "token": [{"header": "Cf-Access-Jwt-Assertion", "scheme": ""}]}}]},
        ],
        **top,
    }  # fmt: skip
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port)])


@pytest.fixture(scope="module")
def trusting(tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer) -> Iterator[ServerProcess]:
    """The test's connection (127.0.0.1) is a trusted proxy."""
    with _run(tmp_path_factory.mktemp("trusting"), upstream_server, trusted_proxies=["127.0.0.1"]) as server:
        yield server


@pytest.fixture(scope="module")
def untrusting(tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer) -> Iterator[ServerProcess]:
    """No trusted proxies: the test's connection is the client."""
    with _run(tmp_path_factory.mktemp("untrusting"), upstream_server) as server:
        yield server


async def _upstream_saw(url: str, headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    async with await connect(url, additional_headers=headers) as ws:
        seen: dict[str, list[str]] = json.loads(await ws.recv())["headers"]
        return seen


def _sent(names: list[str]) -> list[tuple[str, str]]:
    return [(name, "6.6.6.6") for name in names if name != "X-Original-URL"] + [("X-Original-URL", "/admin")]


@pytest.mark.parametrize("path", ["/open", "/relay"])
async def test_a_trusted_proxys_address_and_scheme_headers_do_not_reach_the_upstream(
    trusting: ServerProcess, path: str
) -> None:
    """Before: 6 of the 6 address headers went up from a trusted proxy."""
    sent = [("X-Forwarded-For", "203.0.113.9"), *_sent(PROXY_NAMES), ("X-Kept", "yes")]
    seen = await _upstream_saw(f"ws://127.0.0.1:{trusting.port}{path}", sent)
    assert [name for name in ALWAYS if name.lower() in seen and not name.lower().startswith("x-forwarded-")] == []
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]  # what the trusted proxy vouched for
    assert seen["x-forwarded-proto"] == ["http"]
    assert "x-forwarded-ssl" not in seen and "x-forwarded-scheme" not in seen
    assert seen["x-kept"] == ["yes"]


@pytest.mark.parametrize("path", ["/open", "/relay"])
async def test_a_trusted_proxys_user_and_certificate_headers_reach_the_upstream(
    trusting: ServerProcess, path: str
) -> None:
    """oauth2-proxy, Cloudflare Access, Azure Easy Auth or a TLS-ending proxy in front: the upstream reads its user."""
    sent = [("X-Forwarded-For", "203.0.113.9"), *_sent(VOUCHED)]
    seen = await _upstream_saw(f"ws://127.0.0.1:{trusting.port}{path}", sent)
    assert {name: seen.get(name.lower()) for name in VOUCHED} == {name: ["6.6.6.6"] for name in VOUCHED}


async def test_the_gateway_and_the_upstream_name_one_client(trusting: ServerProcess) -> None:
    """The allow-list admits 203.0.113.9 from X-Forwarded-For; the upstream is not told 6.6.6.6 by X-Real-IP."""
    seen = await _upstream_saw(f"ws://127.0.0.1:{trusting.port}/allow",
                               [("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "6.6.6.6")])  # fmt: skip
    assert "x-real-ip" not in seen and seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    status, _, _ = await expect_status(f"ws://127.0.0.1:{trusting.port}/allow", additional_headers={
        "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "203.0.113.9", "True-Client-IP": "203.0.113.9"})  # fmt: skip
    assert status == 403


@pytest.mark.parametrize("names", [SCHEME, IDENTITY, CERTIFICATE], ids=["scheme", "identity", "certificate"])
@pytest.mark.parametrize("path", ["/open", "/relay"])
async def test_a_direct_clients_proxy_headers_do_not_reach_the_upstream(
    untrusting: ServerProcess, names: list[str], path: str
) -> None:
    """Before: every scheme, user and certificate header went up from any client (X-Forwarded-* excepted)."""
    seen = await _upstream_saw(f"ws://127.0.0.1:{untrusting.port}{path}", [*_sent(names), ("X-Kept", "yes")])
    assert [name for name in names if name.lower() in seen and not name.lower().startswith("x-forwarded-")] == []
    assert seen["x-forwarded-proto"] == ["http"] and seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-kept"] == ["yes"]


@pytest.mark.parametrize(("fixture", "vouched"), [("trusting", "6.6.6.6"), ("untrusting", "")])
async def test_policies_read_a_user_and_certificate_from_a_trusted_proxy_only(
    fixture: str, vouched: str, request: pytest.FixtureRequest
) -> None:
    """``{header.*}`` reads the user and certificate headers as the upstream gets them; address and scheme never."""
    server: ServerProcess = request.getfixturevalue(fixture)
    seen = await _upstream_saw(f"ws://127.0.0.1:{server.port}/seen", _sent(SEEN))
    read = {name: seen.get(f"x-seen-{name.lower()}", [""]) for name in SEEN}
    assert read == {"X-Auth-Request-User": [vouched], "Ssl-Client-Cert": [vouched],
                    "X-MS-CLIENT-PRINCIPAL-NAME": [vouched], "X-Real-IP": [""], "X-Scheme": [""]}  # fmt: skip


async def test_validate_jwt_reads_its_token_from_a_trusted_proxys_header(trusting: ServerProcess) -> None:
    """Cloudflare Access in front: its ``Cf-Access-Jwt-Assertion`` is checked and goes on to the upstream."""
    assertion = token()
    seen = await _upstream_saw(f"ws://127.0.0.1:{trusting.port}/jwt", [("Cf-Access-Jwt-Assertion", assertion)])
    assert seen["cf-access-jwt-assertion"] == [assertion]


async def test_validate_jwt_does_not_read_a_direct_clients_proxy_header(untrusting: ServerProcess) -> None:
    """A direct client's ``Cf-Access-Jwt-Assertion`` is a forgery, its token never read: no token, a 401."""
    status, _, _ = await expect_status(f"ws://127.0.0.1:{untrusting.port}/jwt",
                                       additional_headers={"Cf-Access-Jwt-Assertion": token()})  # fmt: skip
    assert status == 401


@pytest.mark.parametrize("fixture", ["trusting", "untrusting"])
async def test_a_policys_header_under_a_proxy_name_reaches_the_upstream(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """``set-header`` is the operator's: it goes up, the peer's copy does not, and policies never read the peer's."""
    server: ServerProcess = request.getfixturevalue(fixture)
    sent = [("X-Remote-User", "admin"), ("X-Scheme", "https"), ("Ssl-Client-Verify", "FORGED"), ("X-Real-IP", "6.6")]
    seen = await _upstream_saw(f"ws://127.0.0.1:{server.port}/set", sent)
    assert seen["x-remote-user"] == ["127.0.0.1"]  # {client.ip}: the gateway's belief
    assert seen["x-scheme"] == ["wss-by-policy"]
    assert seen["ssl-client-verify"] == ["SUCCESS"]
    assert seen.get("x-seen-real-ip", [""]) == [""]  # {header.x-real-ip}: not the peer's
    assert "x-real-ip" not in seen


@pytest.mark.parametrize("path", ["/open", "/relay"])
@pytest.mark.parametrize(("fixture", "trusted"), [("trusting", True), ("untrusting", False)])
async def test_the_rule_goes_by_whole_names_and_the_platforms_own(
    fixture: str, trusted: bool, path: str, request: pytest.FixtureRequest
) -> None:
    """Before: a client's ``Sec-CH-Prefers-Color-Scheme``, ``X-Https-Redirect``, ``X-Anonymous-Id``... were
    dropped from every peer, and ``X-Script-Name``, ``Cdn-Src-Ip``, ``X-Authentik-Username``,
    ``Tailscale-User-Login``, ``X-Auth-Username``... sent on from any client."""
    server: ServerProcess = request.getfixturevalue(fixture)
    sent = [(name, "v") for name in ONCE_DROPPED + MISSED_ADDRESS + MISSED_IDENTITY]
    seen = await _upstream_saw(f"ws://127.0.0.1:{server.port}{path}", sent)
    assert [name for name in ONCE_DROPPED if seen.get(name.lower()) != ["v"]] == []
    assert [name for name in MISSED_ADDRESS if name.lower() in seen] == []
    assert [name for name in MISSED_IDENTITY if seen.get(name.lower()) == ["v"]] == (MISSED_IDENTITY if trusted else [])


# --- the name rule, pure --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALWAYS)
def test_every_address_and_scheme_name_is_replaced_from_every_peer(name: str) -> None:
    for spelled in (name.lower(), name.lower().replace("-", "_")):
        assert is_proxy_header(spelled) and not is_vouched_header(spelled)
        assert replaced_forwarding_header(spelled, trust_forwarded=False)
        assert replaced_forwarding_header(spelled, trust_forwarded=True)


@pytest.mark.parametrize("name", VOUCHED)
def test_every_user_and_certificate_name_is_replaced_from_an_untrusted_peer_only(name: str) -> None:
    for spelled in (name.lower(), name.lower().replace("-", "_")):
        assert is_proxy_header(spelled) and is_vouched_header(spelled)
        assert replaced_forwarding_header(spelled, trust_forwarded=False)
        assert not replaced_forwarding_header(spelled, trust_forwarded=True)


@pytest.mark.parametrize("name", END_TO_END)
def test_an_end_to_end_header_goes_on(name: str) -> None:
    assert not is_proxy_header(name.lower()) and not is_vouched_header(name.lower())
    assert not replaced_forwarding_header(name.lower(), trust_forwarded=False)
    assert not replaced_forwarding_header(name.lower(), trust_forwarded=True)


@given(
    st.sampled_from(["", "x-", "x-forwarded-", "front-end-", "x-amzn-", "x-ms-", "x-goog-", "cf-", "x-ssl-", "my-"]),
    st.sampled_from(["client-cert", "clientcert", "client-verify", "client-dn", "remote-user", "remoteuser",
                     "authenticated-user", "auth-request-user", "client-principal-name", "webauth-user",
                     "jwt-assertion"]),
    st.sampled_from(["", "-id", "s", "-email", "-v2"]),
    st.booleans(),
)  # fmt: skip
def test_every_certificate_and_user_name_is_dropped(prefix: str, part: str, suffix: str, underscore: bool) -> None:
    """By the parts of names, whatever a platform puts around them, ``_`` read as ``-``."""
    name = prefix + part + suffix
    assert is_proxy_header(name.replace("-", "_") if underscore else name)


@given(
    st.sampled_from(["", "x-", "x-forwarded-", "front-end-", "x-url-", "x-arr-", "x-original-", "my-", "x-api-"]),
    st.sampled_from(["scheme", "https", "ssl"]),
    st.booleans(),
)
def test_every_name_ending_in_a_scheme_word_is_dropped(prefix: str, word: str, underscore: bool) -> None:
    """``X-Scheme``, ``X-Url-Scheme``, ``Front-End-Https``, ``X-Https``, ``X-Forwarded-Ssl``: the scheme is
    the name's last segment."""
    name = prefix + word
    assert is_proxy_header(name.replace("-", "_") if underscore else name) and not is_vouched_header(name)


@given(
    st.sampled_from(["x-", "x-api-", "my-", "sec-ch-prefers-color-"]),
    st.sampled_from([("", "scheme", "-version"), ("", "https", "-redirect"), ("", "https", "-only"),
                     ("class", "ssl", "oader"), ("ha", "ssl", "e"), ("", "webauth", "n-challenge"),
                     ("", "webauth", "n"), ("", "scheme", "s"), ("", "https", "s")]),
    st.booleans(),
)  # fmt: skip
def test_a_scheme_or_webauth_word_elsewhere_in_a_name_is_no_proxys(
    prefix: str, word: tuple[str, str, str], underscore: bool
) -> None:
    """Not ``X-Https-Redirect``, ``X-Api-Scheme-Version``, ``X-Classloader``, ``X-WebAuthn-Challenge``,
    ``Sec-CH-Prefers-Color-Scheme``: a word inside another, or before more of the name, is the client's."""
    name = prefix + "".join(word)
    for spelled in (name.replace("-", "_") if underscore else name, name):
        assert not is_proxy_header(spelled) and not replaced_forwarding_header(spelled, trust_forwarded=False)


@given(
    st.sampled_from(["", "x-", "remote-", "x-remote-", "x-ssl-", "x-forwarded-", "x-auth-request-", "cf-access-"]),
    st.sampled_from(["client-ip", "real-ip", "remote-addr", "remote-ip", "remote-host", "connecting-ip", "user-ip"]),
    st.booleans(),
)
def test_an_address_name_is_never_vouched_for(prefix: str, part: str, underscore: bool) -> None:
    """A name that names the client's address is dropped from a trusted proxy too, whatever user or
    certificate prefix it carries (``Remote-Addr`` is not Authelia's ``Remote-User``)."""
    name = (prefix + part).replace("-", "_") if underscore else prefix + part
    assert not is_vouched_header(name) and replaced_forwarding_header(name, trust_forwarded=True)


@given(st.sampled_from([
    "remote-", "x-remote-extra-", "x-amzn-oidc-", "x-ms-token-", "x-goog-iap-", "cf-access-", "x-pomerium-",
    "x-vouch-", "x-authentik-", "tailscale-", "ssl-", "x-ssl-", "x-arr-", "x-original-", "x-envoy-", "x-appengine-",
]), st.text("abcdefghijklmnopqrstuvwxyz-", max_size=12))  # fmt: skip
def test_every_name_a_platform_prefix_begins_is_dropped(prefix: str, rest: str) -> None:
    assert is_proxy_header(prefix + rest) and replaced_forwarding_header(prefix + rest, trust_forwarded=False)


@given(st.sampled_from(END_TO_END + sorted(HOP_BY_HOP)))
def test_the_rule_is_the_same_asked_twice(name: str) -> None:
    """``replaced_forwarding_header`` keeps its answers: the second is the first."""
    for trusted in (False, True):
        first = replaced_forwarding_header(name.lower(), trust_forwarded=trusted)
        assert replaced_forwarding_header(name.lower(), trust_forwarded=trusted) is first
