"""Redis clients: :func:`connect` builds the ``redis.asyncio`` client a URL names, and what a Redis
call raises when Redis fails (:data:`REDIS_FAILURES`)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from .urls import parse_redis_url

AnyRedis = Redis | RedisCluster
"""What :func:`connect` returns: a plain (or Sentinel-backed) client, or a cluster client."""

REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError, AttributeError)
"""What a call raises when Redis is down, fails over or times out: catch it around Redis calls only.

``AttributeError``: after a connection error on a node, redis-py 8.1's cluster client disconnects
that node's idle connections while another task may be opening one of them (its writer becomes
``None`` mid-command): a failed call, not a bug of the caller."""


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


async def database_refusal(url: str, seconds: float) -> str | None:
    """What the server ``url`` names answers when asked for its database, if it refuses it; else None.

    A URL's database (``redis://host:6379/99999``) is selected on each new connection: one the server
    does not have (its ``databases`` setting, 16 by default) failed every Redis call, each limit
    unchecked (fail-open) with a WARNING, for as long as the gateway ran. Only database 0 needs no
    asking (every server, a cluster too, has it). A server that cannot be reached within ``seconds``
    is not an answer: None, as the gateway starts without its Redis and counts once it answers.
    """
    if parse_redis_url(url).db == 0:
        return None
    client = connect(url, socket_connect_timeout=seconds, socket_timeout=seconds)
    try:
        await client.ping()
    except ResponseError as exc:  # the server's own answer to SELECT (or to AUTH before it)
        return str(exc)[:200] if "DB index" in str(exc) or "SELECT" in str(exc) else None
    except REDIS_FAILURES:
        return None
    finally:
        await client.aclose()
    return None


__all__ = ["REDIS_FAILURES", "AnyRedis", "SentinelRedis", "connect", "database_refusal"]
