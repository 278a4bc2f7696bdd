"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness).

``/healthz`` answers while the process does and touches no dependency, so an
orchestrator restarts only a process that is really stuck. ``/readyz`` says
whether this process can serve tokens now:

- the database answers ``SELECT 1`` and a signing key is loaded, else 503;
- Redis (when configured) answers ``PING``. When it does not, the token
  endpoint still issues under ``ISSUER_RATE_LIMIT_FAIL=open`` (limits decided in
  this process alone): 200 with ``"status": "degraded"``, so a load balancer keeps
  the node; under ``closed`` it refuses tokens, so 503.

Each probe has a short timeout: a hung dependency makes the answer slow by at
most that much, never hangs the probe.
"""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from issuer.services import Services, services_of
from issuer.store.db import ping

PROBE_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    services = services_of(request)
    database, redis = await asyncio.gather(_database(services), _redis(services))
    try:
        services.keyring.active  # noqa: B018 -- raises when no key is loaded
        signing_key = "ok"
    except RuntimeError:
        signing_key = "no active signing key"
    checks = {"database": database, "signing_key": signing_key}
    if services.redis is not None:
        checks["redis"] = redis
    failing = {name: state for name, state in checks.items() if state != "ok"}
    closed = services.settings.rate_limit_fail == "closed"
    if set(failing) - {"redis"} or ("redis" in failing and closed):
        status, code = "unavailable", 503
    elif failing:
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    body = {"status": status, "checks": checks}
    return Response(json.dumps(body), status_code=code, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


async def _database(services: Services) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await ping(services.engine)
    except TimeoutError:
        return "timeout"
    except Exception as error:  # any driver's failure means "not ready"
        return f"unreachable ({type(error).__name__})"
    return "ok"


async def _redis(services: Services) -> str:
    if services.redis is None:
        return "not configured"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await services.redis.ping()
    except TimeoutError:
        return "timeout"
    except Exception as error:
        return f"unreachable ({type(error).__name__})"
    return "ok"
