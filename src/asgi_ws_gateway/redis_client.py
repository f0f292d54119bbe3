"""Redis URLs and clients: one parser for every Redis user (limits store, management store, bus).

Accepted forms (see docs/deployment.md)::

    redis://[user:password@]host:port/db        one server (rediss:// for TLS, unix:///path.sock)
    redis+cluster://[user:password@]host:port,host:port,...     Redis Cluster (any few nodes to start from)
    redis+sentinel://[user:password@]host:port,host:port,.../service[/db]   the master Sentinel names

``rediss+cluster://`` and ``rediss+sentinel://`` use TLS. The credentials are the data nodes'
(sentinels are reached without them). :func:`parse_redis_url` raises ``ValueError`` with a
message fit to follow a field path; :func:`connect` builds the matching ``redis.asyncio`` client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

AnyRedis = Redis | RedisCluster
"""What :func:`connect` returns: a plain (or Sentinel-backed) client, or a cluster client."""

REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError, AttributeError)
"""What a call raises when Redis is down, fails over or times out: catch it around Redis calls only.

``AttributeError``: after a connection error on a node, redis-py 8.1's cluster client disconnects
that node's idle connections while another task may be opening one of them (its writer becomes
``None`` mid-command): a failed call, not a bug of the caller."""

_PLAIN = ("redis", "rediss", "unix")
_SCHEMES = (*_PLAIN, "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")


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
        return RedisTarget("single", url)
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
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"the database must be a number, not {parts[1]!r}")
    return RedisTarget(
        kind,
        url,
        nodes,
        service=parts[0],
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=target.username,
        password=target.password,
        tls=target.tls,
    )


def _node(item: str) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, not {item.strip()!r}")
    return host.strip("[]"), int(port)


class SentinelRedis(Redis):
    """The master a Sentinel set names; closing it also closes the connections to the sentinels."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            for client in self.sentinels.sentinels:
                await client.aclose()


def connect(url: str, **options: Any) -> AnyRedis:
    """A ``redis.asyncio`` client for ``url``; ``options`` go to every data-node connection.

    Socket options (``socket_timeout``, ``socket_connect_timeout``) also apply to the sentinels.
    Raises ``ValueError`` for a malformed URL.
    """
    target = parse_redis_url(url)
    if target.kind == "single":
        return Redis.from_url(url, **options)
    auth: dict[str, Any] = {"username": target.username, "password": target.password, "ssl": target.tls}
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return RedisCluster(startup_nodes=nodes, **auth, **options)
    sockets = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
        list(target.nodes), sentinel_kwargs={**sockets, "ssl": target.tls}, **auth, **options
    )
    client: SentinelRedis = sentinel.master_for(target.service, redis_class=SentinelRedis, db=target.db)
    client.sentinels = sentinel
    return client


__all__ = ["REDIS_FAILURES", "AnyRedis", "RedisTarget", "SentinelRedis", "connect", "parse_redis_url"]
