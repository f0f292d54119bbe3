"""The in-process upstream apps' own ASGI lifespans: the gateway is their server.

A server runs an app's lifespan before serving it, and gives each connection a copy of the state its
start-up left in ``scope["state"]``. Each distinct app (one object, however many APIs name it) gets
its lifespan once per :class:`~asgi_ws_gateway.WebSocketGateway`, in the gateway's own start-up:

* an app that does not support lifespan (raises, or returns without answering, as Django's handler
  does) is served without one, as the ASGI spec asks of servers (one INFO line);
* ``lifespan.startup.failed`` fails the gateway's start-up (:class:`AppStartupFailed`), naming the
  API and the app, after the apps started before it were shut down;
* at shutdown, after the gateway's connections were drained, every started app is sent
  ``lifespan.shutdown`` and they get :data:`SHUTDOWN_TIMEOUT` seconds, together, to answer; one
  still running then is cancelled.

An app first named by a configuration applied after start-up (the management API, ``apply_config``)
is started then; its failure cannot undo a change other workers apply too, so it is logged at ERROR
and the app is served without its state, as before this module. The change waits :data:`STARTUP_NOTICE`
seconds at most for it (an ERROR then): one still starting is served without its state until it answers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from .._types import ASGIApp, Message, Scope
from ..errors import GatewayError
from ..redact import printable, redact_free_text

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0
"""Seconds the started apps get, all together, to answer ``lifespan.shutdown`` before they are cancelled."""


STARTUP_NOTICE = 5.0
"""Seconds an app's lifespan start-up may take before a WARNING says the gateway's start-up waits for it."""


class AppStartupFailed(GatewayError):
    """An in-process upstream app answered its lifespan start-up with ``lifespan.startup.failed``."""

    def __init__(self, api: str, app: str, message: str) -> None:
        # The app's own text (Starlette's is a traceback, quoting its exception): redacted as an exception's
        # message is; escaped where it is logged (uvicorn's logger escapes its lines, the gateway's do not).
        message = redact_free_text(message)
        self.api, self.app, self.message = api, app, message
        super().__init__(
            f"API {api}: in-process upstream {app} failed its lifespan start-up: {message or '(no message)'}"
        )


_ANSWERS = frozenset(
    f"lifespan.{step}.{outcome}" for step in ("startup", "shutdown") for outcome in ("complete", "failed")
)


@dataclass(eq=False)
class _Lifespan:
    """One app's lifespan: the task running it and the two channels of its messages."""

    label: str
    state: dict[str, Any] = field(default_factory=dict)
    to_app: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    from_app: asyncio.Queue[Message | None] = field(default_factory=asyncio.Queue)  # None: the app returned
    task: asyncio.Task[None] | None = None
    supported: bool = False  # it answered lifespan.startup.complete: its state is its connections'
    answered: str | None = None  # the type of the last message it sent
    unsupported: str = "it returned without answering"  # or the exception it raised before answering
    late: bool = False  # its start-up was no longer waited for (a change's bound): its answer is logged here

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        try:
            await app(scope, self.to_app.get, self._send)
        except Exception as exc:
            if self.answered is None:  # Django's handler raises on a lifespan scope: unsupported, for a server
                self.unsupported = printable(f"{type(exc).__name__}: {str(exc)[:200]}", quote=False)
            elif not self.answered.endswith(".failed"):  # a failure it reported is reported by its message
                logger.exception("in-process upstream %s raised in its lifespan", self.label)
        finally:
            self.from_app.put_nowait(None)

    async def _send(self, message: Message) -> None:
        if message["type"] not in _ANSWERS:  # as uvicorn: an app taking the scope for a connection is told at once
            raise RuntimeError(f"Expected ASGI message 'lifespan.*.complete' or 'lifespan.*.failed', but got "
                               f"{str(message['type'])[:50]!r}")  # fmt: skip
        self.answered = message["type"]
        if self.late and message["type"] == "lifespan.startup.failed":
            failure = printable(redact_free_text(str(message.get("message") or "(no message)")), quote=False)
            logger.error("in-process upstream %s failed its lifespan start-up: %s; its connections are served "
                         "without its lifespan state", self.label, failure)  # fmt: skip
        self.supported = self.supported or message["type"] == "lifespan.startup.complete"
        self.from_app.put_nowait(message)


class AppLifespans:
    """The lifespans of a gateway's in-process upstream apps, each app's once (see the module's docstring)."""

    def __init__(self) -> None:
        self._apps: dict[int, tuple[ASGIApp, _Lifespan]] = {}  # by id(app): an app need not be hashable
        self.running = False  # between the gateway's start-up and its shutdown

    def state_of(self, app: ASGIApp) -> dict[str, Any] | None:
        """The state ``app``'s lifespan start-up left, or None when it has none (not run, unsupported)."""
        entry = self._apps.get(id(app))
        return entry[1].state if entry is not None and entry[0] is app and entry[1].supported else None

    async def start(
        self, apps: list[tuple[str, str, ASGIApp]], asgi: dict[str, str] | None = None, *, bound: float | None = None
    ) -> None:
        """Start the lifespan of each app of ``apps`` (API name, label, app) not started yet, in order.

        ``bound``: seconds an app's start-up is waited for at most (default: as long as it takes); one still
        starting then goes on, its connections served without its state until it answers.

        Raises:
            AppStartupFailed: an app failed its start-up; those this call started are shut down first.
        """
        self.running = True
        started: list[_Lifespan] = []
        for api, label, app in apps:
            if id(app) in self._apps:
                continue
            lifespan = _Lifespan(label)
            self._apps[id(app)] = (app, lifespan)
            scope = {"type": "lifespan", "asgi": asgi or {"version": "3.0", "spec_version": "2.0"},
                     "state": lifespan.state}  # fmt: skip
            lifespan.task = asyncio.create_task(lifespan.run(app, scope))
            lifespan.to_app.put_nowait({"type": "lifespan.startup"})
            try:
                answer = await (
                    _answer(lifespan, api) if bound is None else asyncio.wait_for(lifespan.from_app.get(), bound)
                )
            except TimeoutError:
                logger.error("in-process upstream %s (API %s) has not answered its lifespan start-up in %g s: its "
                             "connections are served without its lifespan state until it does",
                             label, api, bound)  # fmt: skip
                lifespan.late = True
                started.append(lifespan)  # shut down (or cancelled) with the others
                continue
            if answer is not None and answer["type"] == "lifespan.startup.failed":
                await _stop([*started, lifespan])
                stopped = (*started, lifespan)
                self._apps = {key: entry for key, entry in self._apps.items() if entry[1] not in stopped}
                raise AppStartupFailed(api, label, str(answer.get("message") or ""))
            if lifespan.supported:
                started.append(lifespan)
            else:  # the ASGI spec: the server continues without the app's lifespan
                why = lifespan.unsupported if answer is None else f"it answered {answer['type']!r}"
                logger.info("in-process upstream %s (API %s) does not support lifespan (%s); served without one",
                            label, api, why)  # fmt: skip
                lifespan.task.cancel()  # one that took the lifespan for a connection would wait on it for ever

    async def start_later(self, apps: list[tuple[str, str, ASGIApp]]) -> None:
        """:meth:`start` for a configuration applied while running: a failure is logged, not raised."""
        if not self.running:
            return  # the gateway's start-up starts what its configuration then names
        try:  # bounded: a change (the management API's, every one after it) waited for a hung start-up for ever
            await self.start(apps, bound=STARTUP_NOTICE)
        except AppStartupFailed as exc:
            logger.error("%s; its connections are served without its lifespan state", printable(str(exc), quote=False))

    async def shutdown(self) -> None:
        """Shut every started app down, together, :data:`SHUTDOWN_TIMEOUT` seconds at most; then cancel those left."""
        self.running = False
        lifespans = [lifespan for _, lifespan in self._apps.values()]
        self._apps = {}  # the same gateway may be started again (and its apps with it)
        await _stop(lifespans)


async def _answer(lifespan: _Lifespan, api: str) -> Message | None:
    """The app's answer to ``lifespan.startup``, waited for as long as it takes (as uvicorn waits for its
    app's), with a WARNING after :data:`STARTUP_NOTICE` seconds: an app written for WebSocket scopes that
    reads on past a message it does not know never answers, and the gateway's start-up would hang silently."""
    answer = asyncio.ensure_future(lifespan.from_app.get())
    done, _ = await asyncio.wait([answer], timeout=STARTUP_NOTICE)
    if not done:
        logger.warning("in-process upstream %s (API %s) has not answered its lifespan start-up in %g s; the gateway "
                       "waits for it (an app for WebSocket scopes only should return or raise on a 'lifespan' scope)",
                       lifespan.label, api, STARTUP_NOTICE)  # fmt: skip
    return await answer


async def _stop(lifespans: list[_Lifespan]) -> None:
    timeout = SHUTDOWN_TIMEOUT  # read now: a test shortens it

    async def stop(lifespan: _Lifespan) -> None:
        if lifespan.supported:
            lifespan.to_app.put_nowait({"type": "lifespan.shutdown"})
            answer = await lifespan.from_app.get()
            if answer is not None and answer["type"] == "lifespan.shutdown.failed":
                text = redact_free_text(str(answer.get("message") or "")[:500])  # the app's own, as at start-up
                logger.warning("in-process upstream %s failed its lifespan shutdown: %s",
                               lifespan.label, printable(text, quote=False))  # fmt: skip
        assert lifespan.task is not None
        await lifespan.task

    tasks = [asyncio.create_task(stop(lifespan)) for lifespan in lifespans if lifespan.task is not None]
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=timeout)
    for lifespan in lifespans:
        task = lifespan.task
        if late and task is not None and not task.done():
            logger.warning("in-process upstream %s did not end its lifespan in %g s: cancelled", lifespan.label,
                           timeout)  # fmt: skip
            task.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, *(lifespan.task for lifespan in lifespans if lifespan.task), return_exceptions=True)


__all__ = ["SHUTDOWN_TIMEOUT", "STARTUP_NOTICE", "AppLifespans", "AppStartupFailed"]
