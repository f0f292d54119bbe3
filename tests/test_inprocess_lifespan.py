"""The in-process upstream apps' lifespans in process (Starlette TestClient runs the gateway's lifespan).

The end-to-end behaviour, under ``run`` and ``uvicorn``, is ``test_e2e_inprocess_lifespan``'s; here the edges:
the application the gateway wraps is not started twice, an app added by ``apply_config`` while running is
started then, a bare app that returns is tolerated, and a shutdown that never answers is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.upstream import inprocess_lifespan
from support.apps import echo_app


def _stateful(events: list[str], greeting: str) -> Starlette:
    """A Starlette app whose lifespan sets ``greeting`` in its state; its WebSocket route sends it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append(f"{greeting} startup")
        yield {"greeting": greeting}
        events.append(f"{greeting} shutdown")

    async def hello(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(getattr(websocket.state, "greeting", "no state"))
        await websocket.close()

    return Starlette(routes=[WebSocketRoute("/ws/{room}", hello)], lifespan=lifespan)


def _api(name: str, app: Any) -> dict[str, Any]:
    return {"name": name, "path": f"/{name}/{{room}}", "upstreams": [{"app": app, "path": "/ws/a"}]}


def test_the_wrapped_application_named_as_an_upstream_is_started_once() -> None:
    """The server runs the wrapped app's lifespan; the gateway does not run it again as an upstream's."""
    events: list[str] = []
    app = _stateful(events, "hello")
    gateway = WebSocketGateway(app, config={"apis": [_api("own", app), _api("router", app.router)]})
    with TestClient(gateway) as client:
        for name in ("own", "router"):
            with client.websocket_connect(f"/{name}/a") as ws:
                assert ws.receive_text() == "hello"  # the server's state, which the wrapped app's lifespan set
    assert events == ["hello startup", "hello shutdown"]


def test_an_app_applied_while_running_is_started_then() -> None:
    """The management API's change (``apply_config``) names a new app: its lifespan starts before its first client."""
    events: list[str] = []
    first, later = _stateful(events, "first"), _stateful(events, "later")
    gateway = WebSocketGateway(echo_app, config={"apis": [_api("first", first)]})
    with TestClient(gateway) as client:
        assert client.portal is not None  # inside the with: the lifespan runs
        client.portal.call(gateway.apply_config, {"apis": [_api("first", first), _api("later", later)]})
        with client.websocket_connect("/later/a") as ws:
            assert ws.receive_text() == "later"
        assert events == ["first startup", "later startup"]
    assert sorted(events[2:]) == ["first shutdown", "later shutdown"]


def test_an_app_returning_from_its_lifespan_is_served_without_one(caplog: pytest.LogCaptureFixture) -> None:
    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "served"})
            await send({"type": "websocket.close", "code": 1000})

    gateway = WebSocketGateway(echo_app, config={"apis": [_api("bare", bare)]})
    with caplog.at_level(logging.INFO), TestClient(gateway) as client, client.websocket_connect("/bare/a") as ws:
        assert ws.receive_text() == "served"
    assert "(API bare) does not support lifespan (it returned without answering); served without one" in caplog.text


def test_a_shutdown_never_answered_is_cancelled_after_the_bound(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inprocess_lifespan, "SHUTDOWN_TIMEOUT", 0.2)
    ended: list[str] = []

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown, never answered
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    gateway = WebSocketGateway(echo_app, config={"apis": [_api("stuck", stuck)]})
    with caplog.at_level(logging.WARNING), TestClient(gateway):
        pass
    assert ended == ["cancelled"]
    assert "in-process upstream asgi:stuck did not end its lifespan in 0.2 s: cancelled" in caplog.text


def test_a_start_up_that_takes_long_is_named_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway waits for an app's start-up as uvicorn waits for its own app's, and says so past
    ``STARTUP_NOTICE``: an app written for WebSocket scopes that reads on past ``lifespan.startup`` never
    answers, and the gateway's start-up hung without a word."""
    monkeypatch.setattr(inprocess_lifespan, "STARTUP_NOTICE", 0.05)

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await echo_app(scope, receive, send)
        await receive()
        await asyncio.sleep(0.3)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    gateway = WebSocketGateway(echo_app, config={"apis": [_api("slow", slow)]})
    with caplog.at_level(logging.WARNING, logger=inprocess_lifespan.__name__), TestClient(gateway):
        pass
    lines = [r.getMessage() for r in caplog.records if "has not answered its lifespan start-up" in r.getMessage()]
    assert len(lines) == 1 and "(API slow)" in lines[0], lines


APP_TEXT = "db down\nCRITICAL: forged\x1b[31m password=hunter2"
"""An app's failure message with a line break, a terminal escape and a credential pair."""


def test_an_apps_failure_messages_are_redacted_and_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """The app's text in ``lifespan.*.failed`` is redacted as an exception's message is, and escaped in the
    gateway's own lines (a change's start-up failure, a shutdown failure): before, the password was in
    all three and the two lines broke in two, the second a forged CRITICAL line."""

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": APP_TEXT})

    async def failing_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": APP_TEXT})

    failure = inprocess_lifespan.AppStartupFailed("api", "asgi:failing", APP_TEXT)  # what uvicorn logs at exit
    assert "hunter2" not in str(failure) and "password=REDACTED" in str(failure)
    gateway = WebSocketGateway(echo_app, config={"apis": [_api("down", failing_shutdown)]})
    with caplog.at_level(logging.WARNING, logger=inprocess_lifespan.__name__), TestClient(gateway) as client:
        assert client.portal is not None
        client.portal.call(gateway.apply_config, {"apis": [_api("down", failing_shutdown), _api("late", failing)]})
    lines = [r.getMessage() for r in caplog.records if "failed its lifespan" in r.getMessage()]
    assert len(lines) == 2, lines
    for line in lines:
        assert "\n" not in line and "\x1b" not in line and "hunter2" not in line, line
        assert "db down\\nCRITICAL: forged\\x1b[31m password=REDACTED" in line, line


def test_a_change_naming_an_app_whose_start_up_hangs_is_applied_after_the_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``apply_config`` (a management API change) waited for a new app's start-up for ever, and every later
    change behind it; now ``STARTUP_NOTICE`` seconds at most, an ERROR, and the app gets its state once it answers."""
    monkeypatch.setattr(inprocess_lifespan, "STARTUP_NOTICE", 0.1)
    monkeypatch.setattr(inprocess_lifespan, "SHUTDOWN_TIMEOUT", 0.5)
    database_up = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": scope["state"].get("greeting", "no state")})
            await send({"type": "websocket.close", "code": 1000})
            return
        await receive()
        await database_up.wait()
        scope["state"]["greeting"] = "late"
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async def change(gateway: WebSocketGateway) -> None:
        await asyncio.wait_for(gateway.apply_config({"apis": [_api("slow", slow)]}), 5)

    gateway = WebSocketGateway(echo_app, config={"apis": []})
    with caplog.at_level(logging.ERROR, logger=inprocess_lifespan.__name__), TestClient(gateway) as client:
        assert client.portal is not None
        client.portal.call(change, gateway)  # before: TimeoutError
        with client.websocket_connect("/slow/a") as ws:
            assert ws.receive_text() == "no state"
        client.portal.call(database_up.set)
        client.portal.call(asyncio.sleep, 0.05)
        with client.websocket_connect("/slow/a") as ws:
            assert ws.receive_text() == "late"
    assert "asgi:slow (API slow) has not answered its lifespan start-up in 0.1 s" in caplog.text


def test_a_start_up_failing_after_a_changes_bound_is_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A new app's start-up no longer waited for that then fails: before, nothing said so."""
    monkeypatch.setattr(inprocess_lifespan, "STARTUP_NOTICE", 0.1)
    database_down = asyncio.Event()

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await database_down.wait()
        await send({"type": "lifespan.startup.failed", "message": APP_TEXT})

    async def change(gateway: WebSocketGateway) -> None:
        await asyncio.wait_for(gateway.apply_config({"apis": [_api("late", failing)]}), 5)
        database_down.set()
        await asyncio.sleep(0.05)

    gateway = WebSocketGateway(echo_app, config={"apis": []})
    with caplog.at_level(logging.ERROR, logger=inprocess_lifespan.__name__), TestClient(gateway) as client:
        assert client.portal is not None
        client.portal.call(change, gateway)
    lines = [r.getMessage() for r in caplog.records if "asgi:failing failed its lifespan start-up" in r.getMessage()]
    assert lines == [
        "in-process upstream asgi:failing failed its lifespan start-up: db down\\nCRITICAL: forged\\x1b[31m "
        "password=REDACTED; its connections are served without its lifespan state"
    ], caplog.text
