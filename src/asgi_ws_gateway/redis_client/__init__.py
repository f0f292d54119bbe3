"""Redis URLs and clients: one parser for every Redis user (limits store, management store, bus).

Accepted forms (see docs/deployment.md)::

    redis://[user:password@]host:port/db        one server (rediss:// for TLS, unix:///path.sock)
    redis+cluster://[user:password@]host:port,host:port,...     Redis Cluster (any few nodes to start from)
    redis+sentinel://[user:password@]host:port,host:port,.../service[/db]   the master Sentinel names

``rediss+cluster://`` and ``rediss+sentinel://`` use TLS. The credentials are the data nodes'
(sentinels are reached without them). :func:`parse_redis_url` raises ``ValueError`` with a
message fit to follow a field path; :func:`connect` builds the matching ``redis.asyncio`` client.

The URL parser (:mod:`.urls`) does not import redis-py (90 ms, with the OpenTelemetry SDK's metrics):
a configuration without Redis is read and checked without it. The clients (:mod:`.clients`) import
it, the first time one of their names is read.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .clients import REDIS_FAILURES, AnyRedis, SentinelRedis, connect, database_refusal
    from .task_stop import stop_task
    from .urls import RedisTarget, parse_redis_url

if not TYPE_CHECKING:  # type checkers read the imports above (an unknown name stays an error)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            **dict.fromkeys(["REDIS_FAILURES", "AnyRedis", "SentinelRedis", "connect", "database_refusal"], ".clients"),
            **dict.fromkeys(["RedisTarget", "parse_redis_url"], ".urls"),
            "stop_task": ".task_stop",
        },
    )

__all__ = [
    "REDIS_FAILURES",
    "AnyRedis",
    "RedisTarget",
    "SentinelRedis",
    "connect",
    "database_refusal",
    "parse_redis_url",
    "stop_task",
]
