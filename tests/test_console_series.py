"""The console's sampler, series merge and refusal ring: pure logic, an injected clock, no sleeps."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.handshake.refusals import MAX_DETAIL, RefusalLog
from asgi_ws_gateway.management import GatewayManagement
from asgi_ws_gateway.management.series import Sampler, SeriesKey, bound, merge
from asgi_ws_gateway.standalone import not_found
from support.clock import Clock
from support.jwts import token


class Counters:
    def __init__(self) -> None:
        self.values: dict[SeriesKey, int] = {}

    def __call__(self) -> dict[SeriesKey, int]:
        return dict(self.values)


def test_samples_fall_on_multiples_of_the_interval() -> None:
    """A sample taken mid-slot is stamped with the slot's start, so workers' samples line up."""
    clock, counters = Clock(1_000_003.7), Counters()
    sampler = Sampler(counters, interval=5, window=60, clock=clock)
    sampler.sample()
    assert [at for at, _ in sampler.samples()] == [1_000_000.0]


def test_a_second_sample_in_one_slot_replaces_the_first() -> None:
    clock, counters = Clock(), Counters()
    sampler = Sampler(counters, interval=5, window=60, clock=clock)
    counters.values = {("messages", "echo", "in"): 1}
    sampler.sample()
    clock.now += 2
    counters.values = {("messages", "echo", "in"): 4}
    sampler.sample()
    assert sampler.samples() == [(1_000_000.0, [("messages", "echo", "in", 4)])]


def test_only_the_window_is_kept_and_memory_stays_bounded() -> None:
    """After 15 minutes and more of samples only window / interval remain, the oldest dropped."""
    clock, counters = Clock(), Counters()
    sampler = Sampler(counters, interval=5, window=900, clock=clock)
    for i in range(500):
        counters.values = {("active", "echo", ""): i}
        sampler.sample()
        clock.now += 5
    kept = sampler.samples()
    assert len(kept) == 180
    assert kept[0][1] == [("active", "echo", "", 320)] and kept[-1][1] == [("active", "echo", "", 499)]


def test_a_flood_of_close_codes_does_not_push_out_the_other_families() -> None:
    """Thousands of close codes (sorting before "handshakes") once filled the cap and dropped every
    later family from every sample: the charts read 401: 0 during an attack."""
    clock, counters = Clock(), Counters()
    sampler = Sampler(counters, interval=1, window=10, max_series=70, clock=clock)  # 10 per family
    counters.values = {("closes", "echo", str(code)): 1 for code in range(3000, 5000)}
    counters.values |= {
        ("closes", "echo", "1000"): 500,
        ("handshakes", "chat", "401"): 7,
        ("messages", "echo", "in"): 3,
        ("refusals", "chat", "validate-jwt"): 7,
        ("upstream_failures", "dead", "ws://127.0.0.1:1/"): 2,
    }
    sampler.sample()
    ((_, values),) = sampler.samples()
    kept = {(name, api, label): value for name, api, label, value in values}
    assert kept[("handshakes", "chat", "401")] == 7 and kept[("messages", "echo", "in")] == 3
    assert kept[("refusals", "chat", "validate-jwt")] == 7
    assert kept[("upstream_failures", "dead", "ws://127.0.0.1:1/")] == 2
    closes = {key: value for key, value in kept.items() if key[0] == "closes"}
    assert len(closes) == 10 and closes[("closes", "echo", "1000")] == 500  # the largest stays itself
    assert sum(closes.values()) == 500 + 2000  # nothing lost: the rest is in "other"
    assert closes[("closes", "echo", "other")] == 2000 - 8
    assert len(values) <= 70


def test_each_family_folds_into_one_other_per_api() -> None:
    """An API filter still adds up to the API's total, whichever series were folded."""
    counts = {("closes", api, str(code)): 1 for api in ("echo", "chat") for code in range(3000, 3050)}
    kept, cut = bound(counts, max_series=7 * 6)
    assert cut == {"closes": 100}
    assert len(kept) == 6
    for api in ("echo", "chat"):
        assert sum(v for (_, a, _), v in kept.items() if a == api) == 50
        assert ("closes", api, "other") in kept


def test_a_family_of_more_apis_than_its_share_folds_into_one_other() -> None:
    counts = {("active", f"api-{i:04}", ""): i for i in range(1000)}
    kept, _ = bound(counts, max_series=70)
    assert len(kept) == 10 and kept[("active", "", "other")] == sum(range(991))
    assert kept[("active", "api-0999", "")] == 999


def test_too_many_series_are_folded_with_one_warning_per_family(caplog: pytest.LogCaptureFixture) -> None:
    clock, counters = Clock(), Counters()
    sampler = Sampler(counters, interval=1, window=10, max_series=21, clock=clock)  # 3 per family
    counters.values = {("closes", "echo", str(code)): 1 for code in range(4000, 4010)}
    counters.values |= {("handshakes", "echo", str(status)): 1 for status in range(400, 410)}
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            sampler.sample()
            clock.now += 1
    assert all(len(values) == 6 for _, values in sampler.samples())
    warned = [r.getMessage() for r in caplog.records if "adding up the rest" in r.getMessage()]
    assert len(warned) == 2 and any("'closes'" in w for w in warned) and any("'handshakes'" in w for w in warned)


async def test_sampling_for_an_answer_reads_off_the_loop_once_for_callers_at_the_same_time() -> None:
    """Each console poll made every worker add up every open connection on its event loop (0.8 s at
    100,000); several tabs polling at once share one read."""
    loop_thread = threading.get_ident()
    readers: list[int] = []
    release = threading.Event()

    def read() -> dict[SeriesKey, int]:
        readers.append(threading.get_ident())
        release.wait(5)
        return {("active", "chat", ""): 2}

    sampler = Sampler(read, interval=5, window=60)
    polls = [asyncio.create_task(sampler.sample_soon()) for _ in range(5)]
    await asyncio.sleep(0.05)
    ticks = 0
    while ticks < 5:  # the loop runs meanwhile
        await asyncio.sleep(0)
        ticks += 1
    release.set()
    await asyncio.gather(*polls)
    assert len(readers) == 1 and loop_thread not in readers
    assert sampler.samples()[-1][1] == [("active", "chat", "", 2)]


def test_since_returns_only_newer_samples() -> None:
    clock, counters = Clock(), Counters()
    sampler = Sampler(counters, interval=5, window=60, clock=clock)
    for _ in range(4):
        sampler.sample()
        clock.now += 5
    assert [at for at, _ in sampler.samples(since=1_000_005.0)] == [1_000_010.0, 1_000_015.0]


@pytest.mark.parametrize(("interval", "window"), [(0, 10), (-1, 10), (10, 5)])
def test_an_invalid_interval_or_window_is_refused(interval: float, window: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        Sampler(Counters(), interval=interval, window=window)


def test_merge_adds_workers_slot_by_slot_and_marks_gaps_null() -> None:
    """Two workers add up; a slot nobody sampled (a restart) is null; a series missing in a slot is 0."""
    a = [
        (100.0, [("active", "echo", "", 2)]),
        (105.0, [("active", "echo", "", 3)]),
        (120.0, [("active", "echo", "", 1)]),
    ]
    b = [(105.0, [("active", "echo", "", 4), ("closes", "echo", "1000", 7)]), (120.0, [])]
    merged = merge([a, b], interval=5, window=900)
    assert merged["times"] == [100.0, 105.0, 110.0, 115.0, 120.0]
    assert merged["series"] == [
        {"name": "active", "api": "echo", "label": "", "values": [2, 7, None, None, 1]},
        {"name": "closes", "api": "echo", "label": "1000", "values": [0, 7, None, None, 0]},
    ]


def test_merge_reads_samples_that_came_through_json() -> None:
    """A Redis reply carries lists, not tuples; an API filter and since apply."""
    answer = [[100, [["bytes", "echo", "in", 10], ["bytes", "chat", "in", 99]]], [105, [["bytes", "echo", "in", 30]]]]
    assert merge([answer], interval=5, window=900, api="echo")["series"] == [
        {"name": "bytes", "api": "echo", "label": "in", "values": [10, 30]}
    ]
    assert merge([answer], interval=5, window=900, since=100)["times"] == [105.0]
    assert merge([], interval=5, window=900) == {"times": [], "series": []}


def test_merge_does_not_stretch_the_axis_for_a_skewed_worker() -> None:
    """A worker whose clock is a day behind cannot make the answer a day of nulls long."""
    now = [(86_400.0, [("active", "echo", "", 1)])]
    skewed = [(0.0, [("active", "echo", "", 5)])]
    merged = merge([now, skewed], interval=5, window=60)
    assert len(merged["times"]) == 13 and merged["times"][-1] == 86_400.0


def test_merge_with_a_fractional_interval_keeps_every_slot() -> None:
    clock, counters = Clock(10.0), Counters()
    sampler = Sampler(counters, interval=0.1, window=10, clock=clock)
    counters.values = {("active", "echo", ""): 1}
    for _ in range(30):
        sampler.sample()
        clock.now += 0.1
    merged = merge([sampler.samples()], interval=0.1, window=10)
    assert len(merged["times"]) == 30
    assert merged["series"][0]["values"] == [1] * 30


def test_refusals_are_newest_first_bounded_and_filtered() -> None:
    clock = Clock()
    log = RefusalLog(size=3, clock=clock)
    for i in range(5):
        clock.now += 1
        log.add(api="chat" if i % 2 else "echo", status=401 + i, reason="r", policy=None, detail="d")
    assert [r["status"] for r in log.recent()] == [405, 404, 403]
    assert [r["status"] for r in log.recent("chat")] == [404]
    assert log.recent()[0] == {
        "at": 1_000_005.0, "api": "echo", "status": 405, "reason": "r", "policy": None, "detail": "d"
    }  # fmt: skip


@pytest.mark.parametrize(
    "leak",
    [
        "token rejected: {jwt}",
        "upstream ws://127.0.0.1:9/x?access_token={jwt}&key=s3cr3t-q refused",
        "Authorization: Bearer {jwt}",
        "wss://alice:{jwt}@host/ws failed",
    ],
)
def test_a_refusal_keeps_no_secret(leak: str) -> None:
    """Whatever the detail or reason carried, a JWT, a query value or a URL password is redacted."""
    jwt = token()
    log = RefusalLog()
    log.add(api="chat", status=401, reason=leak.format(jwt=jwt), policy="validate-jwt", detail=leak.format(jwt=jwt))
    entry = log.recent()[0]
    assert jwt not in str(entry) and jwt[:40] not in str(entry) and "s3cr3t-q" not in str(entry)
    assert "REDACTED" in entry["detail"]


def test_a_long_detail_is_cut_after_redaction() -> None:
    """A JWT straddling the cut is still redacted whole, not left as a recognisable prefix."""
    jwt = token()
    log = RefusalLog()
    log.add(api="a", status=400, reason="r", policy=None, detail="x" * (MAX_DETAIL - 20) + " " + jwt)
    detail = log.recent()[0]["detail"]
    assert len(detail) <= MAX_DETAIL + 3 and jwt[:15] not in detail


def test_a_refusal_log_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="size"):
        RefusalLog(size=0)


def test_merge_keeps_every_slot_of_a_fractional_interval_at_todays_unix_times() -> None:
    """Near 1.8e9 s a 0.2 s slot is not exact in floating point: no slot may come out a gap."""
    for start in (1_796_101_254.2, 1_796_101_254.4000001, 1_796_101_254.5999999):
        clock, counters = Clock(start), Counters()
        sampler = Sampler(counters, interval=0.2, window=900, clock=clock)
        counters.values = {("active", "echo", ""): 1}
        for _ in range(50):
            sampler.sample()
            clock.now += 0.2
        merged = merge([sampler.samples(), sampler.samples()], interval=0.2, window=900)
        assert len(merged["times"]) == 50
        assert merged["series"][0]["values"] == [2] * 50


@pytest.mark.parametrize(("interval", "window"), [(0, 900), (-5, 900), (10, 5)])
def test_management_refuses_a_bad_sample_interval_or_window_at_start_up(interval: float, window: float) -> None:
    gateway = WebSocketGateway(not_found, config={"apis": []})
    with pytest.raises(ValueError, match="sample_interval"):
        GatewayManagement(gateway, admin_token="t", sample_interval=interval, sample_window=window)


def test_merge_ends_at_the_last_slot_every_worker_sampled() -> None:
    """A request straddling a slot boundary: one worker's newest slot alone would show a false dip."""
    a = [(100.0, [("active", "echo", "", 2)]), (105.0, [("active", "echo", "", 2)])]
    b = [
        (100.0, [("active", "echo", "", 3)]),
        (105.0, [("active", "echo", "", 3)]),
        (110.0, [("active", "echo", "", 3)]),
    ]
    merged = merge([a, b], interval=5, window=900)
    assert merged["times"] == [100.0, 105.0]
    assert merged["series"][0]["values"] == [5, 5]


async def test_the_running_sampler_reads_the_counters_off_the_event_loop() -> None:
    """Reading adds up every open connection (0.2 s at 100,000): every relay would wait that out each
    interval if the loop did it."""
    loop_thread = threading.get_ident()
    readers: list[int] = []
    counters = Counters()
    counters.values = {("active", "chat", ""): 2}

    def read() -> dict[SeriesKey, int]:
        readers.append(threading.get_ident())
        return counters()

    sampler = Sampler(read, interval=0.05, window=10)
    task = asyncio.create_task(sampler.run())
    try:
        async with asyncio.timeout(10):
            while len(sampler.samples()) < 2:  # noqa: ASYNC110 - the sampler's own schedule
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert readers and loop_thread not in readers
    assert sampler.samples()[-1][1] == [("active", "chat", "", 2)]
