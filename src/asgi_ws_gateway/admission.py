"""What admits a handshake: the APIs as served under a configuration, and the check at accept.

:class:`Api` is an API's configuration with what is derived from it once, when the configuration is
applied (its backends' pool and connectors, whether it can be spliced, its TLS). A handshake that
ran while the configuration changed, or a drain began, is accepted only if the configuration now in
force admits it as the one it started under did (:class:`AdmissionChecks`); else it is refused with
503, as a drain refuses new handshakes (:func:`draining_refusal`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from .config.apis import ApiConfig, UpstreamConfig
from .config.products import ProductConfig, SubscriptionConfig
from .config.upstream_networks import UpstreamNetworksConfig
from .errors import HandshakeDenied
from .handshake.context import Subscription
from .log_throttle import OutageLog
from .param_names import fold_cookie_name
from .policies.products import expiry
from .telemetry import TracedConnector
from .upstream.address_guard import AddressGuard
from .upstream.balancing import Backend, BackendPool
from .upstream.cookie_scope import api_cookie_path
from .upstream.head_limits import DEFAULT_HEAD
from .upstream.inprocess import InProcessConnector
from .upstream.inprocess_lifespan import AppLifespans
from .upstream.tls import UpstreamTls
from .upstream.websockets_client import WebSocketsConnector

_DEFAULT_NETWORKS = UpstreamNetworksConfig()
"""``upstream_networks``' defaults: what an :class:`Api` made without the file's checks."""


class Api:
    """An API's configuration with what is derived from it once, when the configuration is applied."""

    pool: BackendPool

    def __init__(
        self,
        config: ApiConfig,
        previous: Api | None = None,
        products: tuple[ProductConfig, ...] = (),
        head_limit: int = DEFAULT_HEAD,
        lifespans: AppLifespans | None = None,
        networks: UpstreamNetworksConfig = _DEFAULT_NETWORKS,
    ) -> None:
        self.config = config
        self.networks = networks  # the file's upstream_networks; the API's own narrows it
        own = config.upstream_networks
        self.guard = AddressGuard(config.name, (networks.allow, own.allow), (*networks.deny, *own.deny))
        self.products = products  # the products that name it: their policies and keys admit its clients
        self.head_limit = head_limit  # bytes of head sent to and read from its upstreams (upstream.head_limits)
        known = {b.label: b for b in previous.pool.backends} if previous is not None else {}
        backends = []
        self.traced: list[TracedConnector] = []
        for i, upstream in enumerate(config.upstreams):
            connector = _connector(config, upstream, head_limit, lifespans, self.guard)
            self.traced.append(connector)
            backend = known.get(upstream.label)
            if backend is None:
                backend = Backend(label=upstream.label, connector=connector, index=i)
            else:  # the same object: open connections count down what new ones count up
                backend.connector, backend.index = connector, i
            backend.max_connections = upstream.max_connections  # a lower cap closes nothing: new ones wait
            backends.append(backend)
        # The same gate across changes: a handshake in flight leaves the one it entered.
        self.pool = BackendPool(config, backends, previous.pool.connecting if previous is not None else None)
        # Passthrough opens the upstream itself: it needs every upstream on the network.
        self.can_splice = config.passthrough is not False and all(u.kind != "asgi" for u in config.upstreams)
        self.splice_warned = config.passthrough == "auto"  # only an explicit ``true`` is worth a warning
        # 5xx refusals by reason: a flood (its upstream down) is a WARNING now and then, not one each.
        self.failure_logs: dict[str, OutageLog] = previous.failure_logs if previous is not None else {}
        # The cookies its upstreams may set (upstream.set_cookies), folded; None: any the policies do not read.
        listed = config.response_cookies
        self.response_cookies = None if listed is None else frozenset(fold_cookie_name(name) for name in listed)
        # Set-Cookie lines dropped from its upstreams' answers: a WARNING now and then.
        self.cookie_log: OutageLog = previous.cookie_log if previous is not None else OutageLog()
        # What its upstreams' cookies may reach (upstream.cookie_scope): its path, and what the operator allowed.
        self.cookie_path = api_cookie_path(config.path)
        self.cookie_domains = frozenset(config.response_cookie_domains)
        self.cookie_paths = frozenset(config.response_cookie_paths)
        self.cookie_scope_log: OutageLog = previous.cookie_scope_log if previous is not None else OutageLog()
        self.tls = [UpstreamTls(u) for u in config.upstreams] if self.can_splice else []
        # What every handshake reads, as plain attributes: a pydantic model's attribute read goes through
        # its ``__getattr__`` hook (~400 instructions more than a plain one's).
        self.name = config.name
        self.compression = config.compression
        self.max_message_size = config.max_message_size
        self.close_timeout = config.close_timeout
        self.ping_interval = config.ping_interval
        self.ping_timeout = config.ping_timeout
        self.idle_timeout = config.idle_timeout
        self.max_lifetime = config.max_lifetime

    @classmethod
    def serving(
        cls,
        config: ApiConfig,
        previous: Api | None,
        products: tuple[ProductConfig, ...],
        head_limit: int = DEFAULT_HEAD,
        lifespans: AppLifespans | None = None,
        networks: UpstreamNetworksConfig = _DEFAULT_NETWORKS,
    ) -> Api:
        """``previous`` itself when ``config`` and ``products`` are what it was made from, else a new one.

        What a rebuild would make is ``previous`` again (its backends, their counts and health, are
        carried over anyway), except where it read a file: a ``wss://`` upstream's trust store is read
        when the configuration is applied, so such an API is made again. A change to one API of 1,000
        made all 1,000 (their connectors, pools and TLS) on the event loop."""
        if (
            previous is not None
            and (previous.config is config or previous.config == config)
            and previous.products == products
            and previous.head_limit == head_limit
            and previous.networks == networks
            and not any(upstream.kind == "wss" for upstream in config.upstreams)
        ):
            return previous
        return cls(config, previous, products, head_limit, lifespans, networks)

    def admits_as(self, other: Api) -> bool:
        """Whether ``other`` (a later configuration's) admits clients under the same settings."""
        return other is self or (other.config == self.config and other.products == self.products)


def _connector(
    api: ApiConfig, upstream: UpstreamConfig, head_limit: int, lifespans: AppLifespans | None, guard: AddressGuard
) -> TracedConnector:
    connector = (
        InProcessConnector(api, upstream, max_head=head_limit, lifespans=lifespans)
        if upstream.kind == "asgi"
        else WebSocketsConnector(api, upstream, max_head=head_limit, guard=guard)
    )
    return TracedConnector(connector, api.name, upstream)  # a pass-through unless telemetry is on


class AdmissionChecks:
    """The check at accept, on the configuration in force: :class:`~asgi_ws_gateway.WebSocketGateway`
    keeps the APIs, subscriptions and drain state it reads."""

    _draining: bool
    _apis: dict[str, Api]
    _subscriptions: dict[str, SubscriptionConfig]

    def _check_still_admitted(self, api: Api, subscription: Subscription | None) -> None:
        """The configuration changed while a handshake of ``api`` ran: it is accepted only if the
        configuration in force now admits it as the one it started under did (the API, its products,
        its subscription unchanged); else 503 and the client's retry meets the new configuration. A
        change acknowledged to its operator thus never lets a connection open under the old settings
        (a replaced upstream, a revoked key), and a drain never misses a handshake that was in flight."""
        if self._draining:
            raise draining_refusal()
        current = self._apis.get(api.config.name)
        if current is None or not api.admits_as(current) or not self._still_subscribed(subscription):
            raise HandshakeDenied(
                503, "the API's configuration changed during the handshake; retry",
                headers=[(b"retry-after", b"1")], reason="config_changed",
            )  # fmt: skip

    def _still_subscribed(self, admitted: Subscription | None) -> bool:
        if admitted is None:
            return True
        now = self._subscriptions.get(admitted.id)
        return (
            now is not None
            and now.state == "active"
            and now.product == admitted.product
            and now.key_sha256 == admitted.key_sha256
            and expiry(now) == admitted.expires_at
        )


def draining_refusal() -> HandshakeDenied:
    return HandshakeDenied(503, "the gateway is shutting down", headers=[(b"retry-after", b"5")], reason="draining")


Counted = tuple[Mapping[str, str | int], Backend]
"""A backend with the metric attributes it is counted under (``ws_gateway.upstream.connections``)."""


def counted_backends(apis: Iterable[Api]) -> Iterator[Counted]:
    """Each backend of ``apis`` with its metric attributes: named by its configuration (a URL a policy built
    from a handshake's values connects on its backend's behalf, and is counted under it)."""
    for api in apis:
        for backend, connector in zip(api.pool.backends, api.traced, strict=True):  # both in upstreams' order
            yield connector.backend.metric, backend


def retired_backends(before: Iterable[Api], after: Iterable[Api], retired: Iterable[Counted]) -> tuple[Counted, ...]:
    """The backends a change from ``before`` to ``after`` removed while connections to them were open, and
    those ``retired`` by earlier changes whose connections are not over yet: still counted (see
    :func:`backend_connections`). A backend removed with none open is gone at once."""
    kept = {id(backend) for _, backend in counted_backends(after)}  # carried over (by label): still configured
    removed = [(metric, backend) for metric, backend in counted_backends(before) if backend.connections > 0]
    still = [(metric, backend) for metric, backend in retired if backend.connections > 0]
    return tuple((metric, backend) for metric, backend in [*still, *removed] if id(backend) not in kept)


def backend_connections(
    apis: Iterable[Api], retired: Iterable[Counted] = ()
) -> Iterator[tuple[Mapping[str, str | int], int]]:
    """Each backend's connections, open or being opened (``ws_gateway.upstream.connections``): every
    configured backend of ``apis``, at 0 too, one series each; and each backend a change removed
    (``retired``) while its connections drain, down to 0, which it reads until the next change forgets it
    (a reader that keeps a series' last point sees it end at 0, not at its last count). The attributes of a
    backend removed and added again are one series: its two counts are summed."""
    counts: dict[frozenset[tuple[str, str | int]], tuple[Mapping[str, str | int], int]] = {}
    for metric, backend in [*counted_backends(apis), *retired]:
        key = frozenset(metric.items())
        seen = counts.get(key)
        counts[key] = (metric, backend.connections + (seen[1] if seen is not None else 0))
    yield from counts.values()


__all__ = [
    "AdmissionChecks",
    "Api",
    "Counted",
    "backend_connections",
    "counted_backends",
    "draining_refusal",
    "retired_backends",
]
