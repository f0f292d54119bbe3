"""The regular expressions one handshake of an API may run, weighed together, and the conditions it may
test, counted (:func:`regex_budget_problems`).

Each pattern is bounded (``safe_regex.MAX_PROGRAM_SIZE``), not how many an API runs: eight ``choose``
of 1,024 branches ``{ref: header.x-pad, matches: "(?s)a.{140}x"}`` (620 KB through the management
API) held the worker's event loop ~4 minutes per handshake with an 8 KiB header. What a handshake
can run is the API's policies and those it inherits (the global ones, its products', less those it
skips), ``choose`` branches and all: their ``matches`` (conditions, ``validate-jwt`` claims, any
policy's condition) and ``check-header`` patterns, weighed by ``safe_regex.regex_weight``. The
configuration layer knows no policy type: this reads the entries as written, as
``checks._redirected_in_process`` does.

Conditions are counted the same way, whatever their operator: 20 ``choose`` of 1,024 ``contains``
conditions (963 KB) held the worker 5-6 s per handshake of an 8 KiB header, and every product that
lists an API adds its own (a keyless client runs every open product's), so the state's 16 MiB bound
was the only one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..safe_regex import MIN_REGEX_WEIGHT, regex_weight
from .gateway import GatewayConfig


def regex_budget_problems(config: GatewayConfig) -> list[str]:
    """An API whose handshake may run patterns weighing more than ``handshake_limits.max_regex_weight``, or
    test more conditions than ``handshake_limits.max_conditions``."""
    limits = config.handshake_limits
    problems = []
    for i, (name, weight, conditions) in enumerate(_per_api(config)):
        if weight > limits.max_regex_weight:
            problems.append(
                f"apis[{i}].policies: API '{name}' runs regular expressions weighing {weight:,} RE2 instructions "
                f"per handshake (its policies', the global ones' and its products', each pattern {MIN_REGEX_WEIGHT} "
                f"at least), more than {limits.max_regex_weight:,} (handshake_limits.max_regex_weight): each is "
                "matched against what the client sends; use fewer (a counted repetition such as {1,64} weighs "
                "most), or equals / in where no pattern is needed"
            )
        if conditions > limits.max_conditions:
            problems.append(
                f"apis[{i}].policies: API '{name}' tests {conditions:,} conditions per handshake (its policies', the "
                f"global ones' and its products': choose branches, validate-jwt claims), more than "
                f"{limits.max_conditions:,} (handshake_limits.max_conditions): each is tested against what the "
                "client sends, on the event loop every connection of the worker shares; one in: [...] tests many values"
            )
    return problems


def _per_api(config: GatewayConfig) -> list[tuple[str, int, int]]:
    """Each API's name, and the pattern weight and conditions its handshake may run: its policies', the
    global ones' and its products' (every product that lists it: without a key every open one's run), less
    those it skips."""
    inherited = _weighed(config.policies)
    products = [(product.apis, _weighed(product.policies)) for product in config.products]
    totals = []
    for api in config.apis:
        skipped = set(api.skip_policies)
        scopes = [inherited, *(weights for apis, weights in products if api.name in apis)]
        kept = [*_weighed(api.policies), *(w for weights in scopes for w in weights if w[0] not in skipped)]
        totals.append((api.name, sum(w[1] for w in kept), sum(w[2] for w in kept)))
    return totals


def _weighed(entries: Sequence[Any]) -> list[tuple[str | None, int, int]]:
    """Each entry's run name (what ``skip_policies`` matches), the weight of the patterns in it and the
    number of conditions in it."""
    return [(run_name(entry), *_weight(entry)) for entry in entries]


def _weight(entry: Any) -> tuple[int, int]:
    total = conditions = 0
    pending = [entry]
    while pending:
        value = pending.pop()
        if isinstance(value, Mapping):
            if isinstance(value.get("ref"), str) or isinstance(value.get("claim"), str):
                conditions += 1  # a choose condition, a validate-jwt claim check
            if isinstance(value.get("matches"), str):  # a condition, a validate-jwt claim check
                total += regex_weight(value["matches"])
            header_check = value.get("check-header")
            if isinstance(header_check, Mapping) and isinstance(header_check.get("pattern"), str):
                total += regex_weight(header_check["pattern"], ignore_case=header_check.get("ignore_case") is True)
            pending += [v for v in value.values() if isinstance(v, Mapping | list)]
        elif isinstance(value, list):
            pending += [v for v in value if isinstance(v, Mapping | list)]
    return total, conditions


def run_name(entry: Any) -> str | None:
    """The name ``skip_policies`` matches an entry by: its settings' ``name``, else its type."""
    if not isinstance(entry, Mapping) or len(entry) != 1:
        return None
    type_name, settings = next(iter(entry.items()))
    name = settings.get("name") if isinstance(settings, Mapping) else None
    return str(name or type_name)


__all__ = ["regex_budget_problems", "run_name"]
