"""Network policies: ``ip-filter`` (CIDR allow/deny lists) and ``check-origin`` (cross-site hijacking).

The address ``ip-filter`` tests is ``context.request.client.ip``: the TCP peer, or the address a
trusted proxy reported (top-level ``trusted_proxies``), never a header an untrusted client sent. An
IPv6 address that carries an IPv4 client (NAT64's ``64:ff9b::/96``, ``::ffff:0:a.b.c.d``, ``::a.b.c.d``,
6to4, Teredo: :func:`~asgi_ws_gateway.forwarded.embedded_ipv4`) is matched as itself and as that
client, as the limits count it: ``deny: [203.0.113.0/24]`` refused 203.0.113.7 but admitted it
translated to ``64:ff9b::203.0.113.7``. A connection without an address (a Unix socket's, no trusted
proxy naming the client) is refused as ``no_client_address``, with a WARNING saying how to fix it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator

from ..config.public_suffixes import is_public_suffix
from ..forwarded import IPAddress, Networks, embedded_ipv4, parse_ip, parse_network, translated_ipv4s
from ..handshake import addressless
from ..handshake.context import HandshakeContext
from .base import PolicyEnv, PolicySettings, deny, register_policy


class IpFilterSettings(PolicySettings):
    """``ip-filter``: a client in ``deny`` is refused; with ``allow`` set, only clients in it pass."""

    allow: list[str] = Field(default_factory=list, description="Addresses or CIDR networks (IPv4, IPv6).")
    deny: list[str] = Field(default_factory=list, description="Addresses or CIDR networks; checked first.")

    @field_validator("allow", "deny")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                parse_network(value)
            except ValueError:
                raise ValueError(f"'{value}' is not an IP address or network") from None
        return values


@register_policy("ip-filter")
class IpFilter:
    Settings = IpFilterSettings

    def __init__(self, settings: IpFilterSettings, env: PolicyEnv) -> None:
        self.name = "ip-filter"
        self.allow = Networks(settings.allow)
        self.deny = Networks(settings.deny)
        self.allow_all = not settings.allow

    async def apply(self, context: HandshakeContext) -> None:
        if addressless.missing(context.request):
            raise deny(403, "the client address is unknown: the connection has none and no trusted proxy named it",
                       reason=addressless.NO_CLIENT_ADDRESS)  # fmt: skip
        if not self.admits(parse_ip(context.request.client.ip)):
            raise deny(403, "the client address is not allowed", reason="ip_forbidden")

    def admits(self, address: IPAddress | None) -> bool:
        """Whether ``address`` passes: denied when it, or an IPv4 client it may stand for
        (:func:`~asgi_ws_gateway.forwarded.translated_ipv4s`), is in ``deny``; with ``allow`` set, admitted
        only when it, or the IPv4 client it carries (:func:`~asgi_ws_gateway.forwarded.embedded_ipv4`), is
        in ``allow``. ``None`` (no address: ``unknown``) never passes."""
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address):
            candidates: list[IPAddress] = [address, *translated_ipv4s(address)]
            if any(candidate in self.deny for candidate in candidates):
                return False
            carried = embedded_ipv4(address)
            return self.allow_all or address in self.allow or (carried is not None and carried in self.allow)
        return address not in self.deny and (self.allow_all or address in self.allow)


def _origin_entry(value: str) -> str:
    """One ``allowed`` entry, checked on its own: every bad entry is a problem, by its index."""
    compile_origin(value)
    return value


class CheckOriginSettings(PolicySettings):
    """``check-origin``: the browser's ``Origin`` must be on the list (403 otherwise)."""

    allowed: list[Annotated[str, AfterValidator(_origin_entry)]] = Field(
        min_length=1,
        description="Origins like https://app.example.com; '*.' matches subdomains (https://*.example.com); "
        "':*' any port (http://localhost:*).",
    )
    allow_missing: bool = Field(
        default=False, description="Admit requests without Origin (non-browser clients; browsers always send it)."
    )


MAX_ORIGIN_LENGTH = len("https://") + 254 + len(":65535")
"""Characters of the longest origin (RFC 6454): a scheme, a host name of 253 (RFC 1035) and a trailing
dot, a port; an IPv6 literal is shorter. A longer ``Origin`` matches no ``check-origin`` pattern."""


def compile_origin(origin: str) -> re.Pattern[str]:
    """A pattern for one allowed origin: ``scheme://[*.]host[:port|:*]``, as browsers send it.

    Raises:
        ValueError: for what is not an origin, or would admit more than meant or match nothing: a
            wildcard over a top-level domain or a known public suffix (``*.com``, ``*.co.uk``: every site
            under it), user info, a query, a fragment or a path (an ``Origin`` never has them), a port
            that is not a number from 1 to 65535 or ``*``, a host that is not a host name or an IP
            address, an IPv6 zone id, and a wildcard over an IP address.

    A host is matched in the form browsers send it (the WHATWG URL host serialisation): a Unicode
    name in its ``xn--`` form, an IPv6 address compressed (``[0:0:0:0:0:0:0:1]`` as ``[::1]``,
    ``[::ffff:127.0.0.1]`` as ``[::ffff:7f00:1]``), an IPv4 address as a dotted quad (``127.1``,
    ``0x7f.0.0.1`` and ``2130706433`` as ``127.0.0.1``), a name with a trailing dot as written
    (``app.example.com.``, which the browser keeps). An empty port (``https://host:``) is the
    default one.
    """
    text = origin.strip()
    try:
        parts = urlsplit(text.lower())
    except ValueError:  # an unclosed [ of an IPv6 address
        raise ValueError(f"'{origin}' is not an origin like https://app.example.com") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{origin}' is not an origin like https://app.example.com")
    if "@" in parts.netloc:
        raise ValueError(
            f"'{origin}': an origin has no user name or password (browsers never send one: it matches "
            "nothing); write scheme://host[:port]"
        )
    if "?" in text or "#" in text or parts.path not in ("", "/"):
        raise ValueError(
            f"'{origin}': an origin has no path, query or fragment (browsers send scheme://host[:port] "
            "only); write it without them"
        )
    host, port = _host_and_port(origin, parts.netloc)
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
        if not host or host == ".":
            raise ValueError(f"'{origin}': a wildcard needs the domain it covers, as in https://*.example.com")
    if "*" in host:
        raise ValueError(f"'{origin}': a wildcard may only start the host, as in https://*.example.com")
    if not host.startswith("["):
        host = _ascii_host(origin, host)
    if wildcard:
        if host.startswith("[") or _ipv4_host(origin, host) is not None:
            raise ValueError(f"'{origin}': a wildcard covers the subdomains of a name, not an IP address")
        _check_wildcard(origin, host.removesuffix("."))
    host_re = (r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\." if wildcard else "") + re.escape(host)
    default = {"http": "80", "https": "443"}[parts.scheme]
    if port == "*":
        port_re = r"(?::[0-9]+)?"
    elif port and port != default:
        port_re = ":" + port
    else:
        port_re = f"(?::{default})?"
    return re.compile(re.escape(parts.scheme) + "://" + host_re + port_re)


def _host_and_port(origin: str, netloc: str) -> tuple[str, str]:
    """``netloc``'s host and port (``""``: none; a number without leading zeros, or ``*``)."""
    if netloc.startswith("["):
        host, _, rest = netloc.partition("]")
        host = "[" + _ipv6_host(origin, host[1:]) + "]"
        if rest and not rest.startswith(":"):
            raise ValueError(f"'{origin}' is not an origin like https://app.example.com")
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = netloc.rpartition(":")
        host, port = (host, port_text) if colon else (netloc, None)
    if not port:  # none, or empty (https://host:): the default port, as the WHATWG URL parser reads it
        return host, ""
    if port == "*":
        return host, port
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"'{origin}': the port must be a number from 1 to 65535, or * for any")
    return host, str(int(port))


_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")
"""ß, final sigma, ZWNJ, ZWJ: IDNA 2003 (Python's codec) maps them away, browsers (UTS 46) keep them."""


def _ipv6_host(origin: str, text: str) -> str:
    """An IPv6 address (inside its brackets) as browsers serialise it: lower-case hexadecimal pieces,
    the first longest run of two or more zero pieces as ``::``, never a dotted IPv4 part
    (``::ffff:7f00:1``; Python 3.13's ``str`` writes ``::ffff:127.0.0.1``)."""
    if "%" in text:
        raise ValueError(
            f"'{origin}': an IPv6 zone id ('%...') is never in a browser's Origin (it matches nothing); "
            "write the address alone"
        )
    try:
        packed = ipaddress.IPv6Address(text).packed
    except ValueError:  # urlsplit checks only that it is some IP address
        raise ValueError(f"'{origin}': '[{text}]' is not an IPv6 address") from None
    pieces = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    start, length, i = 0, 0, 0
    while i < 8:
        end = i
        while end < 8 and pieces[end] == 0:
            end += 1
        if end - i > length:
            start, length = i, end - i
        i = max(end, i + 1)
    words = [f"{piece:x}" for piece in pieces]
    if length < 2:
        return ":".join(words)
    return ":".join(words[:start]) + "::" + ":".join(words[start + length :])


def _ipv4_host(origin: str, host: str) -> str | None:
    """``host`` as the dotted quad browsers write, when the WHATWG URL parser reads it as an IPv4
    address (its last label a number: ``127.1``, ``0x7f.0.0.1``, ``2130706433``, ``0177.0.0.1``);
    ``None`` for a name. One that is a number but no address makes the browser refuse the URL."""
    labels = host.split(".")
    if len(labels) > 1 and not labels[-1]:
        labels.pop()  # "127.0.0.1." is 127.0.0.1
    last = labels[-1]
    if not (last.isascii() and last.isdigit()) and _ipv4_number(last) is None:
        return None
    numbers = [_ipv4_number(label) for label in labels]
    if len(labels) > 4 or None in numbers:
        raise ValueError(f"'{origin}': '{host}' is neither a host name nor an IPv4 address")
    *first, final = [number for number in numbers if number is not None]
    if any(number > 255 for number in first) or final >= 256 ** (4 - len(first)):
        raise ValueError(f"'{origin}': '{host}' is not an IPv4 address (a part is too large)")
    value = final + sum(number << (8 * (3 - i)) for i, number in enumerate(first))
    return str(ipaddress.IPv4Address(value))


def _ipv4_number(text: str) -> int | None:
    """One part of an IPv4 host as WHATWG reads it: decimal, ``0x`` hexadecimal, ``0`` octal."""
    if not text or not text.isascii():
        return None
    base = 10
    if text[:2] in ("0x", "0X"):
        text, base = text[2:], 16
    elif len(text) > 1 and text[0] == "0":
        text, base = text[1:], 8
    if not text:
        return 0
    try:
        return int(text, base) if text.isalnum() else None
    except ValueError:
        return None


def _ascii_host(origin: str, host: str) -> str:
    """``host`` (a name or an IPv4 address) as a browser writes it in ``Origin``: a Unicode name in its
    ``xn--`` (IDNA) form, an IPv4 address as a dotted quad, a trailing dot kept."""
    address = _ipv4_host(origin, host) if host.isascii() else None
    if address is not None:
        return address
    dot = "." if host.endswith(".") and host != "." else ""
    host = host.removesuffix(dot)
    if not host.isascii():
        if _DEVIATIONS.intersection(host):
            raise ValueError(
                f"'{origin}': browsers differ from Python on the IDNA form of this host "
                "(ß, ς, zero-width joiners): write it as browsers send it, xn--..."
            )
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"'{origin}': '{host}' is not a valid internationalised host name") from None
    if not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise ValueError(
            f"'{origin}': '{host}{dot}' is not a host name (letters, digits and hyphens, in labels between dots)"
        )
    return host + dot


def _check_wildcard(origin: str, domain: str) -> None:
    """Refuse ``*.domain`` over a top-level domain or a known public suffix: every site under it."""
    if "." not in domain and domain not in SPECIAL_USE:
        raise ValueError(
            f"'{origin}': *.{domain} admits every site under the top-level domain .{domain}; "
            f"name your own domain, as in https://*.example.{domain}"
        )
    if "." in domain and is_public_suffix(domain):  # a single label: judged above
        raise ValueError(
            f"'{origin}': {domain} is a public suffix, under which anyone registers a site: "
            f"*.{domain} admits all of them; name your own domain, as in https://*.example.{domain}"
        )


SPECIAL_USE = frozenset({"localhost", "test", "invalid", "example", "local", "internal"})
"""Top-level names no one registers a site under: this machine's (``.localhost``), for testing and
examples (RFC 6761 ``.test``, ``.invalid``, ``.example``), a local network's (RFC 6762 ``.local``,
mDNS) and private networks' (ICANN's ``.internal``). ``*.test:*`` covers the operator's own sites;
``*.home.arpa`` (RFC 8375) has two labels and is not refused. Not ``.onion``: anyone has a site there."""


@register_policy("check-origin")
class CheckOrigin:
    Settings = CheckOriginSettings

    def __init__(self, settings: CheckOriginSettings, env: PolicyEnv) -> None:
        self.name = "check-origin"
        self.allow_missing = settings.allow_missing
        self.patterns = [compile_origin(origin) for origin in settings.allowed]

    async def apply(self, context: HandshakeContext) -> None:
        origin = context.request.header("origin")
        if origin is None:
            if not self.allow_missing:
                raise deny(403, "an Origin header is required", reason="origin_missing")
            return
        origin = origin.strip().lower()
        # Longer than any origin can be: matches no pattern, and is not read against each (a wildcard
        # pattern reads the whole value: an 8 KB Origin against 1,024 of them held the loop 106 ms).
        if len(origin) > MAX_ORIGIN_LENGTH or not any(pattern.fullmatch(origin) for pattern in self.patterns):
            raise deny(403, "the request's origin is not allowed", reason="origin_forbidden")


__all__ = ["MAX_ORIGIN_LENGTH", "SPECIAL_USE", "CheckOrigin", "IpFilter", "compile_origin"]
