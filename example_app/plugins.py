"""The example's plugin: a handshake policy and a message policy of its own, usable in YAML.

``gateway.yaml`` names this module under ``plugins:``, so it is imported before the configuration
is validated, whether the gateway runs in the example's FastAPI app or under
``asgi-ws-gateway run example_app/gateway.yaml`` (every worker), and ``check``/``schema`` know
``require-tenant`` and ``no-shouting`` (docs/policies.md#plugins).
"""

from __future__ import annotations

from pydantic import Field

from asgi_ws_gateway.policies import (
    ConnectionContext,
    Direction,
    DropMessage,
    HandshakeContext,
    MessageHandler,
    PolicyEnv,
    PolicySettings,
    WsMessage,
    deny,
    register_message_policy,
    register_policy,
)


class RequireTenantSettings(PolicySettings):
    """``require-tenant``: the client names its tenant in a header."""

    header: str = Field(default="x-tenant", min_length=1, description="The request header naming the tenant.")
    tenants: list[str] | None = Field(default=None, description="The tenants admitted (default: any).")
    status: int = Field(default=403, ge=400, le=599, description="The refusal's HTTP status.")
    allow_missing: bool = Field(
        default=False, description="Admit a client that sends no tenant (browsers cannot set headers)."
    )


@register_policy("require-tenant")
class RequireTenant:
    """Refuses a handshake without an admitted tenant; the upstream gets it as ``X-Tenant``."""

    Settings = RequireTenantSettings

    def __init__(self, settings: RequireTenantSettings, env: PolicyEnv) -> None:
        self.name = "require-tenant"
        self.header = settings.header
        self.tenants = frozenset(settings.tenants) if settings.tenants is not None else None
        self.status = settings.status
        self.allow_missing = settings.allow_missing

    async def apply(self, context: HandshakeContext) -> None:
        tenant = context.request.header(self.header)
        if tenant is None:
            if self.allow_missing:
                return
            raise deny(self.status, f"the {self.header} header must name a tenant", reason="no_tenant")
        if self.tenants is not None and tenant not in self.tenants:
            raise deny(self.status, "this tenant is not served here", reason="unknown_tenant")
        context.variables["tenant"] = tenant  # {var.tenant} in later policies' templates
        context.upstream.set_header("X-Tenant", tenant)


class NoShoutingSettings(PolicySettings):
    """``no-shouting``: text messages with too many capital letters are dropped."""

    max_capitals: int = Field(default=10, ge=0, description="The most capital letters a text message may have.")


@register_message_policy("no-shouting")
class NoShouting:
    """Drops a shouted text message and tells its sender why; the connection stays open."""

    Settings = NoShoutingSettings

    def __init__(self, settings: NoShoutingSettings, env: PolicyEnv) -> None:
        self.name = "no-shouting"
        self.limit = settings.max_capitals

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
        limit = self.limit

        def check(message: WsMessage) -> None:  # a plain function: no coroutine per message
            data = message.data
            if isinstance(data, str) and sum(c.isupper() for c in data) > limit:
                raise DropMessage("shouting", f"more than {limit} capital letters")

        return check


__all__ = ["NoShouting", "NoShoutingSettings", "RequireTenant", "RequireTenantSettings"]
