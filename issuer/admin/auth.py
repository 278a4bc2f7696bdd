"""Admin authorization (DESIGN §4.5): this issuer's own access tokens as Bearer tokens.

The token is verified offline against the key ring (signature, ``typ``, ``iss``,
``exp``/``nbf``, audience = ``ISSUER_URL``), then -- because the admin API is low
volume and its power is high -- checked online too: the token is not revoked and
its client and tenant are still active.

Roles: scope ``admin`` on a client of the platform (bootstrap) tenant = platform
admin; scope ``admin`` on any other tenant's client = admin of that tenant only;
scope ``integrator`` = connector APIs of its tenant only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from issuer.errors import InsufficientScope, InvalidToken, NotFound
from issuer.oauth.tokens import decode_access_token
from issuer.services import Services
from issuer.store.models import Client, IssuedToken, Tenant

LEEWAY = 30  # seconds of clock skew tolerated on exp/nbf/iat
ADMIN = "admin"
INTEGRATOR = "integrator"


@dataclass(frozen=True)
class Principal:
    """Who is calling the admin API."""

    client_id: str
    tenant_id: str
    scopes: frozenset[str]
    platform: bool  # a client of the platform tenant holding ``admin``
    jti: str

    def sees(self, tenant_id: str | None) -> bool:
        return self.platform or tenant_id == self.tenant_id

    def check_tenant(self, tenant_id: str | None) -> None:
        """Another tenant's object is answered exactly like a missing one: 404."""
        if not self.sees(tenant_id):
            raise NotFound(reason="other_tenant")


def verify_claims(token: str, services: Services) -> dict[str, object]:
    """Offline checks of an access token this issuer signed. Raises InvalidToken."""
    settings = services.settings
    # Signature by a published key, typ at+jwt (RFC 9068 §4) and iss: shared with
    # introspection, which does not ask for the admin audience.
    claims = decode_access_token(token, services.keyring, settings.issuer_url)
    now = services.clock.now()
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if settings.issuer_url not in audiences:
        raise InvalidToken(reason="wrong_audience")
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int) or exp + LEEWAY <= now:
        raise InvalidToken(reason="expired")
    if isinstance(nbf, int) and nbf - LEEWAY > now:
        raise InvalidToken(reason="not_yet_valid")
    for name in ("jti", "client_id", "tenant_id", "scope"):
        if not isinstance(claims.get(name), str):
            raise InvalidToken(reason=f"missing_{name}")
    return claims


async def authenticate(request: Request) -> Principal:
    services: Services = request.state.services
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken(reason="missing_bearer_token")
    claims = verify_claims(token.strip(), services)
    client_id, tenant_id = str(claims["client_id"]), str(claims["tenant_id"])
    platform_tenant = await _online_check(services.engine, str(claims["jti"]), client_id,
                                          tenant_id)
    scopes = frozenset(str(claims["scope"]).split())
    return Principal(client_id=client_id, tenant_id=tenant_id, scopes=scopes,
                     platform=platform_tenant and ADMIN in scopes, jti=str(claims["jti"]))


async def _online_check(engine: AsyncEngine, jti: str, client_id: str, tenant_id: str) -> bool:
    """Not revoked, client and tenant active; returns whether the tenant is the platform's."""
    statement = (
        select(IssuedToken.revoked_at, Client.status, Tenant.status, Tenant.platform)
        .join(Client, Client.id == IssuedToken.client_id)
        .join(Tenant, Tenant.id == Client.tenant_id)
        .where(IssuedToken.jti == jti, IssuedToken.client_id == client_id,
               Tenant.id == tenant_id)
    )
    async with engine.connect() as connection:
        row = (await connection.execute(statement)).first()
    if row is None:
        raise InvalidToken(reason="unknown_token")
    revoked_at, client_status, tenant_status, platform = row
    if revoked_at is not None:
        raise InvalidToken(reason="revoked")
    if client_status != "active" or tenant_status != "active":
        raise InvalidToken(reason="client_or_tenant_disabled")
    return bool(platform)


async def require(request: Request, *any_of: str) -> Principal:
    """The caller, if its token carries one of ``any_of`` scopes; else 401/403."""
    principal = await authenticate(request)
    if not principal.scopes & set(any_of):
        raise InsufficientScope(" ".join(any_of))
    return principal


async def require_integrator(request: Request) -> Principal:
    """The caller of a connector API: ``admin`` or ``integrator`` (DESIGN §4.5). Tenant
    scoping is the handler's, through :meth:`Principal.check_tenant`."""
    return await require(request, ADMIN, INTEGRATOR)


async def require_platform(request: Request) -> Principal:
    principal = await require(request, ADMIN)
    if not principal.platform:
        raise InsufficientScope(ADMIN)
    return principal
