"""Where the operator's client certificates may be presented: where the configuration file presents them.

A change made here may name a client certificate only by the files and passphrase variable the
configuration file names (``store_sync.operator_gate``). An upstream of a token holder's host with
those files would have the gateway show them the operator's certificate and sign their TLS handshakes
with its key; an upstream of another of the operator's hosts would present an identity that host was
never meant to see. So an upstream changed here presents a client certificate only to a host and
port the file's own upstreams present that same certificate (cert, key and variable) to.
"""

from __future__ import annotations

from ..bounded import split_url
from ..config.apis import ApiConfig
from ..config.client_certificates import ClientCertificate
from ..config.gateway import GatewayConfig
from ..upstream.resolver import host_and_port

Presented = dict[ClientCertificate, set[tuple[str, int]]]


def _presented(apis: list[ApiConfig]) -> Presented:
    """Each client certificate of ``apis``' upstreams, with the hosts and ports it is presented to."""
    found: Presented = {}
    for api in apis:
        for upstream in api.upstreams:
            certificate = upstream.client_certificate
            if certificate is not None:
                found.setdefault(certificate, set()).add(host_and_port(split_url(upstream.url)))
    return found


def certificate_host_problems(
    base: GatewayConfig, merged: GatewayConfig, changed: set[str], subject: str | None
) -> list[str]:
    """Problems, by field path, of upstreams of APIs in ``changed`` that would present a client
    certificate where the configuration file does not."""
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
            host, port = host_and_port(split_url(upstream.url))
            if (host, port) not in file.get(certificate, set()):
                shown = f"[{host}]" if ":" in host else host
                problems.append(
                    f"{prefix}upstreams[{j}].client_cert: the configuration file presents this client certificate "
                    f"(with this client_key and client_key_password_env) to no upstream at {shown}:{port}; a change "
                    "may present one only where the file does"
                )
    return problems


__all__ = ["certificate_host_problems"]
