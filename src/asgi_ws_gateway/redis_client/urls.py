"""Redis URLs: one parser for every Redis user (limits store, management store, bus), and for the
configuration checks, which import it without redis-py (see :mod:`asgi_ws_gateway.redis_client`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

_PLAIN = ("redis", "rediss", "unix")
_SCHEMES = (*_PLAIN, "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")
_HOST = re.compile(r"[A-Za-z0-9_.-]+")
_DIGITS = re.compile(r"[0-9]+")  # not str.isdigit: it takes "²" (int() refuses) and "٣" (int() reads 3)
# Query options of a single server's URL: the ones redis-py parses into a number, a flag or a list
# (its parser checks the value), and the ones it passes on as strings. Whether this scheme's
# connection takes them is redis-py's to say (see _check_single). Any other name would reach its
# connection class at the first command, as a TypeError: no Redis call catches that.
_STRING_OPTIONS = frozenset({
    "client_name", "lib_name", "lib_version", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs",
    "ssl_ca_path", "ssl_ciphers", "ssl_password", "username", "password",
})  # fmt: skip
# The numbers among them that redis-py uses as they are, and what each may be. NaN as socket_timeout
# failed every handshake of a limited API with a 500 (a traceback each); 0 or a negative one, NaN as
# socket_connect_timeout or a negative health_check_interval failed every Redis call (each limit
# unchecked, fail-open, for good); a max_connections under the calls in flight (store.max_connections
# may be 100) had redis-py refuse those past it, each an outage. ``check`` called them all valid.
# socket_read_size is read by redis-py's hiredis parser only (redis[hiredis] installed; without it, by
# nothing): 0 failed every call ("Connection closed by server") and -1 every call after socket_timeout
# (a read to the end of the stream), each limit unchecked; 1 cost 6.7 ms of CPU per 10 kB reply
# (16 bytes: 0.5 ms, 4 KiB and redis-py's 64 KiB: 0.07 ms), a management state document a read a byte.
_NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "socket_timeout": (0.01, 300),
    "socket_connect_timeout": (0.01, 300),
    "health_check_interval": (0, 86_400),
    "max_connections": (100, 1_000_000),
    "socket_read_size": (1_024, 16_777_216),
}

MAX_DB = 2**31 - 2
"""The highest database index a Redis server can have: its ``databases`` setting is at most INT_MAX, the
indexes below it. A larger one (``/99999`` already, against the default 16) is refused by every server:
the check refuses this one's, and ``run`` asks the server about the rest (:func:`..clients.database_refusal`)."""


def _database(text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"the database must be a number, not {text!r}")
    db = int(text)
    if db > MAX_DB:
        raise ValueError(
            f"the database must be a number from 0 to {MAX_DB:,} (the highest index a Redis server can have)"
        )
    return db


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL. ``kind`` is ``single``, ``cluster`` or ``sentinel``."""

    kind: Literal["single", "cluster", "sentinel"]
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """Parse one of the accepted forms; ``ValueError`` says what is wrong (never echoing a password)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(f"a Redis URL starts with one of {', '.join(s + '://' for s in _SCHEMES)}")
    if scheme in _PLAIN:
        return _single(scheme, url)
    kind: Literal["cluster", "sentinel"] = "cluster" if scheme.endswith("cluster") else "sentinel"
    credentials, at, location = rest.rpartition("@")
    hosts, _, path = location.partition("/")
    if "?" in location or "#" in location:
        raise ValueError(f"{scheme}:// URLs take no query string")
    nodes = tuple(_node(item) for item in hosts.split(","))
    username, _, password = credentials.partition(":") if at else ("", "", "")
    target = RedisTarget(
        kind,
        url,
        nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=scheme.startswith("rediss"),
    )
    parts = [p for p in path.split("/") if p]
    if kind == "cluster":
        if parts:
            raise ValueError("a redis+cluster:// URL has no path (a cluster has only database 0)")
        return target
    if not parts or len(parts) > 2:
        raise ValueError("a redis+sentinel:// URL names the service: redis+sentinel://host:port,.../service[/db]")
    return RedisTarget(
        kind,
        url,
        nodes,
        service=parts[0],
        db=_database(parts[1]) if len(parts) == 2 else 0,
        username=target.username,
        password=target.password,
        tls=target.tls,
    )


def _node(item: str) -> tuple[str, int]:
    text, colon, port = item.strip().rpartition(":")
    host = _host(text)
    if not colon or host is None or not _DIGITS.fullmatch(port) or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, not {item.strip()!r}")
    return host, int(port)


def _host(text: str) -> str | None:
    """A host name, an IPv4 address or a bracketed IPv6 address (brackets dropped); None if none of them."""
    if text.startswith("[") and text.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            return None
    return text if _HOST.fullmatch(text) else None


def _single(scheme: str, url: str) -> RedisTarget:
    """A redis://, rediss:// or unix:// URL, checked as redis-py will read it (``redis.connection.parse_url``).

    redis-py reads it only as the first client is built, while the gateway starts serving, and lets
    much through: ``/abc`` as database 0, ``/1/2`` as database 12, any query option (a TypeError at
    the first command). The messages quote the host, port and path, never the user info.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced or invalid [IPv6] host
        raise ValueError("expected host:port, with an IPv6 address in brackets: [::1]:6379") from None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if "@" in url[len(scheme) + 3 + len(parts.netloc) :]:
        # urlsplit ends the user info at the first "/", "?" or "#": the password had one unescaped.
        raise ValueError("the user info holds a '/', '?' or '#': percent-encode it (%2F, %3F, %23)")
    if parts.fragment:
        raise ValueError(f"{scheme}:// URLs take no fragment (#...)")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    db = 0
    nodes: tuple[tuple[str, int], ...] = ()
    if scheme == "unix":
        if hostport or not parts.path.startswith("/") or parts.path == "/":
            raise ValueError("a unix:// URL names the socket's absolute path: unix:///path/to/redis.sock")
    else:
        host, colon, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
        if not colon:
            host, port = hostport, "6379"
        name = _host(unquote(host))
        if name is None or not _DIGITS.fullmatch(port) or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, not {hostport!r}")
        nodes = ((name, int(port)),)
        path = unquote(parts.path)
        if path not in ("", "/"):
            db = _database(path[1:])
    options = parse_qsl(parts.query, keep_blank_values=True)
    for option, value in options:
        parser = _query_parsers().get(option)
        if parser is None and option not in _STRING_OPTIONS:
            raise ValueError(f"unknown query option {option!r}")
        if parser is not None and value:  # redis-py skips an empty value
            try:
                parsed = parser(value)
            except (TypeError, ValueError):
                raise ValueError(f"invalid value for the query option {option!r}") from None
            if option == "db":
                if not isinstance(parsed, int) or parsed < 0:
                    raise ValueError(f"the database must be a number, not {value!r}")
                db = _database(str(parsed))
            low, high = _NUMBER_RANGES.get(option, (None, None))
            if low is not None and high is not None and not low <= parsed <= high:  # type: ignore[operator]
                raise ValueError(f"the query option {option!r} must be a number from {low:,} to {high:,}")
    if options:
        _check_single(scheme, url, [option for option, _ in options])
    return RedisTarget(
        "single",
        url,
        nodes,
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=scheme == "rediss",
    )


def _query_parsers() -> Mapping[str, Callable[..., object]]:
    """redis-py's readers of a URL's query options: redis itself is imported for a URL with a query only."""
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

    return URL_QUERY_ARGUMENT_PARSERS


def _check_single(scheme: str, url: str, options: list[str]) -> None:
    """Whether this scheme's redis-py connection takes ``options`` (built, not connected: no I/O)."""
    from redis.asyncio import ConnectionPool

    try:
        ConnectionPool.from_url(url).make_connection()  # type: ignore[no-untyped-call, unused-ignore]
    except TypeError as exc:  # a keyword the connection class does not take
        refused = [option for option in options if f"'{option}'" in str(exc)]
        raise ValueError(
            f"a {scheme}:// URL takes no query option {', '.join(map(repr, refused or options))}"
        ) from None
    except Exception:  # e.g. an ssl_cert_reqs redis-py does not know; its message may quote a value
        raise ValueError(f"redis-py refused the query options {', '.join(map(repr, options))}") from None


__all__ = ["MAX_DB", "RedisTarget", "parse_redis_url"]
