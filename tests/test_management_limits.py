"""Management requests are bounded: body size (413), arrival time (408), field sizes and nesting (422).

Real uvicorn, real HTTP; every refusal leaves the state file as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.config.limits import MAX_APIS
from support.management import TOKEN, Managed, api, managed_gateway
from support.upstream import UpstreamServer

MB = 1024 * 1024


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "state.json", body_timeout=0.5) as running:
        yield running


def _state(managed: Managed) -> bytes | None:
    return managed.state.read_bytes() if managed.state.exists() else None


JSON = {"Content-Type": "application/json"}


async def _raw(managed: Managed, head: str, body_chunks: list[bytes], *, pause: float = 0.0) -> tuple[int, bytes]:
    """Send a raw POST /apis (``head`` holds the framing headers); the status and body answered."""
    port = managed.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST /_gateway/apis HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\n{head}\r\n"
    )
    writer.write(request.encode())

    async def feed() -> None:
        for chunk in body_chunks:
            writer.write(chunk)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)

    feeding = asyncio.create_task(feed())
    try:
        async with asyncio.timeout(20):  # "promptly": a generous bound, not a measurement
            status_line = await reader.readline()
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):  # the server may have reset a connection it stopped reading
            await writer.wait_closed()
    return int(status_line.split()[1]), body


async def test_ten_megabyte_body_with_content_length_is_413(managed: Managed) -> None:
    """Content-Length: 10 MB: 413 before the body is read; no state written."""
    before = _state(managed)
    body = json.dumps({"name": "big", "path": "/ws/big", "upstreams": ["ws://x/"], "display_name": "a" * 10 * MB})
    status, answer = await _raw(managed, f"Content-Length: {len(body)}\r\n", [body.encode()[: 64 * 1024]])
    assert status == 413
    assert json.loads(answer)["status"] == 413
    assert _state(managed) == before


async def test_ten_megabyte_chunked_body_is_413_while_reading(managed: Managed) -> None:
    """A chunked body without Content-Length is cut off at the limit: 413, not 10 MB read."""
    before = _state(managed)
    piece = b"a" * 64 * 1024
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, _ = await _raw(managed, "Transfer-Encoding: chunked\r\n", [b'5\r\n{"a":\r\n', *[chunk] * 160])
    assert status == 413
    assert _state(managed) == before


async def test_many_small_chunks_count_towards_the_limit(managed: Managed) -> None:
    """Tiny chunks add up: still 413 once the total passes 1 MiB."""
    piece = b" " * 4096
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, _ = await _raw(managed, "Transfer-Encoding: chunked\r\n", [chunk] * 300)
    assert status == 413


async def test_slowly_dribbled_body_is_408(managed: Managed) -> None:
    """A body that stops arriving gets 408 after body_timeout (0.5 s here), not an open socket."""
    before = _state(managed)
    status, answer = await _raw(managed, "Content-Length: 1000\r\n", [b'{"name": "slow"', b" "], pause=30)
    assert status == 408
    assert "did not arrive" in json.loads(answer)["detail"]
    assert _state(managed) == before


async def test_configured_body_limit_is_enforced(upstream: UpstreamServer, tmp_path: Path) -> None:
    """max_body_size=2048: a 3 KB body is 413, a 1 KB one is accepted."""
    with managed_gateway({"apis": []}, tmp_path / "s.json", max_body_size=2048) as managed:
        async with managed.http() as http:
            small = await http.post("apis", json=api("ok", "/ws/ok", upstream, display_name="d" * 100))
            assert small.status_code == 201, small.text
            big = await http.post("apis", json=api("big", "/ws/big", upstream, display_name="d" * 3000))
            assert big.status_code == 413


FIELDS = [
    pytest.param({"name": "n" * 129}, r"^name: String should have at most 128 characters", id="name"),
    pytest.param({"display_name": "d" * 257}, r"^display_name: String should have at most 256", id="display-name"),
    pytest.param({"path": "/ws/" + "p" * 2048}, r"^path: String should have at most 2048", id="path"),
    pytest.param({"upstreams": ["ws://h/" + "u" * 2048]}, r"^upstreams\[0\]\.url: String should have at most 2048",
                 id="url"),
    pytest.param({"upstreams": ["htp://h/" + "u" * 9000]}, r"^upstreams\[0\]\.url: String should have at most",
                 id="bad-url-not-echoed"),
    pytest.param({"upstreams": ["ws://h/"] * 65}, r"^upstreams: List should have at most 64 items", id="upstreams"),
    pytest.param({"policies": [{"set-header": {"header": "X-" + "h" * 300, "value": "v"}}]},
                 r"^policies\[0\]\.set-header\.header: String should have at most 256", id="header-name"),
    pytest.param({"policies": [{"set-header": {"header": "X-A", "value": "v" * 9000}}]},
                 r"^policies\[0\]\.set-header\.value: String should have at most 8192", id="header-value"),
    pytest.param({"policies": [{"validate-jwt": {"algorithms": ["HS256"], "issuer": "i" * 20000}}]},
                 r"^policies\[0\]: validate-jwt\.issuer is longer than 16384 characters", id="policy-string"),
    pytest.param({"policies": [{"allow-ip": {}}] * 65}, r"^policies: List should have at most 64 items", id="policies"),
    pytest.param({"message_policies": {"inbound": [{"limit-message-size": {}}] * 65}},
                 r"^message_policies\.inbound: List should have at most 64", id="message-policies"),
    pytest.param({"k" * 200_000: 1}, r"^k{128}\.\.\.: unknown field$", id="huge-unknown-key"),
    pytest.param({"policies": [{"allow-ip": {"k" * 200_000: 1}}]}, r"^policies\[0\]: a key is longer than 128",
                 id="huge-policy-key"),
    pytest.param({"skip_policies": ["s" * 200]}, r"^skip_policies\[0\]: String should have at most 128", id="skip"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "problem"), FIELDS)
async def test_oversized_fields_are_422_and_not_echoed(
    managed: Managed, upstream: UpstreamServer, fields: dict[str, Any], problem: str
) -> None:
    """Each oversized field: 422 naming its path; the answer does not echo the field back."""
    import re

    before = _state(managed)
    async with managed.http() as http:
        response = await http.post("apis", json={**api("big", "/ws/big", upstream), **fields})
    assert response.status_code == 422, response.text
    assert any(re.search(problem, p) for p in response.json()["problems"]), response.json()["problems"]
    assert len(response.content) < 4096
    assert _state(managed) == before


async def test_ten_megabyte_field_under_a_raised_body_limit_is_422(upstream: UpstreamServer, tmp_path: Path) -> None:
    """Even where the operator allows 16 MiB bodies, a 10 MB field is 422 and never stored."""
    with managed_gateway({"apis": []}, tmp_path / "s.json", max_body_size=16 * MB) as managed:
        async with managed.http() as http:
            response = await http.post("apis", json=api("big", "/ws/big", upstream, display_name="d" * 10 * MB))
        assert response.status_code == 422
        assert response.json()["problems"][0].startswith("display_name: String should have at most 256 characters")
        assert len(response.content) < 4096
        assert not managed.state.exists()


async def test_oversized_product_and_subscription_fields_are_422(managed: Managed) -> None:
    """Products and subscriptions share the limits: too many APIs, a long name."""
    async with managed.http() as http:
        product = await http.post("products", json={"name": "p", "apis": ["echo"] * (MAX_APIS + 1)})
        assert product.status_code == 422
        assert product.json()["problems"][0].startswith(f"apis: List should have at most {MAX_APIS} items")
        subscription = await http.post("subscriptions", json={"product": "p", "name": "n" * 300})
        assert subscription.status_code == 422
        assert subscription.json()["problems"][0].startswith("name: String should have at most 256 characters")


async def test_deeply_nested_body_is_422(managed: Managed) -> None:
    """100,000 nested arrays (deeper than Python's parser) and 40 nested objects: 422, no traceback."""
    async with managed.http() as http:
        deep = await http.post("apis", content=b"[" * 100_000 + b"]" * 100_000, headers=JSON)
        assert deep.status_code == 422
        assert deep.json()["problems"] == ["(body): nested deeper than 32 levels"]
        nested: Any = "x"
        for _ in range(40):
            nested = {"a": nested}
        shallow_enough = await http.post("apis", json={"name": "n", "path": "/n", "upstreams": [], "x": nested})
        assert shallow_enough.status_code == 422
        assert shallow_enough.json()["problems"] == ["(body): nested deeper than 32 levels"]


async def test_deeply_nested_policy_settings_are_422(managed: Managed, upstream: UpstreamServer) -> None:
    """Settings nested 20 levels (within the body's 32): 422 by field path."""
    nested: Any = "x"
    for _ in range(20):
        nested = {"a": nested}
    body = api("n", "/ws/n", upstream, policies=[{"validate-jwt": {"algorithms": ["HS256"], "claims": nested}}])
    async with managed.http() as http:
        response = await http.post("apis", json=body)
    assert response.status_code == 422
    assert response.json()["problems"] == ["policies[0]: nested deeper than 16 levels"]


def test_too_many_apis_in_a_file_is_a_config_error() -> None:
    """More than 1000 APIs is an error at load time, by field path."""
    apis = [{"name": f"a{i}", "path": f"/a{i}", "upstreams": ["ws://h/"]} for i in range(MAX_APIS + 1)]
    with pytest.raises(ConfigError) as info:
        load_config({"apis": apis})
    assert info.value.problems[0].startswith(f"apis: List should have at most {MAX_APIS} items")


def test_limits_admit_a_large_legitimate_config() -> None:
    """1000 APIs with 64 upstreams' worth of long URLs and a 10 KB PEM-sized setting still load."""
    apis: list[dict[str, Any]] = [
        {"name": f"a{i}", "path": f"/a{i}/{{room}}", "upstreams": [f"ws://h/{i}/{{room}}"]} for i in range(MAX_APIS)
    ]
    apis[0]["upstreams"] = [f"ws://backend-{k}.internal:9000/" + "p" * 1900 for k in range(64)]
    apis[1]["policies"] = [{"validate-jwt": {"algorithms": ["HS256"], "secret": "s" * 10_000}}]
    assert len(load_config({"apis": apis}).apis) == MAX_APIS


async def test_creating_more_apis_than_the_limit_is_422(upstream: UpstreamServer, tmp_path: Path) -> None:
    """With 1000 APIs running, one more through the API is a 422 and nothing is stored."""
    apis = [api(f"a{i}", f"/ws/a{i}", upstream) for i in range(MAX_APIS)]
    with managed_gateway({"apis": apis}, tmp_path / "s.json") as managed:
        async with managed.http() as http:
            response = await http.post("apis", json=api("one-more", "/ws/one-more", upstream))
        assert response.status_code == 422
        assert response.json()["problems"][0].startswith(f"apis: List should have at most {MAX_APIS} items")
        assert not managed.state.exists()
