"""The regular expressions one handshake of an API may run, weighed together (:func:`regex_budget_problems`).

Each pattern is bounded (``safe_regex.MAX_PROGRAM_SIZE``), not how many an API runs: eight ``choose``
of 1,024 branches ``{ref: header.x-pad, matches: "(?s)a.{140}x"}`` (620 KB through the management
API) held the worker's event loop ~4 minutes per handshake with an 8 KiB header. What a handshake
can run is the API's policies and those it inherits (the global ones, its products', less those it
skips), ``choose`` branches and all: their ``matches`` (conditions, ``validate-jwt`` claims, any
policy's condition) and ``check-header`` patterns, weighed by ``safe_regex.regex_weight``. The
configuration layer knows no policy type: this reads the entries as written, as
``checks._redirected_in_process`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..safe_regex import MIN_REGEX_WEIGHT, regex_weight
from .gateway import GatewayConfig


def regex_budget_problems(config: GatewayConfig) -> list[str]:
    """An API whose handshake may run patterns weighing more than ``handshake_limits.max_regex_weight``."""
    budget = config.handshake_limits.max_regex_weight
    inherited = _weighed(config.policies)
    products = [(product.apis, _weighed(product.policies)) for product in config.products]
    problems = []
    for i, api in enumerate(config.apis):
        skipped = set(api.skip_policies)
        scopes = [inherited, *(weights for apis, weights in products if api.name in apis)]
        total = sum(weight for _, weight in _weighed(api.policies)) + sum(
            weight for weights in scopes for name, weight in weights if name not in skipped
        )
        if total > budget:
            problems.append(
                f"apis[{i}].policies: API '{api.name}' runs regular expressions weighing {total:,} RE2 instructions "
                f"per handshake (its policies', the global ones' and its products', each pattern {MIN_REGEX_WEIGHT} "
                f"at least), more than {budget:,} (handshake_limits.max_regex_weight): each is matched against "
                "what the client sends; use fewer (a counted repetition such as {1,64} weighs most), or equals / in "
                "where no pattern is needed"
            )
    return problems


def _weighed(entries: Sequence[Any]) -> list[tuple[str | None, int]]:
    """Each entry's run name (what ``skip_policies`` matches) and the weight of the patterns in it."""
    return [(run_name(entry), _weight(entry)) for entry in entries]


def _weight(entry: Any) -> int:
    total = 0
    pending = [entry]
    while pending:
        value = pending.pop()
        if isinstance(value, Mapping):
            if isinstance(value.get("matches"), str):  # a condition, a validate-jwt claim check
                total += regex_weight(value["matches"])
            header_check = value.get("check-header")
            if isinstance(header_check, Mapping) and isinstance(header_check.get("pattern"), str):
                total += regex_weight(header_check["pattern"], ignore_case=header_check.get("ignore_case") is True)
            pending += [v for v in value.values() if isinstance(v, Mapping | list)]
        elif isinstance(value, list):
            pending += [v for v in value if isinstance(v, Mapping | list)]
    return total


def run_name(entry: Any) -> str | None:
    """The name ``skip_policies`` matches an entry by: its settings' ``name``, else its type."""
    if not isinstance(entry, Mapping) or len(entry) != 1:
        return None
    type_name, settings = next(iter(entry.items()))
    name = settings.get("name") if isinstance(settings, Mapping) else None
    return str(name or type_name)


__all__ = ["regex_budget_problems", "run_name"]
