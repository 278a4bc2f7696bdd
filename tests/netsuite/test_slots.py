"""``SharedSlots``: a connector's concurrency cap held across processes through Redis
(each ``SharedSlots`` here stands for one process); a dead holder's slot comes back
when its lease ends; without Redis a request goes ahead under its process's own cap."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from connectors.netsuite.slots import SharedSlots, slots_key


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_processes_together_hold_at_most_the_limit(redis):
    connector_id = str(uuid.uuid4())
    processes = [SharedSlots(redis, connector_id, 2) for _ in range(3)]
    held, most = 0, 0

    async def request(slots: SharedSlots) -> None:
        nonlocal held, most
        async with slots():
            held += 1
            most = max(most, held)
            await asyncio.sleep(0.005)
            held -= 1

    await asyncio.gather(*(request(slots) for slots in processes for _ in range(5)))
    assert (most, held) == (2, 0)
    assert await redis.zcard(slots_key(connector_id)) == 0  # every slot given back


async def test_a_dead_holders_slot_comes_back_when_its_lease_ends(redis):
    connector_id = str(uuid.uuid4())
    crashed = SharedSlots(redis, connector_id, 1, lease=0.05)
    holder = crashed()
    await holder.__aenter__()  # and never leaves: the process died
    waiting = SharedSlots(redis, connector_id, 1)
    async with asyncio.timeout(5):
        async with waiting():
            assert await redis.zcard(slots_key(connector_id)) == 1
    await holder.__aexit__(None, None, None)  # the test's own cleanup


async def test_without_redis_the_request_goes_ahead(caplog):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    try:
        async with SharedSlots(down, str(uuid.uuid4()), 1)():
            pass
    finally:
        await down.aclose()
    assert "NetSuite concurrency slots unavailable" in caplog.text
