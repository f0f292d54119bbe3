"""Rules that span fields of a validated configuration (:func:`cross_check`), what is valid but
probably not meant (:func:`config_warnings`), and the rules of an upstream URL (:func:`url_problem`),
which the configured URLs and every URL built for a handshake (``upstream/checks.py``) both follow.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from ..bounded import split_url
from ..forwarded import UNIX_SOCKET_PEER, parse_network
from ..redact import printable
from ..routing import OverlapIndex, PathTemplate, PathTemplateError, decode_segment, param_problem
from ..wire_numbers import parse_port
from .apis import ApiConfig
from .gateway import GatewayConfig
from .keepalive_warnings import keepalive_warnings
from .picked_hosts import NOTHING_PICKED, describe, picked_in_url
from .regex_budget import regex_budget_problems, run_name
from .upstream_networks import names_local

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def cross_check(config: GatewayConfig) -> list[str]:
    """Rules that span fields: unique names, valid and non-overlapping paths, known placeholders, the
    regular expressions one API's handshake may run (:func:`.regex_budget.regex_budget_problems`).

    Policy settings are the policies' to check (``check_policies`` of :func:`.parsing.parse_config`).
    """
    problems: list[str] = []
    seen_names: dict[str, int] = {}
    paths: OverlapIndex[int] = OverlapIndex()
    for i, api in enumerate(config.apis):
        if api.name in seen_names:
            problems.append(f"apis[{i}].name: duplicate API name '{api.name}' (also apis[{seen_names[api.name]}])")
        seen_names.setdefault(api.name, i)
        try:
            template = PathTemplate(api.path)
        except PathTemplateError as exc:
            problems.append(f"apis[{i}].path: {exc}")
            continue
        if (problem := api_path_problem(template)) is not None:
            problems.append(f"apis[{i}].path: {problem}")
            continue
        # Indexed by segment, not compared pairwise: 1,000 templated paths took 500,000 comparisons
        # (1.7 s), on every change the management API made.
        for j in sorted(paths.overlapping(template)):
            problems.append(f"apis[{i}].path: '{api.path}' overlaps apis[{j}].path '{config.apis[j].path}'")
        paths.add(template, i)
        for k, upstream in enumerate(api.upstreams):
            for field, value in (("url", upstream.url), ("path", upstream.path or "")):
                unknown = sorted(set(_PLACEHOLDER.findall(value)) - set(template.params))
                if unknown:
                    problems.append(
                        f"apis[{i}].upstreams[{k}].{field}: placeholder(s) {', '.join(unknown)} "
                        f"not defined by path '{api.path}'"
                    )
            problems += _upstream_url_problems(f"apis[{i}].upstreams[{k}]", upstream.kind, upstream.url, upstream.path)
    return problems + _redirected_in_process(config) + _loop_guard_problems(config) + regex_budget_problems(config)


_HEADER_EDITS = ("set-header", "remove-header")


def _loop_guard_problems(config: GatewayConfig) -> list[str]:
    """A ``set-header`` or ``remove-header`` of ``Via``, wherever it runs (``choose`` branches too).

    The gateway's own ``Via`` entry is how it counts its hops (``handshake/forwarding_loop.py``), and
    policies edit the upstream request after it is added: an API proxied to itself with ``remove-header:
    Via`` (or ``set-header`` over it) turned one client handshake into 9,955 nested ones in 8 s, until
    the worker's 20,000 file descriptors ran out, for every API on it. Policies in code are not seen.
    """
    scopes = [("policies", config.policies)]
    scopes += [(f"products[{j}].policies", product.policies) for j, product in enumerate(config.products)]
    scopes += [(f"apis[{i}].policies", api.policies) for i, api in enumerate(config.apis)]
    return [
        f"{where}: {kind} of Via: the gateway's own Via entry is how it detects a forwarding loop, and no policy "
        "may change or remove it (send what you meant in a header of your own)"
        for field, entries in scopes
        for where, kind in _via_edits(field, entries)
    ]


def _via_edits(field: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _via_edits(f"{field}[{index}]", item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            settings = item if isinstance(item, Mapping) else {}
            header = settings.get("header")
            if key in _HEADER_EDITS and isinstance(header, str) and header.strip().lower() == "via":
                yield f"{field}.{key}.header", key
            elif isinstance(item, Mapping | list):
                yield from _via_edits(f"{field}.{key}", item)


def api_path_problem(template: PathTemplate) -> str | None:
    """Why an API's path no client reaches as written, or None.

    A request's path is matched segment by segment, each decoded once (``routing.split_path``), so a
    literal segment is the decoded text: ``/ws/caf%C3%A9`` was reached only by ``/ws/caf%25C3%25A9``,
    ``/ws/chat?v=1`` only by ``/ws/chat%3Fv=1``, and ``/ws/../x`` by no browser or proxy (they resolve
    the dot segment), while the gateway refused every path that resolves to it as a disguise of it.
    Each was valid and served nothing. A literal is held to a parameter's rules besides.
    """
    shown = printable(template.pattern, quote=False)
    for segment in template.segments:
        if segment is None:
            continue
        for mark, meaning in _NOT_IN_PATH:
            if mark in segment:
                return f"'{shown}' {meaning}"
        if (problem := param_problem(segment)) is not None:
            return f"'{shown}' has a segment that {problem}: clients and proxies do not send it as written"
    return None


_NOT_IN_PATH = (
    ("%", "holds '%': a path is written decoded (/ws/café, not /ws/caf%C3%A9); a client's %-escapes are decoded"),
    ("?", "holds '?', which starts a client's query: a path cannot match one"),
    ("#", "holds '#', which starts a fragment no client sends"),
)


MANY_HOPS = 8
"""A ``max_gateway_hops`` above it is warned about: at 64, one looping client handshake made 65."""


LONG_STORE_WAIT = 5.0
"""A Redis store's ``timeout`` above it is warned about: a message waits that long on a hung Redis."""
MANY_KEYS = 1_000_000
"""A memory store's ``max_keys`` above it is warned about: a key held about 1 KB."""


def config_warnings(config: GatewayConfig) -> list[str]:
    """What is valid but probably not meant: no API at all; passthrough asked for where it cannot be; a
    keepalive that costs CPU or drops healthy connections (:mod:`.keepalive_warnings`); a ``wss://``
    upstream whose certificate is not verified (``verify_tls: false``); a trusted proxy
    network so wide that clients on the internet name their own address; a ``set-backend-service`` host a
    handshake value picks whole, or a port it picks on the gateway's own host (:func:`_picked_host_warnings`);
    a ``max_gateway_hops`` that lets
    a forwarding loop multiply each handshake by many (:data:`MANY_HOPS`); a memory store allowed more
    keys per limit than memory holds (:data:`MANY_KEYS`); a Redis store waited on for long
    (:data:`LONG_STORE_WAIT`)."""
    hops = config.handshake_limits.max_gateway_hops
    broad = [
        f"handshake_limits.max_gateway_hops: {hops} lets a forwarding loop (an upstream URL leading back to this "
        f"gateway) make {hops + 1} nested handshakes, each an upstream connection and its log lines, of every "
        f"client handshake before its 508 (6 at the default 4); a chain of gateways is a few: {MANY_HOPS} at most"
    ] if hops > MANY_HOPS else []  # fmt: skip
    store = config.store
    if store.type == "redis" and store.timeout > LONG_STORE_WAIT:
        broad.append(
            f"store.timeout: {store.timeout:g} s is how long each message of a keyed rate-limit-messages waits, "
            "without a log line, on a Redis that hangs (at 300 s a 12 s pause held messages 11.8 s; at the default "
            "0.5 s they went on within a second, unchecked, and the log said so; handshakes are bounded by "
            f"handshake_limits.policy_timeout); {LONG_STORE_WAIT:g} s at most"
        )
    if store.type == "memory" and store.max_keys > MANY_KEYS:
        broad.append(
            f"store.max_keys: {store.max_keys} lets each limit a client can fill hold that many keys in this process, "
            f"about 1 KB each (a rate window's with one handshake): {store.max_keys // 1000:,} MB per limit before "
            f"it refuses new ones; {MANY_KEYS:,} at most, or a Redis store bounded by its maxmemory"
        )
    broad += [
        f"trusted_proxies: {network} trusts more addresses than any proxy fleet has (a /{net.prefixlen}): "
        "a client there chooses the address ip-filter, limits and the log see, by sending "
        f"{config.forwarded_header}; list the proxies' own addresses"
        for network in config.trusted_proxies
        if network != UNIX_SOCKET_PEER and (net := parse_network(network)).prefixlen < (8 if net.version == 4 else 16)
    ]
    if config.telemetry.trust_client_trace == "trusted_proxies" and not config.trusted_proxies:
        broad.append(
            "telemetry.trust_client_trace: trusted_proxies continues the trace of a peer in trusted_proxies, "
            "and none is listed: no client's trace is continued (as false)"
        )
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
        *(warning for api in config.apis for warning in keepalive_warnings(api)),
        *(
            # Valid (a backend with a self-signed certificate), but the one switch that lets anyone on the
            # path read and answer the connection: said at every start-up, as nginx and Envoy never say.
            f"API {api.name}: upstreams[{j}].verify_tls: false: the certificate of {upstream.label} is not "
            "verified: anyone on the path to it can read and answer its connections, the headers the policies "
            "set (a credential) too; give its CA in ca_bundle instead"
            for api in config.apis
            for j, upstream in enumerate(api.upstreams)
            if upstream.kind == "wss" and not upstream.verify_tls
        ),
        *_picked_host_warnings(config),
        *broad,
    ]


# The rules of an upstream URL. The gateway sends the URL it builds for a handshake only when it
# keeps them (upstream/checks.py, a 400 otherwise: a client's values are in it); a URL the operator
# wrote must keep them at start-up, or every handshake would be refused (or fail) for it.

UrlProblem = Literal["invalid", "fragment", "not_a_path", "scheme", "port", "address", "host", "numeric", "path",
                     "segment", "query", "control"]  # fmt: skip
"""Which rule of :func:`url_problem` a URL breaks."""

# Path and query: visible ASCII only (what an HTTP request line can carry), every '%' starting a
# two-digit escape. Stricter RFC 3986 rules would turn configured oddities into client errors.
_PATH = re.compile(r"(?:/(?:[!-$&-~]|%[0-9A-Fa-f]{2})*+)?")  # possessive: "/" is in the class (no 2^n splits)
_QUERY = re.compile(r"(?:[!-$&-~]|%[0-9A-Fa-f]{2})*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")  # "_": Docker Compose service names (my_service)
# A last label that is a number (decimal, or 0x hex): the host is an IPv4 address to the system resolver
# (inet_aton: 2130706433, 0x7f000001, 127.1, 0177.0.0.1 are all 127.0.0.1) and to WHATWG URL parsers, but
# a name to every check that compares hosts as written (the management API's hosts, TLS's own host).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
# What urlsplit drops without a word (tab, CR, LF anywhere; C0 controls and spaces at either end):
# the URL checked would not be the URL written.
_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")


def url_problem(url: str, *, in_process: bool = False) -> UrlProblem | None:
    """The first rule ``url`` breaks, or None when it can be sent as it is.

    ``url`` is ``ws[s]://host[:port]/path?query``, or ``/path?query`` with ``in_process``: the host a
    host name (letters, digits and ``-`` in dot-separated labels; one whose last label is a number is an
    IPv4 address ``a.b.c.d``) or a bracketed IPv6 address, the port 1 to 65535, the path and query
    visible ASCII with ``%`` only before two hex digits and no dot segment or encoded separator in the
    path, no fragment, no control character or space.
    """
    try:
        parts = split_url(url)
    except ValueError:  # e.g. an unbalanced or invalid [IPv6] literal
        return "invalid"
    if parts.fragment or "#" in url:
        return "fragment"
    if in_process:
        if parts.scheme or parts.netloc:
            return "not_a_path"
    elif (problem := _authority_problem(parts.scheme, parts.netloc)) is not None:
        return problem
    if not _PATH.fullmatch(parts.path) or (parts.path and not parts.path.startswith("/")):
        return "path"
    for segment in parts.path.split("/")[1:]:
        if segment and param_problem(decode_segment(segment.encode("ascii"))) is not None:
            return "segment"
    if not _QUERY.fullmatch(parts.query):
        return "query"
    return "control" if _UNSENDABLE.search(url) else None


def _authority_problem(scheme: str, netloc: str) -> UrlProblem | None:
    if scheme not in ("ws", "wss"):
        return "scheme"
    host, _, port = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if not host:
        host, port = netloc, ""
    if port and not parse_port(port):  # 0 too; int() raised past 4300 digits
        return "port"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "address"
        return None
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "host"
    if _NUMERIC_LABEL.fullmatch(labels[-1]) and not _is_ipv4(host):
        return "numeric"
    return None


def _is_ipv4(host: str) -> bool:
    """Whether ``host`` is an IPv4 address as written: four decimal parts, no leading zero."""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


_CONFIGURED: dict[UrlProblem, str] = {
    "invalid": "is not a valid URL (an unbalanced '[' or an invalid IPv6 literal)",
    "fragment": "must not have a fragment (#...): it is never sent",
    "not_a_path": "is not a path (/...)",
    "scheme": "is not a ws:// or wss:// URL",
    "port": "has a port that is not a number from 1 to 65535",
    "address": "has a host in brackets that is not an IPv6 address",
    "host": "has a host that is not a host name (letters, digits, '-', '_' in dot-separated labels) or an IP",
    "numeric": "has a host that ends in a number but is not an IPv4 address written a.b.c.d (the resolver reads "
    "2130706433, 0x7f000001, 127.1 or 0177.0.0.1 as 127.0.0.1): write the address, or a name",
    "path": "has a path with characters a URL cannot carry (it takes visible ASCII, '%' only before two hex digits)",
    "segment": "has a path with a dot segment (. or ..), an encoded separator (%2F, %5C) or an encoded control "
    "character",
    "query": "has a query string with characters a URL cannot carry (it takes visible ASCII, '%' only before two "
    "hex digits)",
    "control": "has a space or a control character (CR, LF, tab, ...): a URL cannot carry one",
}


def configured_url_problem(
    url: str, *, in_process: bool = False, render: Callable[[str], str] | None = None
) -> str | None:
    """What is wrong with a URL the operator wrote (as a message to follow its field path), or None.

    ``render(value)`` is the URL as a template renders it with every placeholder's value ``value``
    (default: the ``{name}`` path parameters replaced). A URL is refused only when no value could
    make it valid: it is tried with a short value and with none (placeholders render values
    percent-encoded: what is wrong is in the text written around them).
    """
    if render is None:
        render = functools.partial(_fill_path_params, url)
    # "41" fills a port, "a41" a whole host (41 alone is a number: not a host)
    found = [url_problem(render(sample), in_process=in_process) for sample in ("41", "", "a41")]
    if None in found:
        return None
    if _UNSENDABLE.search(render("41")):  # said first: urlsplit drops CR and LF, and blames what is left
        return _CONFIGURED["control"]
    return _CONFIGURED[found[0] or "invalid"]


def _fill_path_params(url: str, value: str) -> str:
    return _PLACEHOLDER.sub(lambda _: value, url)


def _upstream_url_problems(at: str, kind: str, url: str, path: str | None) -> list[str]:
    problems = []
    if kind != "asgi" and (problem := _configured_url_problem(url, False)):
        problems.append(f"{at}.url: {problem}")
    if path is not None and (problem := _configured_url_problem(path, True)):
        problems.append(f"{at}.path: {problem}")
    return problems


@functools.lru_cache(maxsize=4096)
def _configured_url_problem(url: str, in_process: bool) -> str | None:
    """:func:`configured_url_problem` of a configured URL, remembered: a change checks every API's URLs again."""
    return configured_url_problem(url, in_process=in_process)


# set-backend-service for an API with an in-process upstream: refused with 500 at every handshake
# the policy runs for. The configuration layer knows no policy type: this reads the entries as written.
_REDIRECT = "set-backend-service"
_CHOOSE = "choose"


def _redirected_in_process(config: GatewayConfig) -> list[str]:
    """set-backend-service entries that can run for an API with an in-process upstream: the API's own,
    the global ones and those of the products naming the API (unless the API skips them), and the
    same inside their ``choose`` branches."""
    problems: list[str] = []
    for i, api in enumerate(config.apis):
        in_process = next((k for k, u in enumerate(api.upstreams) if u.kind == "asgi"), None)
        if in_process is None:
            continue
        why = (
            f"runs for API '{api.name}', whose upstream apis[{i}].upstreams[{in_process}] "
            f"({api.upstreams[in_process].label}) is in-process: set-backend-service redirects ws:// and wss:// "
            "upstreams only, and every handshake it ran for would be refused with 500"
        )
        for where, inherited, _ in _redirect_entries(config, i, api):
            hint = f" (or add '{inherited}' to apis[{i}].skip_policies)" if inherited is not None else ""
            problems.append(f"{where}: {why}{hint}")
    return problems


def _redirect_entries(config: GatewayConfig, i: int, api: ApiConfig) -> Iterator[tuple[str, str | None, Any]]:
    """The set-backend-service entries that can run for ``apis[i]`` (its own, the global ones and those
    of the products naming it, unless it skips them; inside ``choose`` branches too): where each is,
    the run name of the inherited entry holding it (None: the API's own), and its settings."""
    skipped = set(api.skip_policies)
    scopes: list[tuple[str, Sequence[Any], bool]] = [
        ("policies", config.policies, True),
        *((f"products[{p}].policies", product.policies, True)
          for p, product in enumerate(config.products) if api.name in product.apis),
        (f"apis[{i}].policies", api.policies, False),
    ]  # fmt: skip
    for at, entries, inherited in scopes:
        for j, entry in enumerate(entries):
            if inherited and run_name(entry) in skipped:
                continue
            for where, settings in _redirects(entry, f"{at}[{j}]", api.name):
                yield where, run_name(entry) if inherited else None, settings


def _picked_host_warnings(config: GatewayConfig) -> list[str]:
    """A ``set-backend-service`` whose host or port a handshake value picks (:mod:`.picked_hosts`), where
    that reaches more than the operator meant:

    * the whole host (``{jwt.host}``, ``{jwt.host}.me``, ``{var.x}.co.uk``), with no ``upstream_networks.allow``
      (the file's or the API's): the value's source sends the API's connections to any address not denied;
    * a port, on a host the operator wrote that is the gateway's own (``ws://127.0.0.1:{jwt.port}``), with no
      ``allow`` entry naming it: every such handshake is refused (502), and naming it opens every port there.
    """
    warnings = []
    for i, api in enumerate(config.apis):
        allows = [*config.upstream_networks.allow, *api.upstream_networks.allow]
        for where, _, settings in _redirect_entries(config, i, api):
            base_url = settings.get("base_url") if isinstance(settings, Mapping) else None
            picked = picked_in_url(base_url) if isinstance(base_url, str) else NOTHING_PICKED
            if picked.whole_host and not allows:
                what, who = describe(tuple(dict.fromkeys(ref.partition(".")[0] for ref in picked.host)))
                values = ", ".join("{" + ref + "}" for ref in picked.host)
                warnings.append(
                    f"API {api.name}: {where}.base_url takes the whole upstream host from {what} ({values}), "
                    f"and no upstream_networks.allow is set: {who} can send this API's connections to any "
                    "address not denied (the gateway's private networks; its own host only where allow names "
                    f"it); list its backends' networks in apis[{i}].upstream_networks.allow"
                )
            elif picked.port and not picked.host and picked.local and not any(map(names_local, allows)):
                what, who = describe(tuple(dict.fromkeys(ref.partition(".")[0] for ref in picked.port)))
                warnings.append(
                    f"API {api.name}: {where}.base_url connects to the gateway's own host on a port {what} picks: "
                    "refused (502) unless upstream_networks.allow names that address, and naming it lets "
                    f"{who} reach every port there (its admin port, a Redis, a sidecar)"
                )
    return warnings


def _redirects(entry: Any, at: str, api: str) -> Iterator[tuple[str, Any]]:
    """Where set-backend-service is, in ``entry`` and in the ``choose`` branches that can run for ``api``
    (a branch whose conditions on ``api.name`` exclude it never does: a global ``choose`` redirecting one
    network API is not refused for an in-process one beside it)."""
    if not isinstance(entry, Mapping) or len(entry) != 1:
        return
    type_name, settings = next(iter(entry.items()))
    if type_name == _REDIRECT:
        yield f"{at}.{_REDIRECT}", settings
    elif type_name == _CHOOSE and isinstance(settings, Mapping):
        branches = settings.get("when")
        for b, branch in enumerate(branches if isinstance(branches, list) else []):
            if not isinstance(branch, Mapping) or _excludes(branch.get("if"), api):
                continue
            nested = branch.get("policies")
            for n, inner in enumerate(nested if isinstance(nested, list) else []):
                yield from _redirects(inner, f"{at}.{_CHOOSE}.when[{b}].policies[{n}]", api)
        otherwise = settings.get("otherwise")
        for n, inner in enumerate(otherwise if isinstance(otherwise, list) else []):
            yield from _redirects(inner, f"{at}.{_CHOOSE}.otherwise[{n}]", api)


def _excludes(conditions: Any, api: str) -> bool:
    """Whether a branch's conditions (all must hold) exclude ``api`` whatever the handshake: one tests
    ``api.name`` with ``equals``, ``not_equals`` or ``in`` and fails for this name."""
    for condition in conditions if isinstance(conditions, list) else [conditions]:
        if not isinstance(condition, Mapping) or condition.get("ref") != "api.name":
            continue
        equals, not_equals, one_of = condition.get("equals"), condition.get("not_equals"), condition.get("in")
        if (
            (isinstance(equals, str) and equals != api)
            or (isinstance(not_equals, str) and not_equals == api)
            or (isinstance(one_of, list) and api not in one_of)
        ):
            return True
    return False


__all__ = [
    "LONG_STORE_WAIT",
    "MANY_HOPS",
    "MANY_KEYS",
    "UrlProblem",
    "config_warnings",
    "configured_url_problem",
    "cross_check",
    "url_problem",
]
