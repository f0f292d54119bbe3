"""Attacks on what the gateway shows: a credential a ``transform-message`` writes into messages.

``message_policies: {inbound: [{transform-message: {set: {api_key: ...}}}]}`` sends the upstream the
operator's key in every message (as ``set-header`` of ``X-Api-Key`` sends it in the handshake, whose
value ``GET`` reads ``REDACTED``); ``GET /config`` and ``GET /apis/{name}`` showed it as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.management import api, managed_gateway
from support.upstream import UpstreamServer

GLOBAL_KEY = "SEKRIT-MSG-GLOBAL-0123"
NESTED_TOKEN = "SEKRIT-MSG-NESTED-0123"
DOTTED_SESSION = "SEKRIT-MSG-DOTTED-0123"
API_KEY = "SEKRIT-MSG-API-0123"
SECRETS = [GLOBAL_KEY, NESTED_TOKEN, DOTTED_SESSION, API_KEY]


def _config(upstream: UpstreamServer) -> dict[str, Any]:
    fields = {"api_key": GLOBAL_KEY, "auth": {"token": NESTED_TOKEN, "user": "gw"}, "meta.session_id": DOTTED_SESSION,
              "room": "lobby", "sender": "{jwt.sub}"}  # fmt: skip
    own = {"inbound": [{"transform-message": {"set": {"x_api_key": API_KEY, "via": "gateway"}}}]}
    return {
        "apis": [api("chat", "/chat", upstream, message_policies=own)],
        "message_policies": {"inbound": [{"transform-message": {"set": fields, "remove": ["password"]}}]},
    }


async def test_get_shows_message_fields_named_as_credentials_redacted(tmp_path: Path, upstream: UpstreamServer) -> None:
    """GET /config (JSON and YAML), /apis and /apis/chat: REDACTED for each credential field, others as written."""
    with managed_gateway(_config(upstream), tmp_path / "state.json") as running:
        async with running.http() as http:
            for path in ("config", "config?format=yaml", "apis", "apis/chat"):
                response = await http.get(path)
                assert response.status_code == 200, path
                assert not [s for s in SECRETS if s in response.text], (path, response.text)
            shown = (await http.get("config")).json()
    (entry,) = shown["message_policies"]["inbound"]
    assert entry["transform-message"] == {
        "set": {"api_key": "REDACTED", "auth": {"token": "REDACTED", "user": "gw"}, "meta.session_id": "REDACTED",
                "room": "lobby", "sender": "{jwt.sub}"},
        "remove": ["password"],
    }  # fmt: skip
    own = shown["apis"][0]["message_policies"]["inbound"][0]["transform-message"]["set"]
    assert own == {"x_api_key": "REDACTED", "via": "gateway"}


async def test_a_redacted_message_field_sent_back_is_a_422(tmp_path: Path, upstream: UpstreamServer) -> None:
    """PUT of what GET showed: 422 naming the field (the upstream would have received "REDACTED"); a new
    value is taken."""
    with managed_gateway(_config(upstream), tmp_path / "state.json") as running:
        async with running.http() as http:
            got = await http.get("apis/chat")
            sent_back = await http.put("apis/chat", json=got.json(), headers={"If-Match": got.headers["etag"]})
            assert sent_back.status_code == 422, sent_back.text
            assert [p.split(":")[0] for p in sent_back.json()["problems"]] == [
                "message_policies.inbound[0].transform-message.set.x_api_key"
            ]
            assert (await http.get("apis/chat")).headers["etag"] == got.headers["etag"]
            document = got.json()
            document["message_policies"]["inbound"][0]["transform-message"]["set"]["x_api_key"] = "new-key-0123"
            replaced = await http.put("apis/chat", json=document, headers={"If-Match": got.headers["etag"]})
            assert replaced.status_code == 200, replaced.text
