"""Rewrites of the upstream request: headers, query parameters, path, backend.

Values are templates rendered against the context when the policy runs (``X-User-Id: {jwt.sub}``);
the change is applied to the upstream request of every backend tried. Values inserted into a path
or a URL are percent-encoded; control characters never reach a header.

A template may write a client's value many times (``"{header.x-a}" * 680`` turned an 8 KB header into
43 MB sent upstream per handshake): each renders within the upstream's limits (a header line 8 KiB with
its name, a URL or a value in it 8 KiB) and stops there, the handshake refused (431, 400) before anything is
built or any backend is contacted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Literal
from urllib.parse import quote

from pydantic import Field, ValidationInfo, field_validator

from ..config.checks import configured_url_problem
from ..config.fields import is_token
from ..config.picked_hosts import picked_authority
from ..handshake.context import HandshakeContext
from ..templates import Reference, Template, TemplateTooLarge, to_text
from ..upstream.checks import (
    MAX_UPSTREAM_LINE,
    MAX_UPSTREAM_URL,
    bad_request,
    header_too_large,
    header_value_room,
    url_too_long,
)
from ..upstream.headers import HOP_BY_HOP
from .base import PolicyEnv, PolicySettings, client_chosen, register_policy, template

ExistsAction = Literal["override", "skip", "append", "delete"]
# Template namespaces whose values come straight from the client's request.
_CLIENT_NAMESPACES = frozenset({"header", "query", "cookie", "path", "client", "request"})
REPEATS_WARNED = 3
"""Times one template may write a value the client chooses before :func:`warn_repeats` warns."""


def warn_repeats(templates: list[Template], env: PolicyEnv, field: tuple[str | int, ...], bound: str) -> None:
    """Warn when a template writes a value the client chooses :data:`REPEATS_WARNED` times or more: the
    client makes each as long as it likes, and a few long ones pass ``bound`` (the request refused)."""
    for compiled in templates:
        counts: dict[Reference, int] = {}
        for ref in compiled.references:
            if client_chosen(ref):
                counts[ref] = counts.get(ref, 0) + 1
        repeated = max(counts.items(), key=lambda item: item[1], default=None)
        if repeated is not None and repeated[1] >= REPEATS_WARNED:
            env.warn(field, f"writes {{{repeated[0]}}} {repeated[1]} times: the client makes it as long as it "
                            f"likes, and a long one renders past {bound}")  # fmt: skip
            return


def _header_name(value: str) -> str:
    # An RFC 9110 token, as the request check holds every header it sends to: ``X-A\x00`` or ``X-é``
    # passed a list of forbidden separators here, and every handshake was then refused 400 as the client's.
    if is_token(value) is None:
        raise ValueError(f"{value!r} is not a header name (an RFC 9110 token: letters, digits and !#$%&'*+-.^_`|~)")
    if value.lower() in HOP_BY_HOP:
        raise ValueError(f"'{value}' belongs to the WebSocket handshake itself and cannot be set")
    return value


class SetHeaderSettings(PolicySettings):
    """``set-header``: set a header of the upstream request."""

    header: str = Field(max_length=256, description="Header name (at most 256 characters).")
    value: str = Field(
        default="", max_length=8192, description="Template of the value, e.g. '{jwt.sub}' (at most 8192 characters)."
    )
    exists_action: ExistsAction = Field(
        default="override", description="override, skip (keep an existing value), append, or delete."
    )

    _name = field_validator("header")(_header_name)
    _value = field_validator("value")(template)

    @field_validator("value")
    @classmethod
    def _sendable(cls, value: str) -> str:
        """The value's own text (outside its ``{...}`` and in their defaults) must be what a header carries:
        ``a\r\nX-B: 1`` went upstream as ``aX-B: 1`` (control characters are stripped from rendered values),
        and ``caf€`` made every handshake a 400 blamed on the client."""
        for text in Template(value).constant_texts():
            if (bad := _NOT_IN_HEADER.search(text)) is not None:
                raise ValueError(f"{bad.group()!r} cannot be sent in an HTTP header (printable Latin-1 and tabs only)")
        return value

    @field_validator("value")
    @classmethod
    def _fits_a_line(cls, value: str, info: ValidationInfo) -> str:
        """The value's own text (outside its ``{...}``), with the name, must fit the one line an upstream reads:
        8,192 characters of value passed, made a line of 8,200 bytes, and every handshake was the upstream's
        431. Not quoted (it may be a credential): its length and the room the name leaves."""
        header = info.data.get("header")
        if not isinstance(header, str):
            return value  # the name was refused: that is the problem reported
        compiled = Template(value)
        written = len(compiled.render(_EMPTY))  # the text alone: each reference present and empty
        room = header_value_room(header)
        if written > room:
            size = f"{len(header) + written + 4} bytes" + ("" if compiled.is_constant else " at least")
            raise ValueError(
                f"the header line '{header}: ...' would take {size} with its CRLF; an upstream reads lines of at "
                f"most {MAX_UPSTREAM_LINE} bytes, which leaves the value {room} characters"
            )
        return value


class _Empty:
    """Every template value present and empty: a template renders its own text alone."""

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return ""


_EMPTY = _Empty()


_NOT_IN_HEADER = re.compile(r"[^\t\x20-\x7e\xa0-\xff]")
"""What a header value may not hold (RFC 9110 §5.5 field-vchar, SP and HTAB; obs-text as Latin-1)."""


@register_policy("set-header")
class SetHeader:
    Settings = SetHeaderSettings

    def __init__(self, settings: SetHeaderSettings, env: PolicyEnv) -> None:
        self.name = "set-header"
        self.header = settings.header
        self.value = Template(settings.value)
        self.action: ExistsAction = settings.exists_action
        self.room = header_value_room(self.header)
        warn_repeats([self.value], env, ("value",), f"{self.room} characters (refused, 431)")

    async def apply(self, context: HandshakeContext) -> None:
        value = None
        if self.action != "delete":
            try:
                value = self.value.render(context, limit=self.room)  # its line within an upstream's
            except TemplateTooLarge:
                raise header_too_large(self.header) from None
        context.upstream.set_header(self.header, value, self.action)


class RemoveHeaderSettings(PolicySettings):
    """``remove-header``: the upstream request goes without this header."""

    header: str = Field(description="Header name.")

    _name = field_validator("header")(_header_name)


@register_policy("remove-header")
class RemoveHeader:
    Settings = RemoveHeaderSettings

    def __init__(self, settings: RemoveHeaderSettings, env: PolicyEnv) -> None:
        self.name = "remove-header"
        self.header = settings.header

    async def apply(self, context: HandshakeContext) -> None:
        context.upstream.remove_header(self.header)


class SetQuerySettings(PolicySettings):
    """``set-query-parameter``: set a query parameter of the upstream URL."""

    parameter: str = Field(min_length=1, description="Parameter name (no control character).")
    value: str = Field(default="", description="Template of the value (its own text: no control character).")
    exists_action: ExistsAction = "override"

    _value = field_validator("value")(template)

    @field_validator("parameter")
    @classmethod
    def _name_without_controls(cls, value: str) -> str:
        return _without_controls(value)

    @field_validator("value")
    @classmethod
    def _value_without_controls(cls, value: str) -> str:
        """The value's own text (outside its ``{...}`` and in their defaults): percent-encoded when sent, a
        CR, LF or NUL the operator wrote is a mistake (a value pasted with its line end), not a value."""
        for text in Template(value).constant_texts():
            _without_controls(text)
        return value


def _without_controls(text: str) -> str:
    """``text`` itself; a ``ValueError`` naming its first control character (C0, DEL, C1: U+0085 is a line
    break to some readers) or a lone surrogate (no UTF-8 to percent-encode it as)."""
    if (bad := _CONTROL.search(text)) is not None:
        raise ValueError(f"{bad.group()!r}: a control character has no place in an upstream URL")
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@register_policy("set-query-parameter")
class SetQueryParameter:
    Settings = SetQuerySettings

    def __init__(self, settings: SetQuerySettings, env: PolicyEnv) -> None:
        self.name = "set-query-parameter"
        self.parameter = settings.parameter
        self.value = Template(settings.value)
        self.action: ExistsAction = settings.exists_action
        warn_repeats([self.value], env, ("value",), f"the upstream URL's {MAX_UPSTREAM_URL} characters (refused, 400)")

    async def apply(self, context: HandshakeContext) -> None:
        value = None if self.action == "delete" else _url_part(self.value, context)
        context.upstream.set_query(self.parameter, value, self.action)


def _url_part(value: Template, context: HandshakeContext, escape: Callable[[str], str] | None = None) -> str:
    """``value`` rendered for the upstream URL: past :data:`MAX_UPSTREAM_URL` characters, refused (400)
    as the URL it would be part of is."""
    try:
        return value.render(context, escape, limit=MAX_UPSTREAM_URL)
    except TemplateTooLarge:
        raise url_too_long() from None


def _escape_path(text: str) -> str:
    return quote(text, safe="")


class RewriteUriSettings(PolicySettings):
    """``rewrite-uri``: replace the upstream path (for an in-process upstream, the path the app sees)."""

    template: str = Field(description="New path, optionally with query: '/rooms/{path.room}?tenant={jwt.tid}'.")
    copy_unmatched_params: bool = Field(
        default=True, description="Keep the request's query parameters that the template does not set."
    )

    @field_validator("template")
    @classmethod
    def _path(cls, value: str) -> str:
        template(value)
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        # The upstream URL's rules, on the text written around the placeholders (their values are
        # percent-encoded): ``/a\r\nX-B: 1``, ``/a b``, ``/a/../admin`` or ``/a#b`` was accepted, and
        # every handshake then refused 400 as if the client had sent it.
        compiled = Template(value)
        for text in compiled.constant_texts():  # a default's too: rendered only when its value is missing
            _without_controls(text)
        problem = configured_url_problem(
            value, in_process=True, render=lambda sample: compiled.render(_Sample(sample), _escape_path)
        )
        if problem is not None:
            raise ValueError(problem)
        # A default is written as it is (escaped as a value): ``{query.room|..}`` or ``{query.room|../admin}``
        # passed, and every handshake without the value was refused 400 as if the client had sent it.
        with_defaults = compiled.render(_Defaults(compiled), _escape_path)
        problem = configured_url_problem(with_defaults, in_process=True, render=lambda _: with_defaults)
        if problem is not None:
            raise ValueError(f"with its defaults (a value missing): {problem}")
        return value


@register_policy("rewrite-uri")
class RewriteUri:
    Settings = RewriteUriSettings

    def __init__(self, settings: RewriteUriSettings, env: PolicyEnv) -> None:
        self.name = "rewrite-uri"
        self.template = Template(settings.template)
        self.copy = settings.copy_unmatched_params

    async def apply(self, context: HandshakeContext) -> None:
        context.upstream.rewrite(_url_part(self.template, context, _escape_path), copy_unmatched_params=self.copy)


class SetBackendSettings(PolicySettings):
    """``set-backend-service``: connect to another host (network upstreams only); the path is kept."""

    base_url: str = Field(
        description="ws:// or wss:// base URL (a template of jwt, subscription, var and api values only), "
        "e.g. 'ws://chat-{jwt.region}:9000'."
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        template(value)
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws:// or wss:// URL")
        if "@" in re.split(r"[/?#]", value.partition("://")[2], maxsplit=1)[0]:
            # Refused at start-up, like an upstream URL's: the request check would refuse it per client.
            raise ValueError("must not carry credentials (user:password@); send them with a set-header policy")
        # The client must never choose where the gateway connects: only values it cannot forge.
        compiled = Template(value)
        unsafe = sorted({ref.namespace for ref in compiled.references} & _CLIENT_NAMESPACES)
        if unsafe:
            raise ValueError(f"must not use values the client sends ({', '.join(unsafe)}): they would pick the host")
        # The upstream URL's rules, on what the text written around the placeholders allows: a base
        # URL no value could make valid refused every handshake (400), or failed it (500).
        problem = configured_url_problem(value, render=lambda sample: compiled.render(_Sample(sample)))
        if problem is not None:
            raise ValueError(problem)
        if "?" in compiled.render(_Sample("41")):
            raise ValueError("must not have a query: the request's own is kept (set one with set-query-parameter)")
        return value


class _Sample:
    """Every value of a template as ``value``: how :meth:`SetBackendSettings._url` tries a base URL."""

    def __init__(self, value: str) -> None:
        self.value = value

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return self.value


class _Defaults:
    """Each value a template gives a default somewhere missing (its defaults written, its bare references
    empty), any other as ``41``."""

    def __init__(self, template: Template) -> None:
        written = Counter((ref.namespace, ref.path) for ref in template.references)
        written.subtract((ref.namespace, ref.path) for ref in template.references_without_default)
        self.missing = {key for key, defaults in written.items() if defaults > 0}

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return None if (namespace, path) in self.missing else "41"


@register_policy("set-backend-service")
class SetBackendService:
    Settings = SetBackendSettings

    def __init__(self, settings: SetBackendSettings, env: PolicyEnv) -> None:
        self.name = "set-backend-service"
        self.base_url = Template(settings.base_url)
        # A claim or a variable in the host or port: connected to under upstream_networks' rule for
        # picked hosts (the gateway's own host only where allow names it); the operator's host as before.
        picked = picked_authority(self.base_url)
        self.picked = picked.picked
        # A value in a label the template shares with its own text fills that label only (no dot).
        self.in_label = list(
            {str(ref): ref for ref in self.base_url.references if str(ref) in picked.in_label}.values()
        )

    async def apply(self, context: HandshakeContext) -> None:
        for ref in self.in_label:
            value = ref.resolve(context)
            if value is not None and "." in to_text(value):
                raise bad_request("a value would split a label of the upstream host (it holds a dot)")
        context.upstream.set_base_url(_url_part(self.base_url, context, _escape_path), picked=self.picked)


__all__ = [
    "REPEATS_WARNED",
    "RemoveHeader",
    "RewriteUri",
    "SetBackendService",
    "SetHeader",
    "SetQueryParameter",
    "warn_repeats",
]
