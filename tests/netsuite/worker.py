"""A separate process asking for one connector's token N times at once (the cross-process
single-flight test): ``python -m tests.netsuite.worker DB REDIS CONNECTOR_ID N HOST START``.
Prints the SHA-256 digests of the tokens it got, as JSON."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time

import httpx
from redis.asyncio import Redis

from connectors.netsuite import NetSuiteM2MService
from issuer.clock import SystemClock
from issuer.crypto import Encryptor
from issuer.store.db import create_engine
from tests.conftest import TEST_MASTER_KEY


async def main(database_url: str, redis_url: str, connector_id: str, count: int,
               allowed_host: str, start: float) -> list[str]:
    engine = create_engine(database_url)
    redis = Redis.from_url(redis_url)
    try:
        async with httpx.AsyncClient() as http:
            service = NetSuiteM2MService(engine=engine, encryptor=Encryptor(TEST_MASTER_KEY),
                                         clock=SystemClock(), http=http, redis=redis,
                                         allowed_hosts=[allowed_host])
            await asyncio.sleep(max(0.0, start - time.time()))  # both processes at once
            tokens = await asyncio.gather(*(service.get_or_refresh_access_token(connector_id)
                                            for _ in range(count)))
    finally:
        await redis.aclose()
        await engine.dispose()
    return [hashlib.sha256(token.access_token.encode()).hexdigest() for token in tokens]


if __name__ == "__main__":
    database, redis_url, connector, count, host, start = sys.argv[1:]
    print(json.dumps(asyncio.run(main(database, redis_url, connector, int(count), host,
                                      float(start)))))
