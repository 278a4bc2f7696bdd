"""First start: the platform tenant and its first admin client.

Runs from ``issuer migrate`` and ``issuer serve``. Whichever first finds no
platform tenant creates tenant ``default`` (the platform tenant) and a client
allowed ``admin`` and ``introspect``, in one transaction, and returns the
client's secret to be printed once. Later runs find the tenant and do nothing:
the secret is never shown again (rotate it through the admin API if lost).
"""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from issuer import audit, tenant_names
from issuer.audit import AuditEvent
from issuer.clock import Clock, utc
from issuer.registration import ClientSpec, NewClient, create_client
from issuer.store import tenants
from issuer.store.models import Tenant

PLATFORM_TENANT = "default"
PLATFORM_ADMIN_SCOPES = ("admin", "introspect")


async def bootstrap(engine: AsyncEngine, clock: Clock) -> NewClient | None:
    """Create the platform tenant and admin client if there is no platform tenant yet."""
    if await tenants.platform_tenant_id(engine) is not None:
        return None
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session:
        try:
            async with session.begin():
                now = utc(clock.now())
                tenant = Tenant(id=str(uuid.uuid4()), name=PLATFORM_TENANT,
                                name_key=tenant_names.key(PLATFORM_TENANT), status="active",
                                platform=True, created_at=now, updated_at=now)
                await tenants.add(session, tenant)
                created = await create_client(session, ClientSpec(
                    tenant_id=tenant.id, name="platform admin",
                    allowed_scopes=PLATFORM_ADMIN_SCOPES), clock, actor="bootstrap")
                await audit.record(session, AuditEvent.PLATFORM_BOOTSTRAPPED, at=clock.now(),
                                   actor="bootstrap", tenant_id=tenant.id,
                                   client_id=created.record.client_id,
                                   details={"tenant": PLATFORM_TENANT})
        except IntegrityError:
            return None  # another process bootstrapped first, or a tenant named "default" exists
        return created
