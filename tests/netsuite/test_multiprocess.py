"""Single flight across processes: two real worker
processes, 25 concurrent callers each, one connector with an empty cache, one Redis ->
exactly one token request reaches the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from connectors.netsuite import ConnectorSpec
from tests.netsuite.conftest import ACCOUNT, ACTOR

ROOT = Path(__file__).resolve().parents[2]


async def test_two_processes_sharing_redis_make_one_token_request(
        make_service, simulator, loopback, tenant_id, settings, redis_url):
    host = loopback.removeprefix("http://")
    service = make_service(allowed_hosts=[host])
    integration = simulator.add_integration()
    created = await service.create(ConnectorSpec(
        tenant_id=tenant_id, name="loopback", account_id=ACCOUNT,
        client_id=integration.client_id, scopes=["rest_webservices"], algorithm="ES256",
        token_url=f"{loopback}/services/rest/auth/oauth2/v1/token"), ACTOR)
    pem = await service.generate_key_pair(created.id, ACTOR)
    await service.record_certificate_id(
        created.id, simulator.upload(pem, integration.client_id), ACTOR)

    start = time.time() + 4  # both workers import and connect first, then go together
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.netsuite.worker", settings.database_url, redis_url,
        created.id, "25", host, str(start), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=environment) for _ in range(2)]
    outputs = []
    for worker in workers:
        stdout, stderr = await asyncio.wait_for(worker.communicate(), timeout=60)
        assert worker.returncode == 0, stderr.decode()
        outputs.append(json.loads(stdout))
    assert time.time() > start
    digests = {digest for output in outputs for digest in output}
    assert [len(output) for output in outputs] == [25, 25]
    assert len(digests) == 1
    assert simulator.token_requests == 1 and simulator.granted == 1
