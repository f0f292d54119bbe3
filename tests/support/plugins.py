"""Plugins for the plugin tests: a module written to a directory, and the example plugin's behaviour."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

from support.clients import connect, expect_status

PREFIX = "gate_plugin_"
"""Modules :func:`write_plugin` names start with this."""

GATE_PLUGIN = '''
"""A test plugin: the tenant-gate handshake policy and the teapot message policy."""

from pydantic import BaseModel, Field

from asgi_ws_gateway.errors import CloseConnection
from asgi_ws_gateway.policies import deny, register_policy
from asgi_ws_gateway.policies.message_base import register_message_policy

MARKER.write_text(MARKER.read_text() + "imported\\n") if MARKER.exists() else MARKER.write_text("imported\\n")


@register_policy("tenant-gate")
class TenantGate:
    class Settings(BaseModel):
        model_config = {"extra": "forbid"}
        header: str = "x-tenant"
        status: int = Field(default=451, ge=400, le=599)

    def __init__(self, settings, env):
        self.header, self.status = settings.header, settings.status

    async def apply(self, context):
        if context.request.header(self.header) is None:
            raise deny(self.status, "a tenant is required", reason="no_tenant")


@register_message_policy("teapot")
class Teapot:
    class Settings(BaseModel):
        model_config = {"extra": "forbid"}
        word: str = Field(default="tea", min_length=1)

    def __init__(self, settings, env):
        self.word = settings.word

    def attach(self, connection, direction):
        word = self.word

        def check(message):
            if message.is_text and word in message.data:
                raise CloseConnection(4418, "teapot", "I am a teapot")

        return check
'''


def write_plugin(directory: Path, source: str = GATE_PLUGIN, *, name: str | None = None) -> str:
    """Write ``source`` as a module in ``directory`` (a fresh name unless given); return its name.

    ``MARKER`` in the source is a file beside it that records each import.
    """
    name = name or f"{PREFIX}{uuid.uuid4().hex[:10]}"
    marker = directory / f"{name}.imports"
    header = f"from pathlib import Path\nMARKER = Path({str(marker)!r})\n"
    (directory / f"{name}.py").write_text(header + textwrap.dedent(source))
    return name


SOONER_RETRY = """
from asgi_ws_gateway.server import supervisor

supervisor.REPLACEMENT_RETRY = {seconds!r}
"""


def sooner_retry(directory: Path, seconds: float) -> str:
    """A plugin (its module written in ``directory``; its name returned) that sets the first wait before a
    failed replacement's place is tried again (``supervisor.REPLACEMENT_RETRY``, 10 s) to ``seconds``, in
    the process ``run`` supervises its workers from (it imports the configuration's plugins): a test waits
    that much less for the try again, whose lines and doubling it checks, not the wait's length."""
    name = "sooner_retry"
    (directory / f"{name}.py").write_text(SOONER_RETRY.format(seconds=seconds))
    return name


def imports_of(directory: Path, name: str) -> int:
    """How many times the plugin ``name`` written by :func:`write_plugin` was imported."""
    marker = directory / f"{name}.imports"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


async def assert_example_plugin_works(url: str) -> None:
    """example_app/gateway.yaml's chat API through its plugin: tenants (451) and shouting (dropped)."""
    status, headers, body = await expect_status(url, additional_headers={"X-Tenant": "initech"})
    assert (status, headers["content-type"]) == (451, "application/problem+json")
    assert json.loads(body)["detail"] == "this tenant is not served here"
    async with await connect(url, additional_headers={"X-Tenant": "acme"}) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"  # the room echoes to its members
        await ws.send("WHY ARE WE ALL SHOUTING IN HERE")
        error = json.loads(await ws.recv())
        assert (error["type"], error["error"], error["policy"]) == ("error", "shouting", "no-shouting")
        await ws.send("Quiet again")
        assert await ws.recv() == "Quiet again"
    async with await connect(url) as ws:  # allow_missing: a browser sends no tenant
        await ws.send("hi")
        assert await ws.recv() == "hi"
