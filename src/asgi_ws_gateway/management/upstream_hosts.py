"""Where the operator's secrets may be sent: upstream hosts an admin-token holder cannot choose alone.

A ``set-header`` or ``set-query-parameter`` that the configuration file applies to every API (global
policies) or to a product's APIs, and whose header or parameter names a credential (the values
``GET`` shows as ``REDACTED``: ``X-Internal-Auth``, ``api_key``...), or a URL or ``rewrite-uri``
template there with a credential in its query (``/ws?api_key=...``), sends the operator's secret with
each upstream request. An API created or changed through the management API that inherits one may
therefore connect only to hosts the operator named: the hosts of the file's own upstreams and
``set-backend-service`` URLs, and ``management.allowed_upstream_hosts``. Otherwise a token holder
could point an API at a server of their own and read the secret from its requests.

An API's *own* policies are not the operator's once the API is changed here: the file's values come
back ``REDACTED`` from ``GET`` and are refused when sent back, so a token holder can only send their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from ..config import ApiConfig, GatewayConfig, Host, parse_host
from ..redact import redact_url_credentials
from .disclosure import secret_setting, url_credential

_DEFAULT_PORTS = {"ws": 80, "wss": 443}


def _url_host(url: str) -> Host | None:
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
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


def _destinations(api: ApiConfig) -> list[tuple[str, str]]:
    """(field, URL) of every network host the API may connect to, by its own configuration."""
    found = [(f"upstreams[{j}]", u.url) for j, u in enumerate(api.upstreams) if u.kind != "asgi"]
    return found + [("policies (set-backend-service)", url) for url in _base_urls(api.policies)]


def operator_hosts(base: GatewayConfig, allowed: Iterable[str]) -> set[Host]:
    """The hosts the configuration file sends to, and those the operator allowed."""
    hosts = {parse_host(entry) for entry in allowed}
    urls = [url for api in base.apis for _, url in _destinations(api)]
    urls += _base_urls([base.policies, *(p.policies for p in base.products)])
    return hosts | {host for url in urls if (host := _url_host(url)) is not None}


def _trusted(host: Host, trusted: set[Host]) -> bool:
    name, port = host
    for allowed_name, allowed_port in trusted:
        if allowed_port is not None and allowed_port != port:
            continue
        if allowed_name in ("*", name) or (allowed_name.startswith("*.") and name.endswith(allowed_name[1:])):
            return True
    return False


def _secrets(entries: Iterable[Any], skip: set[str], where: str) -> Iterator[str]:
    """What each inherited, not skipped, policy entry sends that is a secret: ``global set-header X-Auth``."""
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue  # a policy object given in code: the operator's own code decides what it sends
        kind, settings = next(iter(entry.items()))
        if kind in skip or (isinstance(settings, Mapping) and settings.get("name") in skip):
            continue
        for name in _secret_names(settings):
            yield f"{where} {kind} {name}"


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


def secret_host_problems(
    base: GatewayConfig, merged: GatewayConfig, changed: set[str], trusted: set[Host], subject: str | None
) -> list[str]:
    """Problems, by field path, of APIs in ``changed`` that would send an inherited secret of the
    file's to a host the operator did not name."""
    problems = []
    for i, api in enumerate(merged.apis):
        if api.name not in changed:
            continue
        skip = set(api.skip_policies)
        secrets = [
            *_secrets(base.policies, skip, "the global"),
            *(
                secret
                for product in base.products
                if api.name in product.apis
                for secret in _secrets(product.policies, skip, f"product '{product.name}''s")
            ),
        ]
        if not secrets:
            continue
        prefix = "" if api.name == subject else f"apis[{i}]."
        for field, url in _destinations(api):
            host = _url_host(url)
            if host is not None and _trusted(host, trusted):
                continue
            shown = f"{host[0]}:{host[1]}" if host else redact_url_credentials(url)
            problems.append(
                f"{prefix}{field}: {shown} is not a host the configuration file sends to, and this API would "
                f"send it {secrets[0]} (the operator's secret): the operator may list the host in "
                "management.allowed_upstream_hosts; or skip the policy (skip_policies)"
            )
    return problems


__all__ = ["operator_hosts", "secret_host_problems"]
