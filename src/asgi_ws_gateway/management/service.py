"""The management service: the operations behind the REST API, independent of HTTP.

Every change goes the same way: the store applies it atomically to the latest overlay (validated
against the configuration file, so an invalid change saves nothing), this worker applies the merged
configuration to its gateway, and the bus tells the other workers, which load and apply it too.
Workers also poll the store's revision, so one that missed a message catches up.

What a revision asks to drain is saved with it (:class:`~.overlay.Drain`): every worker closes those
connections when it applies that revision, by the bus or by its poll, once. A store that went back
(an older revision, another epoch) is the truth: each worker adopts it, with an ERROR in the log,
and a change decided on the state it replaced is refused with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..config.apis import ApiConfig
from ..config.gateway import GatewayConfig
from ..config.problems import shorten
from ..errors import ConfigError
from ..loading import REFUSED, Gate, allowed_modules, recording, restricted
from ..middleware import WebSocketGateway
from ..policies.build import check_policies
from ..redact import printable
from . import subscriptions as subs
from .bus import Bus, Command, LocalBus
from .change_warnings import change_warnings
from .disclosure import redacted_values
from .errors import Conflict, Invalid, NotFound, PreconditionFailed, StateWentBack, Unavailable
from .live_connections import DEFAULT_LISTED, Listed, LiveConnections
from .overlay import (
    DRAIN_HISTORY,
    Drain,
    InvalidChange,
    Overlay,
    api_document,
    compare_states,
    drain_reasons,
    merge,
    validate,
)
from .store import MemoryStore, StateStore
from .upstream_hosts import operator_hosts, secret_host_problems
from .watch import Watch

DRAIN_REMEMBERED = 4 * DRAIN_HISTORY
"""Drains a worker remembers as done (by epoch and revision), so that a state back from a restore does not close
again what its revisions asked to close when they were new."""
MAX_STATE_BYTES = 16 * 1024 * 1024
"""The most the stored changes may take, as JSON: a change past it is a 422. Each request is bounded,
their sum was not: seventy 1 MB ``POST /apis`` grew the state file past the 64 MiB a file may have to be
read (``loading.MAX_FILE_BYTES``), and from then on every call was a 503 and the gateway would not start."""

logger = logging.getLogger(__name__)


def etag(document: Any, key: bytes) -> str:
    """A strong ETag for a JSON document, keyed (HMAC-SHA-256) with the state store's ETag key: the
    document holds secrets shown as ``REDACTED``, and an unkeyed hash of it let whoever reads the ETag
    test guesses of a short one offline."""
    return '"' + hmac.new(key, json.dumps(document, sort_keys=True).encode(), hashlib.sha256).hexdigest()[:20] + '"'


class Manager:
    """Manages one gateway: its APIs, products, subscriptions and live connections.

    Args:
        gateway: the gateway to manage; the configuration it was built with is the *file* layer.
        store: where changes are kept (default: :class:`MemoryStore`, lost on restart).
        bus: how workers reach each other (default: :class:`LocalBus`, this process only).
        poll_interval: seconds between checks of the store's revision (catch-up without the bus).
        allowed_asgi_upstreams: in-process apps (``module:attr``, or a whole ``module``) that APIs
            created or changed here may use as ``asgi:`` upstreams (default: none but the
            configuration file's own). Nothing else is ever imported because of a change made here.
        allowed_upstream_hosts: hosts (``host``, ``host:port``, ``*.domain``, ``*``) that APIs created or
            changed here may connect to while they inherit a credential the configuration file sends
            upstream (a global or product ``set-header``), besides the file's own upstream hosts.
        sample_interval: seconds between samples of the console's time series (default 5).
        sample_window: seconds of samples each worker keeps (default 900: 15 minutes).

    ``watch`` (:class:`~.watch.Watch`) is what the live console reads: the counters' series and
    the recent refusals of every worker. ``live`` (:class:`~.live_connections.LiveConnections`) lists,
    sends to and closes the open connections of every worker.
    """

    def __init__(
        self,
        gateway: WebSocketGateway,
        *,
        store: StateStore | None = None,
        bus: Bus | None = None,
        poll_interval: float = 1.0,
        allowed_asgi_upstreams: Iterable[str] = (),
        allowed_upstream_hosts: Iterable[str] = (),
        sample_interval: float = 5.0,
        sample_window: float = 900.0,
        reserved_path: str | None = None,
    ) -> None:
        self.gateway = gateway
        self.reserved_path = reserved_path  # where the management API is served: no API may live under it
        self.base: GatewayConfig = gateway.config
        allowed = [*allowed_asgi_upstreams, *self.base.management.allowed_asgi_upstreams]
        self.gate = operator_gate(self.base, allowed_modules(allowed))
        self.secret_hosts = operator_hosts(
            self.base, [*allowed_upstream_hosts, *self.base.management.allowed_upstream_hosts]
        )
        self.store: StateStore = store or MemoryStore()
        self.bus: Bus = bus or LocalBus()
        self.watch = Watch(gateway, self.bus, interval=sample_interval, window=sample_window)
        self.live = LiveConnections(gateway, self.bus)
        self.poll_interval = poll_interval
        self.overlay = Overlay()
        self.started = False
        self._apply_lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._sampling: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._etag_key = b""  # the store's, read at start
        # The drains this worker carried out or found done, by (epoch, revision): a state it ran before,
        # back from a restore, is not closed again (the oldest forgotten past DRAIN_REMEMBERED).
        self._drained: dict[tuple[str, int], None] = {}
        self._seen_save = ""  # the store's token of the save this worker last caught up with

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Apply the stored changes to the gateway and join the bus. Raises ``ConfigError``."""
        shadowed = self._shadowed(self.base)
        if shadowed:
            raise ConfigError(shadowed)
        try:
            stored = await self.store.load()
            self._etag_key = await self._read_etag_key()
        except Unavailable as exc:
            raise Unavailable("cannot read the stored changes") from exc.__cause__ or exc
        try:
            with restricted(self.gate):
                problems = self._secret_problems(stored, merge(self.base, stored))
            if problems:  # the file sends a secret now that an API changed here would take elsewhere
                raise ConfigError(problems)
            async with self._apply_lock:
                await self._install(stored)
        except ConfigError as exc:
            raise ConfigError(["the stored changes do not fit the configuration file:", *exc.problems]) from None
        await self.bus.start(self._on_command)
        self._poller = asyncio.create_task(self._poll(), name="management-poll")
        self._sampling = asyncio.create_task(self.watch.sampler.run(), name="management-series")
        self.started = True

    async def _read_etag_key(self) -> bytes:
        read = getattr(self.store, "etag_key", None)  # a store written before ETags were keyed lacks it
        if read is None:
            logger.warning(
                "management: the state store %s has no etag_key(): ETags are unkeyed, and a short secret shown "
                "as REDACTED could be found by hashing guesses",
                type(self.store).__name__,
            )
            return b""
        key: bytes = await read()
        return key

    def etag(self, document: Any) -> str:
        """The ``ETag`` of a document read from here (see :func:`etag`)."""
        return etag(document, self._etag_key)

    async def ensure_started(self) -> None:
        """Start once (the lifespan startup, or the first request where a server has no lifespan)."""
        if not self.started:
            async with self._start_lock:
                if not self.started:
                    await self.start()

    async def stop(self) -> None:
        self.started = False
        for task in (self._poller, self._sampling):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.bus.aclose()
        await self.store.aclose()

    async def sync(self) -> None:
        """Apply the store's latest state if it is not the one this worker runs (see :meth:`_apply`)."""
        latest = await self.store.load()
        if compare_states(self.overlay, latest) != "same":
            await self._apply(latest)

    async def _apply(self, overlay: Overlay) -> None:
        """Run ``overlay`` if it succeeds the state this worker runs, and close what its revisions asked to
        drain; if the store went back (:func:`~.overlay.compare_states`), adopt its state, whatever its revision."""
        async with self._apply_lock:
            step = compare_states(self.overlay, overlay)
            if step == "diverged":  # or read before a revision this worker applied meanwhile: ask the store again
                overlay = await self.store.load()
                step = compare_states(self.overlay, overlay)
            if step == "same":
                return
            drains: list[Drain] = []
            if step == "newer":
                drains = [
                    drain for revision, drain in overlay.drains_after(self.overlay.revision)
                    if (overlay.epoch, revision) not in self._drained
                ]  # fmt: skip
                if overlay.revision - self.overlay.revision > DRAIN_HISTORY:
                    logger.warning(
                        "management: this worker was %d revisions behind; what revisions up to %d asked to drain "
                        "was not kept, and their connections here stay open",
                        overlay.revision - self.overlay.revision, overlay.revision - DRAIN_HISTORY,
                    )  # fmt: skip
            else:
                logger.error(
                    "management: the state store went back from %s, which this worker ran, to %s (restored from an "
                    "older copy, failed over to a lagging replica, or emptied); adopting the store's state",
                    self.overlay.describe(), overlay.describe(),
                )  # fmt: skip
            await self._install(overlay)
            if step == "diverged":
                self._etag_key = await self._read_etag_key()  # an emptied store makes a new one
            self._drain(drains, overlay.revision)

    async def _install(self, overlay: Overlay) -> None:
        """Run ``overlay``; its drains are done here from now on (carried out by the caller, or, for a state
        taken as it is — at start, or adopted after the store went back — past events not to replay)."""
        with restricted(self.gate):  # the stored changes may load only what the operator allowed
            config = merge(self.base, overlay)
        changed = await self.gateway.apply_config(config)
        self.overlay = overlay
        drained = self._drained
        for revision in overlay.drains:
            drained[overlay.epoch, revision] = None
        while len(drained) > DRAIN_REMEMBERED:
            del drained[next(iter(drained))]
        if changed:
            logger.info("applied management revision %d: API(s) %s changed", overlay.revision, ", ".join(changed))

    def _drain(self, drains: list[Drain], revision: int) -> None:
        """Start closing, with ``drain_close_code``, the open connections ``drains`` select here (not awaited:
        a client slow to answer its close frame must not hold up the other workers)."""
        if not drains:
            return
        config = self.gateway.config
        reason_of = drain_reasons(drains, config)
        chosen = [(c.id, reason) for c in self.gateway.connections() if (reason := reason_of(c.api, c.subscription))]
        if chosen:
            logger.info("management revision %d: draining %d connection(s) with %d", revision, len(chosen),
                        config.drain_close_code)  # fmt: skip
        for connection_id, reason in chosen:
            self.live.start_closing(connection_id, config.drain_close_code, reason)

    async def _stored_version(self) -> tuple[str, int, str]:
        """The store's epoch, revision and save token (``""`` where the store has none)."""
        read = getattr(self.store, "version", None)
        if read is None:  # a store written before epochs: its revision alone
            return self.overlay.epoch, await self.store.revision(), ""
        version: tuple[str, ...] = tuple(await read())
        epoch, revision, *save = version
        return str(epoch), int(revision), str(save[0]) if save else ""

    async def _poll(self) -> None:
        unavailable = False  # one warning per outage, not one per poll
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                epoch, revision, save = await self._stored_version()
                # A save token this worker has not caught up with may be a state that reuses its
                # (epoch, revision): restored from an older copy, then changed by a host that saw it.
                if (epoch, revision) != (self.overlay.epoch, self.overlay.revision) or save != self._seen_save:
                    await self.sync()
                    self._seen_save = save
            except Unavailable as exc:
                if not unavailable:
                    logger.warning("management: cannot read the state store (%s); retrying", exc.__cause__ or exc)
                unavailable = True
                continue
            except Exception:
                logger.exception("management: cannot read the state store")
                continue
            if unavailable:
                logger.warning("management: the state store answers again")
                unavailable = False

    def _shadowed(self, config: GatewayConfig, subject: str | None = None) -> list[str]:
        """APIs under the management API's path: it takes their requests first, so they would never be served."""
        root = self.reserved_path
        if root is None:
            return []
        return [
            f"{'path' if api.name == subject else f'apis[{i}].path'}: '{api.path}' is under the management API's "
            f"path '{root}', which would take its requests"
            for i, api in enumerate(config.apis)
            if api.path == root or api.path.startswith(root.rstrip("/") + "/")
        ]

    def _secret_problems(self, overlay: Overlay, merged: GatewayConfig, subject: str | None = None) -> list[str]:
        """APIs changed here that would take a credential of the file's to a host the operator did not name.

        An API is changed here when it is defined here or listed by a product created here: that
        product's policies (a ``set-backend-service``, say) run for it too.
        """
        changed = {name for name, document in overlay.apis.items() if document is not None}
        changed |= {name for product in merged.products if product.name in overlay.products for name in product.apis}
        return secret_host_problems(self.base, merged, changed, self.secret_hosts, subject)

    async def _change(
        self, change: Callable[[Overlay], Overlay], *, subject: str | None = None, force: bool = False
    ) -> list[str]:
        """Save ``change`` of the latest state, run it here, and answer once every worker runs it.

        ``force``: a change that would open an API to clients without a subscription key is made (a
        WARNING) instead of refused (409).

        Returns:
            The configuration warnings that concern the change (:func:`~.change_warnings.change_warnings`),
            which the log has too: those about the APIs and products it wrote, and any it brought.
        """
        ran = self.overlay  # the store holds this state or a successor, unless it went back
        opened: list[str] = []
        warnings: list[str] = []

        def checked(current: Overlay) -> Overlay:
            if compare_states(ran, current) == "diverged":
                raise StateWentBack(
                    f"the state store went back to {current.describe()} (this worker ran {ran.describe()}); "
                    "nothing was changed: this worker now runs the store's state, read it and send the change again"
                )
            new = change(current)
            size = len(new.to_json())
            if size > MAX_STATE_BYTES and size > len(current.to_json()):  # a change that frees space passes
                raise InvalidChange([
                    f"(state): the stored changes would take {size:,} bytes, more than the {MAX_STATE_BYTES:,} "
                    "they may; remove some first"
                ])  # fmt: skip
            with restricted(self.gate):  # refused before anything is imported or read
                merged = validate(self.base, new, subject)
            problems = self._shadowed(merged, subject) + self._secret_problems(new, merged, subject)
            if problems:
                raise InvalidChange(problems)
            opened[:] = subs.opened_apis(self.base, current, new)
            if opened and not force:
                raise Conflict(
                    f"this change would let clients without a subscription key into API(s) {', '.join(opened)}; "
                    "send it with ?force=true to do so",
                    [f"{name}: would need no subscription key" for name in opened],
                )
            with restricted(self.gate):
                warnings[:] = self._warnings(current, new, merged, subject)
            return new

        try:
            new = await self.store.update(checked)
        except StateWentBack:
            await self.sync()  # adopt the store's state (logged), so that the next call decides on it
            raise
        except ConfigError as exc:
            refused = [p for p in exc.problems if REFUSED in p]
            if refused:  # an admin token was used to try to load code, files or the environment
                logger.warning("management: refused a change that would load %s", printable("; ".join(refused)))
            raise Invalid(f"invalid change ({len(exc.problems)} problem(s))", exc.problems) from None
        if opened:
            logger.warning("management: revision %d lets clients without a subscription key into API(s) %s (forced)",
                           new.revision, printable(", ".join(opened)))  # fmt: skip
        await self._apply(new)
        if compare_states(new, self.overlay) == "diverged":  # the store went back before this worker ran it
            raise Unavailable(
                f"{new.describe()} was saved, but the state store went back before this worker could run it; "
                "read the state and send the change again"
            )
        # Answer once every worker runs the new revision: a handshake right after sees the change. Each
        # worker starts closing what the revision asked to drain as it applies it, without waiting for it.
        try:
            await self.bus.gather({"op": "reload", "revision": new.revision})
        except Unavailable as exc:  # saved and applied here: the other workers find it when they poll the store
            logger.warning(
                "management: revision %d saved, not announced (%s); the other workers apply it from the store",
                new.revision,
                exc.__cause__ or exc,
            )
        return warnings

    def _warnings(self, current: Overlay, new: Overlay, merged: GatewayConfig, subject: str | None) -> list[str]:
        """The warnings of ``merged`` (``new`` run) that concern the change from ``current``: about the APIs
        and products it wrote (API ``subject`` even when sent unchanged, and a written product's APIs,
        whose policies it changes), or new."""
        apis = {name for name, doc in new.apis.items() if doc is not None and current.apis.get(name) != doc}
        if subject is not None and any(api.name == subject for api in merged.apis):
            apis.add(subject)
        products = {
            name for name in current.products.keys() | new.products.keys()
            if current.products.get(name) != new.products.get(name)
        }  # fmt: skip
        for name in products:
            for doc in (current.products.get(name), new.products.get(name)):
                apis.update(doc.get("apis", ()) if isinstance(doc, dict) else ())
        if compare_states(self.overlay, current) == "same":
            before: GatewayConfig | None = self.gateway.config  # what this worker runs: not built again
        else:
            try:
                before = merge(self.base, current)
            except ConfigError:  # a state that no longer fits: every warning is news
                before = None
        return change_warnings(before, merged, apis=apis, products=products)

    # -- APIs ---------------------------------------------------------------------------------

    def apis(self) -> list[ApiConfig]:
        return list(self.gateway.config.apis)

    def origin(self, name: str) -> str:
        """``file``, ``api`` (created through the API) or ``file+api`` (a file API changed through it)."""
        in_file = any(api.name == name for api in self.base.apis)
        if not in_file:
            return "api"
        return "file+api" if name in self.overlay.apis else "file"

    def api(self, name: str) -> ApiConfig:
        for api in self.gateway.config.apis:
            if api.name == name:
                return api
        raise NotFound(f"no WebSocket API named '{name}'")

    async def create_api(self, body: Any) -> tuple[ApiConfig, list[str]]:
        """Create an API; returns it and the configuration warnings about it (see :meth:`_change`)."""
        document = _object(body)
        name = document.get("name")
        if not isinstance(name, str):
            problem = (
                "name: Field required"
                if name is None
                else f"name: Input should be a valid string (got {shorten(name)})"
            )
            raise Invalid("invalid change (1 problem(s))", [problem])

        def change(overlay: Overlay) -> Overlay:
            if name in _names(self.base, overlay):
                raise Conflict(f"a WebSocket API named '{name}' exists already")
            return overlay.next(apis={**overlay.apis, name: document})

        warnings = await self._change(change, subject=name)
        return self.api(name), warnings

    async def replace_api(
        self, name: str, body: Any, *, if_match: str | None = None, drain: bool = False
    ) -> tuple[ApiConfig, list[str]]:
        """Replace an API; returns it and the configuration warnings about it (see :meth:`_change`)."""
        document = {"name": name, **_object(body)}
        if document["name"] != name:
            raise Invalid(
                "the body names another API",
                [
                    f"name: '{document['name']}' is not '{name}', the API in "
                    "the URL (to rename, create the new API, then delete)"
                ],
            )

        def change(overlay: Overlay) -> Overlay:
            self._check_current(overlay, name, if_match)
            return overlay.next(apis={**overlay.apis, name: document}).draining(Drain(apis=(name,)) if drain else None)

        warnings = await self._change(change, subject=name)
        return self.api(name), warnings

    async def delete_api(self, name: str, *, if_match: str | None = None, drain: bool = False) -> list[str]:
        """Delete an API; returns the configuration warnings the deletion brought (see :meth:`_change`)."""

        def change(overlay: Overlay) -> Overlay:
            self._check_current(overlay, name, if_match)
            users = subs.products_with_api(overlay, name)
            if users:
                raise Conflict(f"API '{name}' is in product(s) {', '.join(users)}")
            apis = dict(overlay.apis)
            if any(api.name == name for api in self.base.apis):
                apis[name] = None  # a tombstone hides the file's definition
            else:
                del apis[name]
            return overlay.next(apis=apis).draining(Drain(apis=(name,)) if drain else None)

        return await self._change(change)

    def _check_current(self, overlay: Overlay, name: str, if_match: str | None) -> None:
        current = merge(self.base, overlay).apis
        found = next((api for api in current if api.name == name), None)
        if found is None:
            raise NotFound(f"no WebSocket API named '{name}'")
        if if_match is not None and if_match not in ("*", self.etag(api_document(found))):
            raise PreconditionFailed(f"API '{name}' was changed since you read it (If-Match does not match)")

    # -- products and subscriptions -------------------------------------------------------------

    def products(self) -> list[subs.Product]:
        """The configuration file's products, then those created here."""
        return [*self.base.products, *subs.products(self.overlay).values()]

    def product(self, name: str) -> subs.Product:
        found = next((p for p in self.products() if p.name == name), None)
        if found is None:
            raise NotFound(f"no product named '{name}'")
        return found

    async def create_product(self, body: Any, *, force: bool = False) -> tuple[subs.Product, list[str]]:
        """Create a product; ``force``: even one that opens an API to clients without a key (else 409).
        Returns it and the configuration warnings about it and its APIs (see :meth:`_change`)."""
        body = _without_output_fields(body)
        _no_redacted_secrets(body)
        product: subs.Product = subs.parse(subs.Product, body)
        file_products = {p.name for p in self.base.products}

        def change(overlay: Overlay) -> Overlay:
            return subs.add_product(overlay, product, _names(self.base, overlay), file_products)

        return product, await self._change(change, force=force)

    async def delete_product(self, name: str, *, force: bool = False, drain: bool = False) -> list[str]:
        """Delete a product; ``force``: even its API's last one that required a key (else 409); ``drain``:
        close the connections of its APIs admitted with a subscription that no longer grants them.
        Returns the configuration warnings about its APIs now (see :meth:`_change`)."""
        file_products = {p.name for p in self.base.products}

        def change(overlay: Overlay) -> Overlay:
            new = subs.remove_product(overlay, name, file_products)
            return new.draining(Drain(ungranted=tuple(overlay.products[name].get("apis", ()))) if drain else None)

        return await self._change(change, force=force)

    def subscriptions(self, product: str | None = None) -> list[subs.SubscriptionResource]:
        """The configuration file's subscriptions, then those created here."""
        found = [*map(subs.from_file, self.base.subscriptions), *subs.subscriptions(self.overlay).values()]
        return [s for s in found if product is None or s.product == product]

    def subscription(self, sid: str) -> subs.SubscriptionResource:
        found = next((s for s in self.subscriptions() if s.id == sid), None)
        if found is None:
            raise NotFound(f"no subscription '{sid}'")
        return found

    async def create_subscription(self, body: Any) -> tuple[subs.SubscriptionResource, str]:
        """Create a subscription; returns it and its key (shown this once, never stored)."""
        request: subs.SubscriptionRequest = subs.parse(subs.SubscriptionRequest, body)
        key, sid = subs.new_key(), request.id or f"sub-{uuid.uuid4().hex[:12]}"
        await self._change(lambda o: subs.add_subscription(o, request, key, sid, self.base))
        return self.subscription(sid), key

    async def set_subscription_state(self, sid: str, state: str, *, drain: bool = False) -> subs.SubscriptionResource:
        """Suspend or activate; ``drain``: also close the connections admitted with it, on every worker."""
        revoked = Drain(subscriptions=(sid,)) if drain else None
        await self._change(lambda o: subs.change_subscription(o, sid, self.base, state=state).draining(revoked))
        return self.subscription(sid)

    async def regenerate_key(self, sid: str, *, drain: bool = False) -> tuple[subs.SubscriptionResource, str]:
        """A new key; ``drain``: also close the connections admitted with the old one, on every worker."""
        key, revoked = subs.new_key(), Drain(subscriptions=(sid,)) if drain else None
        digest = subs.hash_key(key)
        await self._change(lambda o: subs.change_subscription(o, sid, self.base, key_sha256=digest).draining(revoked))
        return self.subscription(sid), key

    async def delete_subscription(self, sid: str, *, drain: bool = False) -> None:
        """Delete; ``drain``: also close the connections admitted with it, on every worker."""
        revoked = Drain(subscriptions=(sid,)) if drain else None
        await self._change(lambda o: subs.remove_subscription(o, sid, self.base).draining(revoked))

    # -- live connections (every worker): see :class:`~.live_connections.LiveConnections` ----------

    async def connections(self, api: str | None = None, limit: int = DEFAULT_LISTED) -> Listed:
        """The ``limit`` oldest open connections over every worker, and how many are open in all."""
        return await self.live.connections(api, limit)

    async def send(self, connection_id: str, data: str | bytes) -> str:
        """Send to the connection's client on whichever worker holds it; returns that worker's id."""
        return await self.live.send(connection_id, data)

    async def kick(self, connection_id: str, code: int = 1000, reason: str = "") -> str:
        """Close the connection on whichever worker holds it; returns that worker's id."""
        return await self.live.kick(connection_id, code, reason)

    async def _on_command(self, command: Command) -> Command | None:
        op = command.get("op")
        if op in ("reload", "resync"):
            await self.sync()
            return {"revision": self.overlay.revision}
        if op in ("series", "refusals"):
            return await self.watch.answer(command)
        return await self.live.answer(command)


def operator_gate(base: GatewayConfig, allowed: set[str]) -> Gate:
    """What changes made here may load: what the configuration file loads, and ``allowed`` modules."""
    with recording() as gate:
        check_policies(base)  # builds the file's policies once, recording the files and functions they load
    for api in base.apis:
        for upstream in api.upstreams:
            if upstream.kind == "asgi" and upstream.url != "asgi:":
                gate.modules.add(upstream.url.removeprefix("asgi:"))
            if upstream.ca_bundle is not None:
                gate.files.add(upstream.ca_bundle)
    gate.modules |= allowed
    gate.record = False
    return gate


_OUTPUT_FIELDS = frozenset({"warnings"})
"""Top-level keys an answer adds to an API or a product that are not its fields (the configuration
warnings of a change): dropped from a body, so that the document a create or replace answered with
can be sent back as it is (it was a 422, ``warnings: unknown field``, only when there were warnings)."""


def _without_output_fields(body: Any) -> Any:
    """``body`` without the :data:`_OUTPUT_FIELDS` an API or product answer carries (anything else as it is)."""
    if isinstance(body, dict) and not _OUTPUT_FIELDS.isdisjoint(body):
        return {name: value for name, value in body.items() if name not in _OUTPUT_FIELDS}
    return body


def _object(body: Any) -> dict[str, Any]:
    body = _without_output_fields(body)
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object", ["(top level): expected a JSON object"])
    _no_redacted_secrets(body)
    return body


def _no_redacted_secrets(body: Any) -> None:
    """Refuse a document holding ``REDACTED`` where ``GET`` hides a header's secret: sent back as read, it
    would replace the secret with that word."""
    fields = redacted_values(body)
    if fields:
        raise Invalid(
            "the body holds REDACTED in place of a secret",
            [
                f"{field}: REDACTED is what the API shows in place of this secret: send the value itself"
                for field in fields
            ],
        )


def _names(base: GatewayConfig, overlay: Overlay) -> set[str]:
    names = {api.name for api in base.apis if overlay.apis.get(api.name, True) is not None}
    return names | {name for name, doc in overlay.apis.items() if doc is not None}


__all__ = ["MAX_STATE_BYTES", "Manager", "etag", "operator_gate"]
