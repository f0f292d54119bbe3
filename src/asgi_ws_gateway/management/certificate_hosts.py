"""Where the operator's client certificates may be presented: where the configuration file presents them.

A change made here may name a client certificate only by the files and passphrase variable the
configuration file names (``store_sync.operator_gate``). An upstream of a token holder's host with
those files would have the gateway show them the operator's certificate and sign their TLS handshakes
with its key; an upstream of another of the operator's hosts would present an identity that host was
never meant to see. So an upstream changed here presents a client certificate only to a host and
port the file's own upstreams present that same certificate (cert, key and variable) to, and only
as strictly as the file connects there (``verify_tls: false`` or another ``ca_bundle`` would show it
to whoever holds the address).
"""

from __future__ import annotations

from ..bounded import split_url
from ..config.apis import ApiConfig, UpstreamConfig
from ..config.client_certificates import ClientCertificate
from ..config.gateway import GatewayConfig
from ..upstream.resolver import host_and_port
from ..upstream.tls import TlsSettings, connection_tls

Presented = dict[tuple[ClientCertificate, str, int], set[TlsSettings]]
"""Each client certificate with a host and port it is presented to: how the file connects there."""


def _own(upstream: UpstreamConfig) -> tuple[str, int, TlsSettings]:
    host, port = host_and_port(split_url(upstream.url))
    return host, port, connection_tls(upstream, "wss", host, port)


def _presented(apis: list[ApiConfig]) -> Presented:
    found: Presented = {}
    for api in apis:
        for upstream in api.upstreams:
            certificate = upstream.client_certificate
            if certificate is not None:
                host, port, settings = _own(upstream)
                found.setdefault((certificate, host, port), set()).add(settings)
    return found


def certificate_host_problems(
    base: GatewayConfig, merged: GatewayConfig, changed: set[str], subject: str | None
) -> list[str]:
    """Problems, by field path, of upstreams of APIs in ``changed`` that would present a client
    certificate where the configuration file does not, or less strictly than it does."""
    problems: list[str] = []
    file: Presented | None = None
    for i, api in enumerate(merged.apis):
        if api.name not in changed:
            continue
        prefix = "" if api.name == subject else f"apis[{i}]."
        for j, upstream in enumerate(api.upstreams):
            certificate = upstream.client_certificate
            if certificate is None:
                continue
            file = _presented(base.apis) if file is None else file
            host, port, settings = _own(upstream)
            uses = file.get((certificate, host, port))
            shown = f"{f'[{host}]' if ':' in host else host}:{port}"
            if uses is None:
                problems.append(
                    f"{prefix}upstreams[{j}].client_cert: the configuration file presents this client certificate "
                    f"(with this client_key and client_key_password_env) to no upstream at {shown}; a change "
                    "may present one only where the file does"
                )
            elif not any(settings.at_least_as_strict_as(use) for use in uses):
                problems.append(
                    f"{prefix}upstreams[{j}].client_cert: the configuration file presents this client certificate "
                    f"to {shown} verifying the host as this upstream does not (verify_tls, ca_bundle); a change "
                    "may present it only as strictly as the file does"
                )
    return problems


__all__ = ["certificate_host_problems"]
