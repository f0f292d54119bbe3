"""An ETag as an oracle for a secret the management API shows as ``REDACTED``.

The ETag was a plain SHA-256 of the API's whole document, secrets included: whoever reads it (a
holder of the admin token) could hash guesses of a short secret into the shown document until one
matched. It is keyed now with a secret the state store keeps and never shows, the same for every
worker and host that shares the store, so ``If-Match`` still works across them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

from asgi_ws_gateway.management import FileStore, MemoryStore
from asgi_ws_gateway.management.redis_store import RedisStore
from support.management import TOKEN, api, managed_gateway
from support.redis import SHARED_REDIS, unique_prefix
from support.upstream import UpstreamServer

PIN = "pin-4821"
GUESSES = [f"pin-{n:04d}" for n in range(4810, 4830)]


def _config(upstream: UpstreamServer) -> dict[str, object]:
    policy = {"set-header": {"header": "X-Internal-Auth", "value": PIN}}
    return {"apis": [api("chat", "/chat", upstream, policies=[policy])]}


def _hashes(shown: str, guess: str) -> set[str]:
    """What a reader could compute for one guess: the former unkeyed hash, and HMACs under keys it knows."""
    document = json.dumps(json.loads(shown.replace('"REDACTED"', json.dumps(guess))), sort_keys=True).encode()
    tags = {hashlib.sha256(document).hexdigest()[:20]}
    for key in (b"", TOKEN.encode()):
        tags.add(hmac.new(key, document, hashlib.sha256).hexdigest()[:20])
    return {f'"{tag}"' for tag in tags}


async def test_no_guess_of_a_redacted_secret_matches_the_etag(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    with managed_gateway(_config(upstream_server), tmp_path / "state.json") as running:
        async with running.http() as http:
            got = await http.get("apis/chat")
    assert got.status_code == 200 and PIN not in got.text and "REDACTED" in got.text, got.text
    matched = [guess for guess in GUESSES if got.headers["etag"] in _hashes(got.text, guess)]
    assert matched == [], f"the ETag confirms the secret: {matched}"


async def test_workers_sharing_a_state_file_agree_on_etags(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """Two gateways on one state file (two workers): an ETag read from one is a valid If-Match on the other,
    and the key file is the owner's alone."""
    state = tmp_path / "state.json"
    with (
        managed_gateway(_config(upstream_server), state) as first,
        managed_gateway(_config(upstream_server), state) as second,
    ):
        async with first.http() as one, second.http() as other:
            got = await one.get("apis/chat")
            assert (await other.get("apis/chat")).headers["etag"] == got.headers["etag"]
            document = {**got.json(), "connect_timeout": 7.0}
            document["policies"] = [{"set-header": {"header": "X-Internal-Auth", "value": PIN}}]
            changed = await other.put("apis/chat", json=document, headers={"If-Match": got.headers["etag"]})
            assert changed.status_code == 200, changed.text
            stale = await one.put("apis/chat", json=document, headers={"If-Match": got.headers["etag"]})
            assert stale.status_code == 412, stale.text
    key_file = tmp_path / "state.json.etag-key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32


async def test_every_store_keeps_one_key(tmp_path: Path) -> None:
    memory = MemoryStore()
    assert await memory.etag_key() == await memory.etag_key() != await MemoryStore().etag_key()
    files = FileStore(tmp_path / "s.json"), FileStore(tmp_path / "s.json")
    assert await files[0].etag_key() == await files[1].etag_key() != await FileStore(tmp_path / "t.json").etag_key()
    prefix = unique_prefix()
    stores = RedisStore.from_url(SHARED_REDIS, prefix=prefix), RedisStore.from_url(SHARED_REDIS, prefix=prefix)
    other = RedisStore.from_url(SHARED_REDIS, prefix=unique_prefix())
    try:
        keys = [await store.etag_key() for store in (*stores, *stores)]
        assert len(set(keys)) == 1 and len(keys[0]) >= 32, keys
        assert await other.etag_key() != keys[0]
    finally:
        for store in (*stores, other):
            await store.client.delete(f"{store.prefix}:{{mgmt}}:state")
            await store.aclose()
