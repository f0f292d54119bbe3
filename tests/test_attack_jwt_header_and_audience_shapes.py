"""validate-jwt against header and audience shapes an attack pass tried (2026-12-07), all refused or read
as RFC 7519 says before this pass too; pinned here as nothing else did: ``alg`` spelled as ``none`` in other
cases or padded, ``kid`` values meant for a path or a query (only looked up, never used as either), and
``aud`` as a list (any one item may be the audience), a list of non-strings, or the audience padded."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from jwt.algorithms import ECAlgorithm

from support.jwts import signing_key, token
from support.policies import build, context, denied

KEY = signing_key("ES256")
POLICY = {"validate-jwt": {"algorithms": ["ES256"], "public_keys": [KEY.public_pem],
                           "issuer": "https://issuer.test", "audience": "chat"}}  # fmt: skip


def _bearer(value: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {value}")]


def _with_header(raw: str, **header: Any) -> str:
    """``raw`` with its header changed (its signature kept: a forgery unless the header is not checked)."""
    first, payload, signature = raw.split(".")
    fields = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    encoded = base64.urlsafe_b64encode(json.dumps({**fields, **header}).encode()).rstrip(b"=").decode()
    return f"{encoded}.{payload}.{signature}"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "", "ES256 ", "es256", "HS256"], ids=repr)
async def test_an_alg_other_than_the_listed_spelling_is_refused_before_any_key(alg: str) -> None:
    raw = _with_header(token(KEY), alg=alg)
    if alg.lower() == "none":
        raw = raw.rsplit(".", 1)[0] + "."  # an unsigned token has an empty signature
    denial = await denied(build(POLICY).apply(context(headers=_bearer(raw))))
    assert (denial.status, denial.reason) == (401, "token_algorithm")


@pytest.mark.parametrize("kid", ["../../../../etc/passwd", "' OR '1'='1", "es256-1\x00", "x" * 4096])
async def test_a_kid_is_only_a_name_looked_up(kid: str) -> None:
    """With configured keys a kid names nothing to fetch or open: the token verifies by its signature alone."""
    ctx = context(headers=_bearer(_signed({**_claims(), "sub": "alice"}, kid=kid)))
    await build(POLICY).apply(ctx)
    assert ctx.claims is not None and ctx.claims["sub"] == "alice"


@pytest.mark.parametrize("kid", [7, ["es256-1"], {"kid": "es256-1"}, None], ids=repr)
async def test_a_kid_that_is_not_text_is_a_malformed_token(kid: object) -> None:
    """Signed, but a header pyjwt will not read (RFC 7515 §4.1.4: a kid is a string)."""
    denial = await denied(build(POLICY).apply(context(headers=_bearer(_signed(_claims(), kid=kid)))))
    assert (denial.status, denial.reason) == (401, "token_invalid")


@pytest.mark.parametrize(
    ("aud", "admitted"),
    [(["billing", "chat"], True), (["billing"], False), ([], False), ([7], False), (["chat "], False),
     ("chat ", False), ("Chat", False), ({"chat": 1}, False)],
    ids=repr,
)  # fmt: skip
async def test_aud_as_a_list_admits_when_one_item_is_the_audience(aud: object, admitted: bool) -> None:
    ctx = context(headers=_bearer(token(KEY, aud=aud)))
    if admitted:
        await build(POLICY).apply(ctx)
        assert ctx.claims is not None
    else:
        denial = await denied(build(POLICY).apply(ctx))
        assert (denial.status, denial.reason) == (401, "token_invalid")


def _signed(claims: dict[str, Any], **header: Any) -> str:
    """Claims signed by KEY under a header written by hand (pyjwt's encoder refuses a kid that is not text)."""

    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'ES256', 'typ': 'JWT', **header})}.{part(claims)}"
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), KEY.private)
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _claims() -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode((part := token(KEY).split(".")[1]) + "=" * (-len(part) % 4))
    )
    return claims
