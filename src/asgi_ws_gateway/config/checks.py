"""Rules that span fields of a validated configuration (:func:`cross_check`), and what is valid but
probably not meant (:func:`config_warnings`).
"""

from __future__ import annotations

import re

from ..forwarded import parse_network
from ..routing import PathTemplate, PathTemplateError, overlapping
from .gateway import GatewayConfig

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def cross_check(config: GatewayConfig) -> list[str]:
    """Rules that span fields: unique names, valid and non-overlapping paths, known placeholders.

    Policy settings are the policies' to check (``check_policies`` of :func:`.parsing.parse_config`).
    """
    problems: list[str] = []
    seen_names: dict[str, int] = {}
    templated: list[tuple[int, PathTemplate]] = []
    exact: dict[str, list[tuple[int, PathTemplate]]] = {}
    for i, api in enumerate(config.apis):
        if api.name in seen_names:
            problems.append(f"apis[{i}].name: duplicate API name '{api.name}' (also apis[{seen_names[api.name]}])")
        seen_names.setdefault(api.name, i)
        try:
            template = PathTemplate(api.path)
        except PathTemplateError as exc:
            problems.append(f"apis[{i}].path: {exc}")
            continue
        # Exact paths clash only when equal (a dictionary lookup); templates are compared pairwise,
        # so a thousand exact paths cost a thousand lookups rather than half a million comparisons.
        clashes = [j for j, other in templated if overlapping(template, other)]
        if template.params:
            clashes += [j for same in exact.values() for j, other in same if overlapping(template, other)]
        else:
            clashes += [j for j, _ in exact.get(api.path, [])]
        for j in sorted(clashes):
            problems.append(f"apis[{i}].path: '{api.path}' overlaps apis[{j}].path '{config.apis[j].path}'")
        if template.params:
            templated.append((i, template))
        else:
            exact.setdefault(api.path, []).append((i, template))
        for k, upstream in enumerate(api.upstreams):
            for field, value in (("url", upstream.url), ("path", upstream.path or "")):
                unknown = sorted(set(_PLACEHOLDER.findall(value)) - set(template.params))
                if unknown:
                    problems.append(
                        f"apis[{i}].upstreams[{k}].{field}: placeholder(s) {', '.join(unknown)} "
                        f"not defined by path '{api.path}'"
                    )
    return problems


def config_warnings(config: GatewayConfig) -> list[str]:
    """What is valid but probably not meant: no API at all; passthrough asked for where it cannot be; a
    trusted proxy network so wide that clients on the internet name their own address."""
    broad = [
        f"trusted_proxies: {network} trusts more addresses than any proxy fleet has (a /{net.prefixlen}): "
        "a client there chooses the address ip-filter, limits and the log see, by sending "
        f"{config.forwarded_header}; list the proxies' own addresses"
        for network in config.trusted_proxies
        if (net := parse_network(network)).prefixlen < (8 if net.version == 4 else 16)
    ]
    if not config.apis:
        return [
            "no WebSocket APIs are configured (an empty file, perhaps): every WebSocket request gets 404 "
            "until APIs are added, e.g. through the management API",
            *broad,
        ]
    return [
        *(
            f"API {api.name}: passthrough: true cannot splice an in-process (asgi:) upstream; it is relayed"
            for api in config.apis
            if api.passthrough is True and any(u.kind == "asgi" for u in api.upstreams)
        ),
        *broad,
    ]


__all__ = [
    "config_warnings",
    "cross_check",
]
