"""Polling the stored state costs nothing while it is unchanged, keeps no copies, and the management API
writes large documents off the event loop (a 16 MB state grew an idle gateway by gigabytes)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import (
    FileStore,
    GatewayManagement,
    Overlay,
    RedisStore,
    StateStore,
    redis_store,
    service,
    store,
)
from asgi_ws_gateway.management import app as management_app
from asgi_ws_gateway.management.errors import Unavailable
from asgi_ws_gateway.standalone import not_found
from support.management import TOKEN
from support.redis import SHARED_REDIS, redis_available, unique_prefix
from support.servers import UvicornServer


def _large_api(name: str, branches: int = 1024) -> dict[str, Any]:
    when = [{"if": {"ref": "header.x", "equals": f"v{j}"}, "policies": []} for j in range(branches)]
    return {
        "name": name,
        "path": f"/ws/{name}",
        "upstreams": ["ws://127.0.0.1:9/"],
        "policies": [{"choose": {"when": when}}],
    }


def _with(*names: str) -> Callable[[Overlay], Overlay]:
    return lambda overlay: overlay.next(apis={**overlay.apis, **{n: _large_api(n) for n in names}})


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


# -- FileStore: what a poll reads -------------------------------------------------------------------


async def test_version_of_an_unchanged_file_does_not_parse_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's poll of the file it wrote, or read once, parses nothing again."""
    await FileStore(tmp_path / "s.json").update(_with("a", "b"))
    parses = _counting(monkeypatch, store, "read_state")
    reader = FileStore(tmp_path / "s.json")  # another worker
    first = await reader.version()
    assert len(parses) == 1
    for _ in range(20):
        assert await reader.version() == first
        assert (await reader.load()).revision == 1
    assert len(parses) == 1


async def test_a_settled_file_is_not_even_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the file is older than a tick of its clock, a poll is a stat: the bytes are not read."""
    monkeypatch.setattr(store, "STAT_SETTLED", 0.0, raising=False)  # before: no such setting
    await FileStore(tmp_path / "s.json").update(_with("a"))
    reads = _counting(monkeypatch, store, "read_own_file")
    reader = FileStore(tmp_path / "s.json")
    for _ in range(10):
        await reader.version()
    assert len(reads) == 1


async def test_every_change_of_the_file_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker's save, a restored older copy, an in-place edit of the same size with its time set
    back, and a deleted file: each changes what a poll answers, even with the stat trusted at once."""
    monkeypatch.setattr(store, "STAT_SETTLED", 0.0, raising=False)  # before: no such setting
    path = tmp_path / "s.json"
    writer, reader = FileStore(path), FileStore(path)
    await writer.update(_with("a"))
    old_bytes, old_version = path.read_bytes(), await reader.version()
    await writer.update(_with("b"))
    assert (await reader.version())[1] == 2 and set((await reader.load()).apis) == {"a", "b"}

    restored = tmp_path / "backup"
    restored.write_bytes(old_bytes)
    os.replace(restored, path)  # back to revision 1, as a restore leaves it
    assert await reader.version() == old_version
    assert set((await reader.load()).apis) == {"a"}

    stat = path.stat()
    edited = old_bytes.replace(b'"v1"', b'"w1"', 1)
    assert len(edited) == len(old_bytes)
    path.write_bytes(edited)  # in place: same inode and size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    epoch, revision, token = await reader.version()
    assert (epoch, revision) == old_version[:2] and token != old_version[2]
    document = (await reader.load()).apis["a"]
    assert document is not None and document["policies"][0]["choose"]["when"][1]["if"]["equals"] == "w1"

    path.unlink()
    assert (await reader.version())[:2] == ("", 0) and (await reader.load()).apis == {}


async def test_an_invalid_file_stays_unavailable(tmp_path: Path) -> None:
    """A hand edit that is not a state is refused at every read, not remembered as the last good one."""
    path = tmp_path / "s.json"
    reader = FileStore(path)
    await reader.update(_with("a"))
    path.write_text("{not json")
    for _ in range(2):
        with pytest.raises(Unavailable):
            await reader.version()


# -- what the states keep -----------------------------------------------------------------------------


class _Document(dict[str, Any]):
    """A dict that can be referenced weakly: to see when nothing keeps it."""


def test_a_state_written_keeps_no_document_of_a_state_gone() -> None:
    """The text kept to write a state's successor quickly dies with the states that hold the documents."""
    document = _Document(_large_api("a", 64))
    gone = weakref.ref(document)
    first = Overlay().next(apis={"a": document})
    first.to_json()
    second = first.next(apis={"a": _large_api("a", 8)})
    second.to_json()
    del first, document
    gc.collect()
    assert gone() is None
    third = second.next(products={"p": {"name": "p", "apis": ["a"]}})
    assert third.to_json() == _plain(third)


def _plain(overlay: Overlay) -> str:
    return json.dumps(
        {
            "format": 1, "epoch": overlay.epoch, "revision": overlay.revision, "apis": overlay.apis,
            "products": overlay.products, "subscriptions": overlay.subscriptions, "drains": {},
        },
        indent=1,
    )  # fmt: skip


# -- a real gateway -------------------------------------------------------------------------------------


class _PollCounter:
    """Counts the store's ``version()`` calls (the poller's), so a test waits for N polls, not for time."""

    def __init__(self, target: StateStore) -> None:
        self.polls = 0
        self.changed = threading.Condition()
        original = target.version

        async def version() -> tuple[str, int, str]:
            found = await original()
            with self.changed:
                self.polls += 1
                self.changed.notify_all()
            return found

        target.version = version  # type: ignore[method-assign]

    def wait(self, polls: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.polls >= polls, timeout=120)


@contextmanager
def _gateway(target: StateStore, poll_interval: float = 1.0) -> Iterator[tuple[str, GatewayManagement]]:
    gateway = WebSocketGateway(not_found, config={"apis": []})
    management = GatewayManagement(gateway, store=target, admin_token=TOKEN, poll_interval=poll_interval)
    with UvicornServer(management, lifespan="on") as server:
        yield server.url("/_gateway", scheme="http"), management


def test_an_idle_gateway_on_a_large_state_keeps_nothing_per_poll(tmp_path: Path) -> None:
    """Polls of an unchanged state retain nothing (a parse and a copy of each API per poll were kept)."""
    path = tmp_path / "s.json"
    asyncio.run(FileStore(path).update(_with("a", "b", "c", "d")))
    target = FileStore(path)
    counter = _PollCounter(target)
    with _gateway(target, poll_interval=0.01):
        counter.wait(5)
        tracemalloc.start()
        try:
            held = []
            for _ in range(3):  # a leak grows in each window; work in flight at one reading is in one only
                counter.wait(counter.polls + 30)
                gc.collect()
                held.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
    grown = min(held[1] - held[0], held[2] - held[1])
    assert grown < path.stat().st_size // 2, f"{grown:,} bytes kept by 30 polls of a {path.stat().st_size:,}-byte state"


class _LoopWork:
    """Records the calls of document-sized work made on a running event loop."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on_loop: list[str] = []
        self.calls: list[str] = []
        for module, name in (
            (management_app, "api_document"),
            (management_app, "public_document"),
            (service, "resource_object"),
            (store, "read_state"),
            (redis_store, "read_state"),
        ):
            monkeypatch.setattr(module, name, self._watched(f"{module.__name__}.{name}", getattr(module, name)))
        for name in ("to_json", "__eq__"):
            monkeypatch.setattr(Overlay, name, self._watched(f"Overlay.{name}", getattr(Overlay, name)))

    def _watched(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(label)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass  # a worker thread
            else:
                self.on_loop.append(label)
            return function(*args, **kwargs)

        return watched


NO_REDIS = pytest.mark.skipif(not redis_available(), reason="no Redis at 127.0.0.1:6379")


@pytest.mark.parametrize("kind", ["file", pytest.param("redis", marks=NO_REDIS)])
def test_document_sized_work_of_the_management_api_runs_off_the_event_loop(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking a body, answering with an API, its ETag, lists and exports, parsing and comparing states:
    all in worker threads (an 8,192-condition API held the event loop a second per PUT)."""
    target: StateStore = (
        FileStore(tmp_path / "s.json") if kind == "file" else RedisStore.from_url(SHARED_REDIS, prefix=unique_prefix())
    )
    work = _LoopWork(monkeypatch)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with _gateway(target) as (base, _), httpx2.Client(base_url=base + "/", headers=headers, timeout=60) as http:
        created = http.post("apis", json=_large_api("big", 256))
        assert created.status_code == 201, created.text
        replaced = http.put("apis/big", json=_large_api("big", 300), headers={"If-Match": created.headers["etag"]})
        assert replaced.status_code == 200, replaced.text
        assert len(replaced.json()["policies"][0]["choose"]["when"]) == 300
        assert http.get("apis/big").headers["etag"] == replaced.headers["etag"]
        assert [a["name"] for a in http.get("apis").json()["apis"]] == ["big"]
        assert http.get("config").status_code == 200
        assert http.get("config", params={"format": "yaml"}).status_code == 200
        assert http.post("products", json={"name": "p", "apis": ["big"]}).status_code == 201
        assert http.get("products").status_code == 200
    assert {"Overlay.to_json", "asgi_ws_gateway.management.app.api_document"} <= set(work.calls)
    assert work.on_loop == []


def test_a_large_request_body_is_parsed_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~1 MB body took ~140 ms of the event loop to parse and check; past 64 KiB it is a thread's work."""
    from asgi_ws_gateway.management import request_body

    parsed_on_loop: list[int] = []
    parse = request_body._parsed

    def watched(raw: bytes, limits: Any) -> Any:
        try:
            asyncio.get_running_loop()
            parsed_on_loop.append(len(raw))
        except RuntimeError:
            pass  # a worker thread
        return parse(raw, limits)

    monkeypatch.setattr(request_body, "_parsed", watched)
    large = _large_api("big", 1024)
    large["policies"] *= 2  # a choose has 1,024 branches at most
    assert len(json.dumps(large)) > 64 * 1024
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        _gateway(FileStore(tmp_path / "s.json")) as (base, _),
        httpx2.Client(base_url=base + "/", headers=headers, timeout=60) as http,
    ):
        assert http.post("apis", json=large).status_code == 201
        assert http.post("products", json={"name": "p", "apis": ["big"]}).status_code == 201
    assert len(parsed_on_loop) == 1 and parsed_on_loop[0] < 1024  # the product's small body, inline
