"""Keeping this worker's gateway on the state store's latest state: what makes the workers agree.

A change reaches the other workers by the bus; each worker also polls the store's revision, so one
that missed a message catches up. What a revision asks to drain is saved with it
(:class:`~.overlay.Drain`): every worker closes those connections when it applies that revision, by
the bus or by its poll, once. A store that went back (an older revision, another epoch) is the
truth: each worker adopts it, with an ERROR in the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from typing import Any, Literal

from ..config.gateway import GatewayConfig
from ..errors import ConfigError
from ..loading import Gate, allowed_modules, recording, restricted
from ..middleware import WebSocketGateway
from ..policies.build import check_policies, checks_only
from ..redact import printable
from ..redis_client import stop_task
from ..state.startup_check import why
from .bus import Bus, Command, LocalBus
from .certificate_hosts import certificate_host_problems
from .errors import CannotRun, Unavailable
from .live_connections import LiveConnections
from .overlay import DRAIN_HISTORY, Drain, Overlay, ValidatedApis, compare_states, drain_reasons, validate
from .store import MemoryStore, StateStore
from .upstream_hosts import operator_hosts, secret_host_problems
from .watch import Watch

VALIDATED_KEPT = 4
"""Merged configurations a worker keeps validated (:meth:`StoreSync._merged`): the state it runs, the one a
change checks, and the few changes queued behind it."""
DRAIN_REMEMBERED = 4 * DRAIN_HISTORY
"""Drains a worker remembers as done (by epoch and revision), so that a state back from a restore does not close
again what its revisions asked to close when they were new."""

logger = logging.getLogger(__name__)


def etag(document: Any, key: bytes) -> str:
    """A strong ETag for a JSON document, keyed (HMAC-SHA-256) with the state store's ETag key: the
    document holds secrets shown as ``REDACTED``, and an unkeyed hash of it let whoever reads the ETag
    test guesses of a short one offline."""
    return '"' + hmac.new(key, json.dumps(document, sort_keys=True).encode(), hashlib.sha256).hexdigest()[:20] + '"'


async def compared(applied: Overlay, stored: Overlay) -> Literal["same", "newer", "diverged"]:
    """:func:`~.overlay.compare_states`, in a thread when it must compare two copies of one revision whole
    (a 16 MB state, read again from a store that parses each read: seconds on the event loop)."""
    if stored is applied or (stored.epoch, stored.revision) != (applied.epoch, applied.revision):
        return compare_states(applied, stored)
    return await asyncio.to_thread(compare_states, applied, stored)


class StoreSync:
    """One gateway run on the stored changes: started, kept on the store's latest state, stopped.

    :class:`~.service.Manager` makes its changes on it; its arguments are documented there.
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
        self._change_lock = asyncio.Lock()  # this worker's changes, one at a time (see Manager._change)
        self._saved: Overlay | None = None  # the last state this worker's changes saved
        self._validated: list[tuple[Overlay, GatewayConfig]] = []  # newest first, VALIDATED_KEPT at most
        self._apis = ValidatedApis()  # the overlay's APIs validated under self.gate, not validated again
        # The last state this worker could not run, and why: not validated again at each poll (a second
        # of CPU at 1,000 APIs), nor logged again (a traceback a poll).
        self._cannot_run: tuple[Overlay, list[str]] | None = None
        self._reported: Overlay | None = None  # the last of them logged
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
            cause = exc.__cause__ or exc
            shown = getattr(self.store, "shown_url", None)
            if shown is None:  # a file: the cause names it and what is wrong with it
                raise Unavailable("cannot read the stored changes") from cause
            # A store on a server: named (no password) and why, as the data plane's store is at start-up.
            raise Unavailable(f"cannot read the stored changes from {shown}: {why(cause)}") from None
        try:
            merged = await asyncio.to_thread(self._merged, stored)
            with restricted(self.gate):
                problems = self._secret_problems(stored, merged)
            if problems:  # the file sends a secret now that an API changed here would take elsewhere
                raise ConfigError(problems)
            async with self._apply_lock:
                await self._install(stored)
        except ConfigError as exc:
            raise ConfigError(
                ["the stored changes do not fit the configuration file:", *exc.problems, self._way_back()]
            ) from None
        await self.bus.start(self._on_command)
        self._poller = asyncio.create_task(self._poll(), name="management-poll")
        self._sampling = asyncio.create_task(self.watch.sampler.run(), name="management-series")
        self.started = True

    def _way_back(self) -> str:
        """How the operator starts again when the stored changes do not fit (nothing else can: the
        management API that would change them starts with the gateway)."""
        where = getattr(self.store, "location", None)
        return (
            "to start: change the configuration file so that they fit, or take what does not fit out of the "
            f"stored changes{f' ({where})' if where else ''}: docs/management.md#when-the-stored-changes-do-not-fit"
        )

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
                await stop_task(task)  # a cancellation lost in a poll's send: the poller polled on, stop waited
        await self.bus.aclose()
        await self.store.aclose()

    async def sync(self) -> None:
        """Apply the store's latest state if it is not the one this worker runs (see :meth:`_apply`)."""
        latest = await self.store.load()
        if await compared(self.overlay, latest) != "same":
            await self._apply(latest)

    async def _apply(self, overlay: Overlay) -> None:
        """Run ``overlay`` if it succeeds the state this worker runs, and close what its revisions asked to
        drain; if the store went back (:func:`~.overlay.compare_states`), adopt its state, whatever its revision."""
        async with self._apply_lock:
            step = await compared(self.overlay, overlay)
            if step == "diverged":  # or read before a revision this worker applied meanwhile: ask the store again
                overlay = await self.store.load()
                step = await compared(self.overlay, overlay)
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
            try:
                await self._install(overlay)
            except ConfigError as exc:
                raise self._refused(overlay, exc.problems) from None
            if step == "diverged":
                self._etag_key = await self._read_etag_key()  # an emptied store makes a new one
            self._drain(drains, overlay.revision)

    async def _install(self, overlay: Overlay) -> None:
        """Run ``overlay``; its drains are done here from now on (carried out by the caller, or, for a state
        taken as it is — at start, or adopted after the store went back — past events not to replay)."""
        config = await asyncio.to_thread(self._merged, overlay)  # off the event loop: its connections go on
        changed = await self.gateway.apply_config(config)
        self.overlay = overlay
        drained = self._drained
        for revision in overlay.drains:
            drained[overlay.epoch, revision] = None
        while len(drained) > DRAIN_REMEMBERED:
            del drained[next(iter(drained))]
        if changed:
            logger.info("applied management revision %d: API(s) %s changed", overlay.revision, ", ".join(changed))

    def _merged(self, overlay: Overlay) -> GatewayConfig:
        """``merge(self.base, overlay)``, validated once (``ConfigError``): a change validated its new state,
        this worker installs it, the next change reads it back; each validated the whole configuration
        again (at 1,000 APIs, seconds each, on the event loop). CPU-bound: call it in a thread."""
        for known, config in self._validated:
            if known is overlay or known == overlay:
                return config
        failed = self._cannot_run
        if failed is not None and (failed[0] is overlay or failed[0] == overlay):
            raise ConfigError(failed[1])
        try:
            with restricted(self.gate), checks_only():  # the stored changes may load only what the operator allowed
                config = validate(self.base, overlay, known=self._apis)  # problems name APIs: indexes mean nothing
        except ConfigError as exc:
            self._cannot_run = (overlay, exc.problems)
            raise
        self._remember(overlay, config)
        return config

    def _refused(self, overlay: Overlay, problems: list[str]) -> CannotRun:
        """A store's state that this worker's configuration does not fit (another worker's file accepted
        it: a rolling deploy, plugins or allowed modules that differ): logged once per state, at ERROR."""
        if self._reported is not overlay and self._reported != overlay:
            self._reported = overlay
            logger.error(
                "management: this worker cannot run %s, saved in the state store by another worker: its own "
                "configuration does not fit it (%s); it keeps serving %s until the store or its configuration "
                "changes",
                overlay.describe(), printable("; ".join(problems)), self.overlay.describe(),
            )  # fmt: skip
        return CannotRun(
            f"this worker cannot run {overlay.describe()}, saved in the state store: its configuration does not fit "
            f"it (another worker's configuration accepted it); it serves {self.overlay.describe()}",
            problems,
        )

    def _remember(self, overlay: Overlay, config: GatewayConfig) -> None:
        """Keep ``config`` as ``overlay``'s validated merge (replaced whole: threads read it meanwhile)."""
        self._apis.learn(overlay, config)
        self._validated = [(overlay, config), *(kept for kept in self._validated if kept[0] is not overlay)][
            :VALIDATED_KEPT
        ]

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
        refused: tuple[str, int, str] | None = None  # the store's version whose state this worker cannot run
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                version = epoch, revision, save = await self._stored_version()
                # A save token this worker has not caught up with may be a state that reuses its
                # (epoch, revision): restored from an older copy, then changed by a host that saw it.
                stale = (epoch, revision) != (self.overlay.epoch, self.overlay.revision) or save != self._seen_save
                if stale and version != refused:
                    await self.sync()
                    self._seen_save = save
            except CannotRun:  # logged once; the state is read again once the store's version changes
                refused = version
                continue
            except Unavailable as exc:
                if not unavailable:
                    logger.warning("management: cannot read the state store (%s); retrying", exc.__cause__ or exc)
                unavailable = True
                continue
            except Exception:
                logger.exception("management: cannot read the state store")
                continue
            if unavailable:
                logger.info("management: the state store answers again")
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
        """APIs changed here that would take a credential of the file's to a host the operator did not name,
        or present a client certificate of the file's where the file does not.

        An API is changed here when it is defined here or listed by a product created here: that
        product's policies (a ``set-backend-service``, say) run for it too.
        """
        changed = {name for name, document in overlay.apis.items() if document is not None}
        changed |= {name for product in merged.products if product.name in overlay.products for name in product.apis}
        secrets = secret_host_problems(self.base, merged, changed, self.secret_hosts, subject)
        return secrets + certificate_host_problems(self.base, merged, changed, subject)

    async def _on_command(self, command: Command) -> Command | None:
        op = command.get("op")
        if op in ("reload", "resync"):
            try:
                await self.sync()
            except CannotRun as exc:  # answered at once: the worker that saved the change tells its client
                return {"revision": self.overlay.revision, "cannot_run": exc.problems}
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
            gate.files |= {f for f in (upstream.ca_bundle, upstream.client_cert, upstream.client_key) if f is not None}
            if upstream.client_key_password_env is not None:
                gate.key_passwords.add(upstream.client_key_password_env)
    gate.modules |= allowed
    gate.record = False
    return gate


__all__ = ["DRAIN_REMEMBERED", "VALIDATED_KEPT", "StoreSync", "compared", "etag", "operator_gate"]
