"""The warnings a management change answers with: what the configuration it made is valid for but
probably does not mean (a token read from a cookie without ``check-origin``), as the log writes it.

The gateway logs these warnings when it applies a configuration, where an operator working through the
REST API, the console or the SDK never looks. They are computed here the same way (``config_warnings``
and the policies' own, :class:`~asgi_ws_gateway.policies.build.GatewayPolicies`), with APIs and
products named instead of numbered (an index in the merged list means nothing to a client), and
redacted as the log line is.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from ..config.checks import config_warnings
from ..config.gateway import GatewayConfig
from ..policies.build import GatewayPolicies
from ..redact import redact_text
from ..state.memory import MemoryState

_REF = re.compile(r"(apis|products)\[(\d+)\](\.?)")
_PASSTHROUGH = re.compile(r"API (\S+): ")  # config_warnings names the API itself
_KINDS = {"apis": "API", "products": "product"}

Subject = tuple[str, str]
"""What a warning is about: ``("apis", name)`` or ``("products", name)``."""


def warnings_of(config: GatewayConfig) -> list[tuple[Subject | None, str]]:
    """Every warning ``config`` has, each with the API or product it is about (None: the whole configuration).

    Of :func:`~asgi_ws_gateway.config.checks.config_warnings`, only those about an API: the others are
    about what the management API does not change (``trusted_proxies``), or say that no API is left,
    which whoever deleted the last one through it knows.
    """
    about_apis = [warning for warning in config_warnings(config) if _PASSTHROUGH.match(warning)]
    found = [*about_apis, *GatewayPolicies(config, store=MemoryState()).warnings]
    names = {"apis": [api.name for api in config.apis], "products": [product.name for product in config.products]}
    named: list[tuple[Subject | None, str]] = []
    for warning in found:
        subject: Subject | None = None
        if (match := _REF.match(warning)) is not None and (found_name := _named(names, match)) is not None:
            subject = (match[1], found_name)
        elif (match := _PASSTHROUGH.match(warning)) is not None:
            subject = ("apis", match[1])

        def name(m: re.Match[str]) -> str:
            found_name = _named(names, m)
            return m[0] if found_name is None else f"{_KINDS[m[1]]} '{found_name}'" + (" " if m[3] else "")

        named.append((subject, redact_text(_REF.sub(name, warning))))
    return named


def _named(names: dict[str, list[str]], match: re.Match[str]) -> str | None:
    listed = names[match[1]]
    index = int(match[2])
    return listed[index] if index < len(listed) else None


def change_warnings(
    before: GatewayConfig | None, after: GatewayConfig, *, apis: Collection[str] = (), products: Collection[str] = ()
) -> list[str]:
    """The warnings of ``after`` that concern a change from ``before``: those about the ``apis`` and
    ``products`` it wrote (even if they had them before: the answer to a save shows what is still wrong),
    and any other that ``before`` did not have (a product deleted took the ``check-origin`` its APIs ran).
    ``before`` None: every warning of ``after`` is new."""
    had = {text for _, text in warnings_of(before)} if before is not None else set()
    written = {("apis", name) for name in apis} | {("products", name) for name in products}
    return [text for subject, text in warnings_of(after) if subject in written or text not in had]


__all__ = ["change_warnings", "warnings_of"]
