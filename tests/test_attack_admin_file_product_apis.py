"""Deleting, through the management API, an API of the configuration file that a file product lists.

An attack pass sent ``DELETE /apis/chat`` for a file API listed by the file's product ``gold``: the
check for products listing it looked at the products created through the API only, and the merged
configuration's problem (``products[0].apis[0]: unknown API 'chat'``) was then rewritten as if
``apis[0]`` were an index into the merged APIs: past their end, an ``IndexError`` and a bare 500 with
a traceback; within it, the problem named some other API. Now the deletion is a ``409`` naming the
product, as for a product created through the API, and a problem's product list index is left as it is.
Real uvicorn, the management API, a real upstream.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_ws_gateway.config import GatewayConfig
from asgi_ws_gateway.management.overlay import InvalidChange, Overlay, validate
from asgi_ws_gateway.policies import hash_key
from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

KEY = "gold-key"


async def test_a_file_api_a_file_product_lists_is_not_deleted_and_the_answer_is_a_409(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """Fails before: ``500 Internal Server Error``."""
    config = {
        "apis": [api("chat", "/chat", upstream)],
        "products": [{"name": "gold", "apis": ["chat"]}],
        "subscriptions": [{"id": "alice", "product": "gold", "key_sha256": hash_key(KEY)}],
    }
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.delete("apis/chat")
            assert refused.status_code == 409, refused.text
            assert refused.json()["detail"] == "API 'chat' is in product(s) gold (in the configuration file)"
            assert (await http.get("apis")).json()["revision"] == 0
        async with await connect(running.url("/chat"), additional_headers={"X-Subscription-Key": KEY}) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


@pytest.mark.parametrize(
    ("apis", "listed"),
    [(["chat"], ["chat"]), (["chat", "other", "third"], ["other", "chat"])],
    ids=["past-the-apis", "within-them"],
)
def test_a_products_list_index_is_not_read_as_an_api_of_the_configuration(apis: list[str], listed: list[str]) -> None:
    """Both fail before: an ``IndexError``, and ``products[0].API 'third': unknown API 'chat'``."""
    base = GatewayConfig.model_validate(
        {
            "apis": [{"name": name, "path": f"/{name}", "upstreams": ["ws://127.0.0.1:9/"]} for name in apis],
            "products": [{"name": "gold", "apis": listed}],
        }
    )
    with pytest.raises(InvalidChange) as refused:
        validate(base, Overlay().next(apis={"chat": None}))
    assert refused.value.problems == [f"products[0].apis[{listed.index('chat')}]: unknown API 'chat'"]
