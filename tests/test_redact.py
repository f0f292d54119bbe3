"""Redaction as pure logic: what a credential looks like, and the logging filter that applies it."""

from __future__ import annotations

import logging

import pytest

from asgi_ws_gateway import log_redaction, redact
from asgi_ws_gateway.log_redaction import RedactingFilter
from asgi_ws_gateway.redact import (
    REDACTED,
    credential_headers,
    patterns,
    printable,
    redact_headers,
    redact_path,
    redact_query,
    redact_text,
    redact_url,
)
from asgi_ws_gateway.redact import text as text_redaction

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def test_every_query_value_is_redacted_and_names_kept() -> None:
    """Values go, names and blank parameters stay, whatever the parameter is called."""
    assert redact_query("access_token=abc&room=1&flag&x=") == "access_token=REDACTED&room=REDACTED&REDACTED&x=REDACTED"
    assert redact_query(b"subscription-key=k%20y") == "subscription-key=REDACTED"
    assert redact_query("") == ""


def test_url_query_and_userinfo_password_redacted() -> None:
    assert redact_url("wss://user:pw@h:1/p/a?token=x#frag") == "wss://h:1/p/a?token=REDACTED"
    assert redact_url("ws://h/p") == "ws://h/p"


@pytest.mark.parametrize(
    "text",
    [
        f'127.0.0.1:1 - "WebSocket /chat?access_token={JWT}&x=1" 403',
        f"GET /chat?subscription-key=SECRET HTTP/1.1 and {JWT}",
        "< authorization: Bearer SECRET",
        "< Cookie: a=1; session=SECRET",
        "< Ocp-Apim-Subscription-Key: SECRET",
        "[('x-subscription-key', 'SECRET'), ('host', 'h')]",
        "[(b'authorization', b'Basic SECRET')]",
        f"sec-websocket-protocol: bearer.{JWT}",
        f"ws://up/rooms/1?token=SECRET is unreachable: [Errno 111] refused {JWT}",
    ],
)
def test_credentials_in_free_text_are_redacted(text: str) -> None:
    """Query values, credential headers (in log and repr forms) and JWTs, wherever they sit in a line."""
    redacted = redact_text(text)
    assert "SECRET" not in redacted
    assert JWT not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        "< AUTHORIZATION: Bearer SECRET",
        "x-Tenant-Subscription-KEY=SECRET",
        "x-quick-token: SECRET",  # a configured header: the quick check must know it too
        "< authorİzation: SECRET",  # not ASCII: the pattern folds İ to i, the quick check must not skip it
        "\u017fet-cookie: SECRET",  # long s: the pattern folds it to s
        "Cookie: SECRET for café",
        '127.0.0.1:5 - "WebSocket /chat" 101 chat closed by client with 1000, backend ws://up/x',
    ],
)
def test_the_quick_header_check_never_skips_what_the_pattern_redacts(text: str) -> None:
    """redact_text only skips the header pattern on text it cannot match (same result either way)."""
    redact.add_sensitive_headers(["X-Quick-Token"])
    by_pattern = text_redaction._HEADER_IN_TEXT.sub(patterns._redacted_header, text)
    assert redact_text(text) == by_pattern
    assert "SECRET" not in by_pattern


def test_harmless_text_is_unchanged() -> None:
    line = '127.0.0.1:5 - "WebSocket /chat" 101 chat closed by client with 1000, subscription gold'
    assert redact_text(line) == line


def test_configured_headers_are_added() -> None:
    """A configuration's token header is redacted once registered, in text and in header lists."""
    assert "T0K" in redact_text("x-my-token: T0K")
    redact.add_sensitive_headers(["X-My-Token"])
    assert redact_text("x-my-token: T0K") == f"x-my-token: {REDACTED}"
    assert redact_headers([("X-My-Token", "T0K"), ("Accept", "*/*")]) == [("X-My-Token", REDACTED), ("Accept", "*/*")]


def test_a_remembered_path_is_checked_again_once_header_names_are_added() -> None:
    """redact_path remembers a path redaction left unchanged only under the header names of that time."""
    path = "/ws/x-path-cache-hdr=T0K"  # no credential word: redact_free_text keeps it
    assert redact_path(path) == path
    assert redact_path(path) == path  # remembered
    redact.add_sensitive_headers(["X-Path-Cache-Hdr"])
    assert redact_path(path) == f"/ws/x-path-cache-hdr={REDACTED}"


def test_a_path_with_a_secret_is_redacted_every_time_and_never_remembered() -> None:
    for _ in range(2):
        assert redact_path(f"/ws/{JWT}") == f"/ws/{REDACTED}"
    assert f"/ws/{JWT}" not in text_redaction._unchanged


def test_the_remembered_paths_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_redaction, "_unchanged", {})
    for index in range(text_redaction._UNCHANGED_LIMIT + 1):
        redact_path(f"/ws/{index}")
    assert list(text_redaction._unchanged) == [f"/ws/{text_redaction._UNCHANGED_LIMIT}"]
    long = "/ws/" + "a" * text_redaction._UNCHANGED_LENGTH
    assert redact_path(long) == long
    assert long not in text_redaction._unchanged  # a client's long paths are not kept


def test_credential_headers_found_in_a_config_document() -> None:
    document = {"apis": [{"policies": [{"validate-jwt": {"token": [{"header": "X-A"}, {"query": "t"}]}}]}],
                "policies": [{"when": {"then": [{"validate-jwt": {"token": [{"header": "X-B"}]}}]}}]}  # fmt: skip
    assert credential_headers(document) == {"X-A", "X-B"}


def _record(
    msg: str, *args: object, name: str = "uvicorn.error", exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, exc_info)


def test_filter_redacts_arguments_and_keeps_uvicorn_access_arguments() -> None:
    """uvicorn's access formatter reads five arguments: they stay five, the path redacted."""
    record = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", f"/x?t={JWT}", "1.1", 200, name="uvicorn.access")
    assert RedactingFilter().filter(record)
    assert record.args == ("127.0.0.1:1", "GET", f"/x?t={REDACTED}", "1.1", 200)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ws/token%3DSECRET", "/ws/token=REDACTED"),  # uvicorn quotes the path it logs
        ("/ws/token=SECRET?room=1", "/ws/token=REDACTED?room=REDACTED"),
        ("/ws/Bearer%20SECRET", "/ws/Bearer%20REDACTED"),
        ("/ws/rooms/lobby%20one", "/ws/rooms/lobby%20one"),  # nothing to redact: as logged
    ],
)
def test_a_credential_in_a_logged_path_is_redacted_as_in_the_access_log(target: str, expected: str) -> None:
    """uvicorn's HTTP access line and its WebSocket lines (``uvicorn app:app``) carry the target
    percent-encoded: ``token%3D`` and ``Bearer%20`` went through in clear, as they still would in a
    plain GET the gateway answers 404 or 426 under ``run``."""
    access = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", target, "1.1", 404, name="uvicorn.access")
    assert RedactingFilter().filter(access)
    assert access.args == ("127.0.0.1:1", "GET", expected, "1.1", 404)
    accepted = _record('%s - "WebSocket %s" [accepted]', "127.0.0.1:1", target)
    assert RedactingFilter().filter(accepted)
    assert accepted.getMessage() == f'127.0.0.1:1 - "WebSocket {expected}" [accepted]'


def test_filter_judges_a_header_split_across_arguments() -> None:
    record = _record("< %s: %s", "x-subscription-key", "SECRET")
    RedactingFilter().filter(record)
    assert "SECRET" not in record.getMessage()


def test_filter_redacts_the_formatted_exception() -> None:
    try:
        raise OSError(f"cannot reach ws://up/x?access_token={JWT}")
    except OSError as exc:
        record = _record("handshake failed", exc=exc)
    RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert JWT not in formatted
    assert "access_token=REDACTED" in formatted


def test_install_puts_one_filter_per_logger() -> None:
    """uvicorn's, websockets' and the gateway's loggers each get exactly one filter, however often installed."""
    import asgi_ws_gateway.middleware  # noqa: F401 - its logger must exist

    log_redaction.install()
    log_redaction.install()
    for name in (*log_redaction.UVICORN_LOGGERS, *log_redaction.WEBSOCKETS_LOGGERS, "asgi_ws_gateway.middleware"):
        assert sum(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters) == 1


def test_filter_redacts_a_record_once_however_many_filters_it_meets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The logger's filter and run's handler filter both see a record: the second does no work again."""
    calls: list[str] = []
    real = redact.redact_text

    def counting(text: str) -> str:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(log_redaction, "redact_text", counting)
    record = _record("client %s sent %s", "127.0.0.1:1", f"/x?t={JWT}")
    assert RedactingFilter().filter(record)
    first = len(calls)
    assert first > 0 and JWT not in record.getMessage()
    assert RedactingFilter().filter(record)
    assert len(calls) == first


@pytest.mark.parametrize(
    ("text", "quoted", "bare"),
    [
        ('{"a": 1}', "{\\x22a\\x22: 1}", '{"a": 1}'),
        ("\x1b]52;c;eA==\x07", "\\x1b]52;c;eA==\\x07", "\\x1b]52;c;eA==\\x07"),
        ("a\r\nb\u2028c\u202ed", "a\\r\\nb\\u2028c\\u202ed", "a\\r\\nb\\u2028c\\u202ed"),
        ('a\\nb"', "a\\\\nb\\x22", 'a\\\\nb"'),
    ],
)
def test_printable_escapes_quotes_only_for_a_quoted_field(text: str, quoted: str, bare: str) -> None:
    """``quote=False`` keeps ``"`` (a JSON message shown bare); controls and ``\\`` are escaped either way."""
    assert (printable(text), printable(text, quote=False)) == (quoted, bare)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("probe/1 (Bearer abc123; x)", "probe/1 (Bearer REDACTED; x)"),
        ("bye token=s3cret, api_key = k3y&sig=abc", "bye token=REDACTED, api_key=REDACTED&sig=REDACTED"),
        ("curl Basic dXNlcjpwYXNzd29yZA==", "curl Basic REDACTED"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "REDACTED"),
        ("user=alice", "user=alice"),  # a subject's own name, not a secret
        ("basic plan exceeded; token expired", "basic plan exceeded; token expired"),  # words, no value
    ],
)
def test_free_text_has_scheme_and_named_credentials_redacted_outside_a_query(text: str, expected: str) -> None:
    """What a client writes freely (a User-Agent, a close reason, a subject) has no query to find values in."""
    assert redact.redact_free_text(text) == expected


@pytest.mark.timeout(20)  # a guard against a hang, not a speed test: ~1 ms each, minutes when backtracking
@pytest.mark.parametrize(
    "text", ["token" * 1600 + "=", "a." * 4000 + "=", "Bearer " * 1100, "a= " * 2600, "TokenError" * 800 + ": x"]
)
def test_free_text_redaction_is_linear(text: str) -> None:
    """A backtracking pattern took 278 s on ``token`` * 1600 + ``=``; each case here reads its text once."""
    once = redact.redact_free_text(text)
    assert redact.redact_free_text(once) == once  # and a second pass finds nothing left


@pytest.mark.parametrize(
    "text",
    ["JWKS answered 302, a redirect to '/keys': redirects are not followed", 'the file "/etc/api_key": not found'],
)
def test_a_quoted_text_ending_in_a_credentials_word_is_no_name(text: str) -> None:
    """Since exceptions in log lines are read as free text, a JWKS redirect's log line lost its words:
    ``'/keys': redirects`` read as the pair ``keys: redirects``. A quoted name is the whole quoted text."""
    assert redact.redact_free_text(text) == text
    assert redact.redact_free_text("{'keys': 'abc'}") == "{'keys':'REDACTED'}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AuthenticationError: invalid username-password pair", "AuthenticationError: invalid username-password pair"),
        ("jwt.ExpiredSignatureError: Signature has expired", "jwt.ExpiredSignatureError: Signature has expired"),
        ("AuthenticationError: token=abc", "AuthenticationError: token=REDACTED"),  # the message is read for pairs
        ("KeyError: 'tok3n'", "KeyError:'REDACTED'"),  # its message is the key looked up
        ('{"AuthError": "abc"}', '{"AuthError":"REDACTED"}'),  # a quoted name is a pair's
        ("auth_error: abc", "auth_error:REDACTED"),
    ],
)
def test_an_exception_type_before_its_message_is_no_credential_name(text: str, expected: str) -> None:
    """``AuthenticationError: invalid ...`` lost its first word, read as the pair ``AuthenticationError: invalid``."""
    assert redact.redact_free_text(text) == expected


def test_filter_keeps_the_message_of_a_redis_authentication_error() -> None:
    """redis-py's refused AUTH, as a traceback ends: the message is whole (it was ``AuthenticationError:REDACTED``)."""
    from redis.exceptions import AuthenticationError

    try:
        raise AuthenticationError("invalid username-password pair or user is disabled.")
    except AuthenticationError as exc:
        record = _record("management bus: %s", exc, name="asgi_ws_gateway.management.bus", exc=exc)
    RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert "AuthenticationError: invalid username-password pair or user is disabled." in formatted
