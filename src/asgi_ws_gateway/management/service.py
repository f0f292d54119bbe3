"""The management service: the operations behind the REST API, independent of HTTP.

Every change goes the same way: the store applies it atomically to the latest overlay (validated
against the configuration file, so an invalid change saves nothing), this worker applies the merged
configuration to its gateway, and the bus tells the other workers, which load and apply it too
(:mod:`.store_sync`). A change decided on a state the store went back from is refused with 503.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from ..config.apis import ApiConfig
from ..config.gateway import GatewayConfig
from ..config.problems import shorten
from ..errors import ConfigError
from ..loading import REFUSED, restricted
from ..policies.build import checks_only
from ..redact import printable
from . import subscriptions as subs
from .bus import Command
from .change_warnings import change_warnings
from .errors import Conflict, Invalid, NotFound, PreconditionFailed, StateWentBack, Unavailable
from .live_connections import DEFAULT_LISTED, Listed
from .overlay import Drain, InvalidChange, Overlay, api_document, compare_states, validate
from .resource_body import no_redacted_secrets, resource_object, without_output_fields
from .store_sync import StoreSync, compared

MAX_STATE_BYTES = 16 * 1024 * 1024
"""The most the stored changes may take, as JSON: a change past it is a 422. Each request is bounded,
their sum was not: seventy 1 MB ``POST /apis`` grew the state file past the 64 MiB a file may have to be
read (``loading.MAX_FILE_BYTES``), and from then on every call was a 503 and the gateway would not start."""

logger = logging.getLogger(__name__)


class Manager(StoreSync):
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

    # -- changes ------------------------------------------------------------------------------

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
            with restricted(self.gate), checks_only():  # refused before anything is imported or read
                merged = validate(self.base, new, subject, self._apis)
            self._remember(new, merged)  # installed without validating it again
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
            with restricted(self.gate), checks_only():
                warnings[:] = self._warnings(current, new, merged, subject)
            return new

        try:
            # One change of this worker's at a time: ten sent at once each validated, lost the store's
            # compare-and-set to one of the others and validated again (up to 50 times each). The store
            # runs ``checked`` in a thread: the event loop serves its connections meanwhile.
            async with self._change_lock:
                new = self._saved = await self.store.update(checked)
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
        # Changes this worker saved after this one (queued behind it): run the last, whose drains include
        # theirs, rather than build each configuration on the way for a moment's service.
        latest = self._saved
        await self._apply(latest if latest is not None and await compared(new, latest) == "newer" else new)
        if await compared(new, self.overlay) == "diverged":  # the store went back before this worker ran it
            raise Unavailable(
                f"{new.describe()} was saved, but the state store went back before this worker could run it; "
                "read the state and send the change again"
            )
        # Answer once every worker runs the new revision: a handshake right after sees the change. Each
        # worker starts closing what the revision asked to drain as it applies it, without waiting for it.
        try:
            answers = await self.bus.gather({"op": "reload", "revision": new.revision})
        except Unavailable as exc:  # saved and applied here: the other workers find it when they poll the store
            logger.warning(
                "management: revision %d saved, not announced (%s); the other workers apply it from the store",
                new.revision,
                exc.__cause__ or exc,
            )
        else:
            warnings.extend(_not_run(new.revision, answers.replies))
            if answers.full:  # 200 still: saved and run here; the bus logged the same
                warnings.append(
                    f"revision {new.revision} saved and run by this worker; {answers.late} worker(s) received it, "
                    "but Redis is full (OOM, maxmemory) and refused to store their answers: that they run it is "
                    "not confirmed (each also catches up from the state store)"
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
                before = self._merged(current)
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
        document = await asyncio.to_thread(resource_object, body)  # walks the whole body: off the event loop
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
        document = {"name": name, **await asyncio.to_thread(resource_object, body)}
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
            users += [f"{p.name} (in the configuration file)" for p in self.base.products if name in p.apis]
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
        current = self._merged(overlay).apis
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
        product = await asyncio.to_thread(_product, body)
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


def _product(body: Any) -> subs.Product:
    body = without_output_fields(body)
    no_redacted_secrets(body)
    product: subs.Product = subs.parse(subs.Product, body)
    return product


def _names(base: GatewayConfig, overlay: Overlay) -> set[str]:
    names = {api.name for api in base.apis if overlay.apis.get(api.name, True) is not None}
    return names | {name for name, doc in overlay.apis.items() if doc is not None}


def _not_run(revision: int, replies: list[Command]) -> list[str]:
    """The answers of the workers that cannot run ``revision`` (their configuration does not fit it: a
    rolling deploy of another file, say): saved, run here, not there. A warning each, logged too."""
    warned = []
    for reply in replies:
        problems = reply.get("cannot_run")
        if not isinstance(problems, list):
            continue
        warning = printable(
            f"worker {reply.get('worker')} cannot run revision {revision} and keeps serving revision "
            f"{reply.get('revision')}: its configuration does not fit it ({'; '.join(map(str, problems))})"
        )
        logger.warning("management: %s", warning)
        warned.append(warning)
    return warned


__all__ = ["MAX_STATE_BYTES", "Manager"]
