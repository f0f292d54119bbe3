"""Where the operator's secrets may be sent: upstream hosts an admin-token holder cannot choose alone.

A ``set-header`` or ``set-query-parameter`` that the configuration file applies to every API (global
policies) or to a product's APIs, and whose header or parameter names a credential (the values
``GET`` shows as ``REDACTED``: ``X-Internal-Auth``, ``api_key``...), a URL or ``rewrite-uri``
template there with a credential in its query (``/ws?api_key=...``), or an inbound
``transform-message`` that sets a field so named (``set: {api_key: ...}``), sends the operator's
secret upstream. An API the management API touches (created or changed here, or listed by a product
created here) that runs one may therefore connect only to hosts the operator named: the hosts of the
file's own upstreams and ``set-backend-service`` URLs, and ``management.allowed_upstream_hosts``.
Otherwise a token holder could point the API at a server of their own and read the secret from its
requests.

The check follows the gateway's own rules, so that the two cannot disagree:

* an API's destinations are its upstreams and the ``base_url`` of every ``set-backend-service`` it
  runs: the global ones, those of every product listing it (the file's and those created here), its own;
* ``skip_policies`` removes an inherited policy by the name it runs under (:func:`policy_name`: its
  ``name``, else its type), as :mod:`~asgi_ws_gateway.policies.build_entries` does;
* a host written as a template (``ws://{jwt.region}:9000``) is whatever the values make it: never
  one the operator named, in the file or in a change, unless the operator allowed every host (``*``).
* a host is the operator's only as the file reaches it: each connection to one of the file's hosts
  (an upstream, or a ``set-backend-service`` URL with each upstream's TLS settings, as
  :mod:`~asgi_ws_gateway.upstream.tls` decides them) is TLS where the file uses ``wss://``, verified
  where the file verifies, against the CAs the file verifies it with (``verify_tls: false`` or
  ``ws://`` on the file's ``wss://`` host let whoever held the address read the secret).

An API's *own* policies are not the operator's once the API is changed here: the file's values come
back ``REDACTED`` from ``GET`` and are refused when sent back, so a token holder can only send their own.
A file API that a product created here only lists still runs the file's definition: its own policies'
values are the operator's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config.apis import ApiConfig, UpstreamConfig
from ..config.gateway import GatewayConfig
from ..config.hosts import Host, host_matches, parse_host
from ..policies.build_entries import run_name
from ..redact import redact_url_credentials
from ..upstream.tls import PLAIN, TlsSettings, connection_tls
from .disclosure import secret_setting, set_credentials, url_credential

_DEFAULT_PORTS = {"ws": 80, "wss": 443}
_ANY_HOST: Host = ("*", None)


def policy_name(entry: Mapping[str, Any]) -> str:
    """The name a policy entry (``{type: settings}``) runs under, which ``skip_policies`` matches: its
    ``name``, else its type, as :class:`~asgi_ws_gateway.policies.build_entries.PolicyBuilder` names what it builds."""
    kind, settings = next(iter(entry.items()))
    return run_name(str(kind), settings.get("name") if isinstance(settings, Mapping) else None)


def _url_host(url: str) -> tuple[str, int] | None:
    """The URL's host and port; None when it has none, or when a template writes any of its authority."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "{" in parts.netloc or "}" in parts.netloc:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port if port is not None else _DEFAULT_PORTS[parts.scheme]


def _base_urls(value: Any) -> Iterator[str]:
    """The ``base_url`` of every ``set-backend-service`` in policy entries, nested ones included."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "base_url" and isinstance(item, str):
                yield item
            else:
                yield from _base_urls(item)
    elif isinstance(value, list):
        for item in value:
            yield from _base_urls(item)


Upstreams = tuple[tuple[int, UpstreamConfig], ...]
"""The upstreams (by index) a destination is connected for: its TLS settings are theirs (``upstream.tls``)."""


def _network(api: ApiConfig) -> Upstreams:
    return tuple((j, u) for j, u in enumerate(api.upstreams) if u.kind != "asgi")


def _own_destinations(api: ApiConfig) -> list[tuple[str, str, Upstreams]]:
    """(field, URL, upstreams connected for) of every network host the API may connect to, by its own
    configuration: an upstream's URL for itself, a ``set-backend-service`` URL for every upstream."""
    found = [(f"upstreams[{j}]", u.url, ((j, u),)) for j, u in _network(api)]
    return found + [("policies (set-backend-service)", url, _network(api)) for url in _base_urls(api.policies)]


@dataclass(frozen=True)
class OperatorHosts:
    """Where the file's credentials may go, worked out once from the configuration file.

    Attributes:
        hosts: the hosts the file sends to (written out, not templated), and those the operator allowed.
        tls: how the file connects to each host it sends to (:func:`file_tls`): a change connects
            to it at least as strictly.
    """

    hosts: set[Host]
    tls: dict[Host, set[TlsSettings]]


def operator_hosts(base: GatewayConfig, allowed: Iterable[str]) -> OperatorHosts:
    """The hosts the configuration file sends to and those the operator allowed, with the file's TLS to each."""
    hosts = {parse_host(entry) for entry in allowed}
    urls = [url for api in base.apis for _, url, _ in _own_destinations(api)]
    urls += _base_urls([base.policies, *(p.policies for p in base.products)])
    hosts |= {host for url in urls if (host := _url_host(url)) is not None}
    return OperatorHosts(hosts, file_tls(base) if _ANY_HOST not in hosts else {})  # every host allowed: no floor


def _trusted(url: str, trusted: set[Host]) -> bool:
    if _ANY_HOST in trusted:
        return True  # the operator allowed every host, templated ones included
    host = _url_host(url)
    if host is None:
        return False
    return host_matches(trusted, *host)


@dataclass(frozen=True)
class _Scope:
    """Policies an API runs from one place: the global ones, a product's, or its own."""

    where: str  # "the global", "product 'gold''s", "the API's own"
    policies: Sequence[Any]
    inbound: Sequence[Any]  # inbound message policies: what they set goes upstream too
    operator: bool  # the file's: its values are the operator's secrets
    inherited: bool  # skip_policies applies


def _scopes(base: GatewayConfig, merged: GatewayConfig, api: ApiConfig) -> list[_Scope]:
    """The API's policy scopes in the order they run: global, its products (the file's, then those
    created here), its own."""
    file_products = {p.name for p in base.products}
    file_defined = any(own == api for own in base.apis if own.name == api.name)
    return [
        _Scope("the global", merged.policies, merged.message_policies.inbound, operator=True, inherited=True),
        *(
            _Scope(f"product '{p.name}''s", p.policies, p.message_policies.inbound, p.name in file_products, True)
            for p in merged.products
            if api.name in p.apis
        ),
        _Scope("the API's own", api.policies, api.message_policies.inbound, operator=file_defined, inherited=False),
    ]


def _runs(entries: Iterable[Any], scope: _Scope, skip: set[str]) -> Iterator[tuple[str, Any]]:
    """(type, settings) of each policy entry of ``scope`` that runs: not skipped by its name."""
    for entry in entries:
        if not isinstance(entry, Mapping) or len(entry) != 1:
            continue  # a policy object given in code: the operator's own code decides what it sends
        if scope.inherited and policy_name(entry) in skip:
            continue
        kind, settings = next(iter(entry.items()))
        yield str(kind), settings


def _secrets(scope: _Scope, skip: set[str]) -> Iterator[str]:
    """What each policy of the operator's scope that runs sends that is a secret: ``the global set-header X-Auth``."""
    if not scope.operator:
        return
    for kind, settings in _runs(scope.policies, scope, skip):
        for name in _secret_names(settings):
            yield f"{scope.where} {kind} {name}"
    for kind, settings in _runs(scope.inbound, scope, skip):
        names = [*_secret_names(settings)]
        if kind == "transform-message" and isinstance(settings, Mapping):
            names += (f"set {path}" for path in set_credentials(settings.get("set")))
        for name in names:
            yield f"{scope.where} {kind} {name}"


def _secret_names(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        name = secret_setting(value)
        if name is not None and value.get("value"):
            yield name
        for key, item in value.items():
            if isinstance(item, str) and url_credential(item):  # rewrite-uri's /ws?api_key=..., a base_url's
                yield f"{key} (a credential in its URL)"
            else:
                yield from _secret_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secret_names(item)


def _destinations(
    scopes: Sequence[_Scope], api: ApiConfig, skip: set[str]
) -> Iterator[tuple[bool, str, str, Upstreams]]:
    """(own, field, URL, upstreams connected for) of every host the API may connect to: its upstreams
    and every backend it runs, whether its own or inherited (``product 'gold''s policies (set-backend-service)``)."""
    for scope in scopes:
        if not scope.inherited:
            yield from ((True, field, url, upstreams) for field, url, upstreams in _own_destinations(api))
            continue
        for _, settings in _runs(scope.policies, scope, skip):
            for url in _base_urls(settings):
                yield False, f"{scope.where} policies (set-backend-service)", url, _network(api)


def _connections(url: str, upstreams: Upstreams) -> Iterator[tuple[int, UpstreamConfig, TlsSettings]]:
    """How each of ``upstreams`` connects to ``url``'s host (none when it has no host of its own)."""
    host = _url_host(url)
    if host is not None:
        scheme = urlsplit(url).scheme
        yield from ((j, u, connection_tls(u, scheme, *host)) for j, u in upstreams)


def file_tls(base: GatewayConfig) -> dict[Host, set[TlsSettings]]:
    """How the configuration file connects to each host it sends to: its APIs' upstreams and the
    ``set-backend-service`` URLs they run (one a global or product policy names but no API of the
    file runs: by its scheme, verified against the system's trust store)."""
    listed: dict[str, list[_Scope]] = {}  # by API: the scopes of the products listing it
    for product in base.products:
        scope = _Scope(f"product '{product.name}''s", product.policies, (), operator=True, inherited=True)
        for name in product.apis:
            listed.setdefault(name, []).append(scope)
    inherited = _Scope("the global", base.policies, (), operator=True, inherited=True)
    own = _Scope("the API's own", (), (), operator=True, inherited=False)  # _destinations reads the API's
    found: dict[Host, set[TlsSettings]] = {}
    for api in base.apis:
        scopes = [inherited, *listed.get(api.name, ()), own]
        for _, _, url, upstreams in _destinations(scopes, api, set(api.skip_policies)):
            host = _url_host(url)
            if host is not None:  # a templated one is the operator's only when every host is
                for _, _, settings in _connections(url, upstreams):
                    found.setdefault(host, set()).add(settings)
    for url in _base_urls([base.policies, *(p.policies for p in base.products)]):
        if (host := _url_host(url)) is not None and host not in found:
            found[host] = {TlsSettings(tls=True) if url.startswith("wss://") else PLAIN}
    return found


def _floor(floor: dict[Host, set[TlsSettings]], host: tuple[str, int]) -> set[TlsSettings] | None:
    """How the file connects to ``host``: at that port, else at any port of that name. A name the file
    reaches over TLS on one port is the file's on every port: ``allowed_upstream_hosts`` may list it
    without a port (or as ``*.domain``), and a plain ``ws://`` to another port of it sent the secret in
    clear text to whoever held that port (an attack pass)."""
    exact = floor.get(host)
    if exact is not None:
        return exact
    others = [uses for (name, _), uses in floor.items() if name == host[0]]
    return set().union(*others) if others else None


def _weaker(settings: TlsSettings, uses: Iterable[TlsSettings], upstream: str) -> str | None:
    """How a connection with ``settings`` is weaker than every one of the file's to that host (``uses``),
    or None; ``upstream`` names the upstream whose settings those are (``upstreams[0]``)."""
    if any(settings.at_least_as_strict_as(use) for use in uses):
        return None
    if not settings.tls:
        return "without TLS (ws://), where the configuration file uses wss://"
    if not settings.verify:
        return f"without verifying its certificate ({upstream}.verify_tls: false), where the file verifies it"
    ca = f"{upstream}.ca_bundle" if settings.ca_bundle is not None else f"the system's store (no {upstream}.ca_bundle)"
    return f"verifying its certificate against {ca}, not the CAs the configuration file does (another CA could vouch)"


def _shown(url: str) -> str:
    host = _url_host(url)
    if host is not None:
        return f"{host[0]}:{host[1]}"
    templated = "{" in urlsplit(url).netloc
    return redact_url_credentials(url) + (
        " (a host written as a template: whatever its values make it)" if templated else ""
    )


def secret_host_problems(
    base: GatewayConfig, merged: GatewayConfig, changed: set[str], operator: OperatorHosts, subject: str | None
) -> list[str]:
    """Problems, by field path, of APIs in ``changed`` that would send a secret of the file's to a host
    the operator did not name, or to one of the file's hosts less strictly than the file does."""
    problems = []
    trusted, floor = operator.hosts, operator.tls
    for i, api in enumerate(merged.apis):
        if api.name not in changed:
            continue
        skip = set(api.skip_policies)
        scopes = _scopes(base, merged, api)
        secrets = [secret for scope in scopes for secret in _secrets(scope, skip)]
        if not secrets:
            continue
        mine = api.name == subject
        who = "this API" if mine else f"API '{api.name}'"
        prefix = "" if mine else f"apis[{i}]."
        for own, field, url, upstreams in _destinations(scopes, api, skip):
            where = f"{prefix}{field}" if own else field
            if not _trusted(url, trusted):
                problems.append(
                    f"{where}: {_shown(url)} is not a host the configuration file sends to, and {who} would send "
                    f"it {secrets[0]} (the operator's secret): the operator may list the host in "
                    "management.allowed_upstream_hosts; or skip the policy (skip_policies)"
                )
                continue
            host = _url_host(url)
            uses = _floor(floor, host) if host is not None else None
            if uses is None:  # a host allowed_upstream_hosts names, which the file does not send to
                continue
            for j, _, settings in _connections(url, upstreams):
                weaker = _weaker(settings, uses, f"{prefix}upstreams[{j}]")
                if weaker is not None:
                    problems.append(
                        f"{where}: {who} would connect to {_shown(url)}, a host the configuration file sends to, "
                        f"{weaker}, and send it {secrets[0]} (the operator's secret): connect to it as the "
                        "configuration file does; or skip the policy (skip_policies)"
                    )
                    break
    return problems


__all__ = ["OperatorHosts", "file_tls", "operator_hosts", "policy_name", "secret_host_problems"]
