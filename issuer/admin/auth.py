"""Admin authorization: this issuer's own access tokens as Bearer tokens, or -- for a
DPoP-bound token -- with the DPoP scheme and a proof for the request (RFC 9449 §7).

The token is verified offline by ``jwks.verifier.JWKSVerifier`` -- the library resource
servers use -- over the key ring (``issuer.keys.local.KeyRingSource``) instead of HTTP: the
issuer eats its own cooking. That is every RFC 9068 §4 check (``typ`` at+jwt, ``alg``,
signature by a published key, ``iss``, ``aud`` = ``ISSUER_URL``, ``exp``/``nbf``/``iat``
with leeway, required claims). Then -- because the admin API is low volume and its
power is high -- the token is checked online too, in one query on every request: not
revoked, its client and tenant still active and not disabled since it was issued
(the kill switch), and its scopes still allowed to its client.

Roles: scope ``admin`` on a client of the platform (bootstrap) tenant = platform
admin; scope ``admin`` on any other tenant's client = admin of that tenant only;
scope ``integrator`` = connector APIs of its tenant only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from issuer.clock import Clock
from issuer.errors import (
    InsufficientScope,
    InvalidDPoPProofAtAdmin,
    InvalidRequest,
    InvalidToken,
    NotFound,
    TooManyAdminRequests,
)
from issuer.keys.local import KeyRingSource
from issuer.keys.ring import KeyRing
from issuer.oauth.scopes import scope_allowed
from issuer.oauth.tokens import live
from issuer.ratelimit import enforce
from issuer.services import Services, services_of
from issuer.settings import SIGNING_ALGS, Settings
from issuer.store import issued_tokens
from jwks.dpop import ReplayStore
from jwks.errors import DPoPProofInvalid
from jwks.verifier import JWKSVerifier, TokenError, VerifiedToken

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
    dpop: bool = False  # the request came with the DPoP scheme (its challenges too)

    def sees(self, tenant_id: str | None) -> bool:
        return self.platform or tenant_id == self.tenant_id

    def check_tenant(self, tenant_id: str | None) -> None:
        """Another tenant's object is answered exactly like a missing one: 404."""
        if not self.sees(tenant_id):
            raise NotFound(reason="other_tenant")


def admin_verifier(settings: Settings, keyring: KeyRing, clock: Clock,
                   dpop_replay: ReplayStore) -> JWKSVerifier:
    """The admin API's verifier (built once, in the lifespan): the issuer is the issuer
    and the audience of its own admin tokens; every algorithm it can sign
    with is accepted, so switching ``ISSUER_SIGNING_ALG`` keeps older tokens valid.
    DPoP proofs are spent in the token endpoint's replay store (shared by every
    process), within the same window."""
    return JWKSVerifier(settings.issuer_url, settings.issuer_url, algorithms=SIGNING_ALGS,
                        leeway=LEEWAY, clock=clock, key_source=KeyRingSource(keyring, clock),
                        dpop_replay=dpop_replay, dpop_max_age=settings.dpop_proof_max_age,
                        dpop_leeway=settings.dpop_proof_leeway)


async def verify_claims(token: str, services: Services) -> VerifiedToken:
    """Offline checks of an access token this issuer signed. Raises InvalidToken."""
    try:
        verified = await services.admin_verifier.verify(token)
    except TokenError as error:
        # Which check failed goes to the reason (logs), never to the caller.
        raise InvalidToken(reason=f"{type(error).__name__}: {error}") from None
    return _ours(verified, dpop=False)


async def verify_dpop_claims(token: str, request: Request, services: Services) -> VerifiedToken:
    """RFC 9449 §7: a DPoP-bound token with the request's proof, for this request's
    method and URL (the issuer's public URL and the path: behind a proxy the URL the
    client signed is the public one). Raises InvalidToken or InvalidDPoPProofAtAdmin."""
    url = services.settings.issuer_url + request.url.path
    try:
        verified = await services.admin_verifier.verify_dpop(
            token, request.headers.getlist("dpop"), method=request.method, url=url)
    except DPoPProofInvalid as error:
        raise InvalidDPoPProofAtAdmin(reason=f"{type(error).__name__}: {error}") from None
    except TokenError as error:
        raise InvalidToken(reason=f"{type(error).__name__}: {error}", dpop=True) from None
    return _ours(verified, dpop=True)


def _ours(verified: VerifiedToken, *, dpop: bool) -> VerifiedToken:
    # Our tokens always carry these; a token without them is not ours.
    for name in ("tenant_id", "scope"):
        if not isinstance(verified.claims.get(name), str):
            raise InvalidToken(reason=f"missing_{name}", dpop=dpop)
    return verified


async def authenticate(request: Request) -> Principal:
    services = services_of(request)
    # RFC 6750 §3.1 invalid_request: "uses more than one method for including an access
    # token" -- two Authorization headers would leave open which one counts.
    if len(request.headers.getlist("authorization")) > 1:
        raise InvalidRequest("Send one Authorization header", reason="repeated_authorization")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    scheme, token = scheme.lower(), token.strip()
    dpop = scheme == "dpop"
    if dpop and token:
        verified = await verify_dpop_claims(token, request, services)
    elif scheme == "bearer" and token:
        verified = await verify_claims(token, services)
    else:
        raise InvalidToken(reason="missing_bearer_token")
    client_id, tenant_id = verified.client_id, str(verified.tenant_id)
    jti = str(verified.claims["jti"])
    platform_tenant, allowed = await _online_check(services.engine, jti, client_id, tenant_id)
    # The token's scopes count only while its client is still allowed them: taking
    # ``admin`` off a client disarms its admin tokens at the next request.
    scopes = frozenset(scope for scope in verified.scopes if scope_allowed(scope, allowed))
    return Principal(client_id=client_id, tenant_id=tenant_id, scopes=scopes,
                     platform=platform_tenant and ADMIN in scopes, jti=jti, dpop=dpop)


async def _online_check(engine: AsyncEngine, jti: str, client_id: str,
                        tenant_id: str) -> tuple[bool, list[str]]:
    """The token is not revoked, its client and tenant are active and were not disabled
    since it was issued (the kill switch). Read fresh on every admin request (one
    query, no cache): the client's current allowed scopes, and whether its tenant is
    the platform's."""
    row = await issued_tokens.admin_standing(engine, jti, client_id, tenant_id)
    if row is None:
        raise InvalidToken(reason="unknown_token")
    if row.revoked_at is not None:
        raise InvalidToken(reason="revoked")
    if not (live(row.client_status, row.client_valid_after, row.issued_at)
            and live(row.tenant_status, row.tenant_valid_after, row.issued_at)):
        raise InvalidToken(reason="client_or_tenant_disabled")
    return row.platform, list(row.allowed_scopes)


async def require(request: Request, *any_of: str) -> Principal:
    """The caller, if its token carries one of ``any_of`` scopes; else 401/403."""
    principal = await authenticate(request)
    services = services_of(request)
    # Per admin client, before the handler reads or writes anything.
    try:
        await enforce(services.limiter, services.rate_policies.admin_client(
            principal.client_id), error=TooManyAdminRequests)
    except TooManyAdminRequests as refused:
        services.metrics.rate_limited.labels(refused.policy).inc()
        raise
    if not principal.scopes & set(any_of):
        raise InsufficientScope(" ".join(any_of), dpop=principal.dpop)
    return principal


async def require_integrator(request: Request) -> Principal:
    """The caller of a connector API: ``admin`` or ``integrator``. Tenant
    scoping is the handler's, through :meth:`Principal.check_tenant`."""
    return await require(request, ADMIN, INTEGRATOR)


async def require_platform(request: Request) -> Principal:
    principal = await require(request, ADMIN)
    if not principal.platform:
        raise InsufficientScope(ADMIN, dpop=principal.dpop)
    return principal


async def require_connector_role(request: Request) -> Principal:
    """The connector APIs: an ``admin`` or ``integrator`` of the tenant (or a
    platform admin); any other token is 403."""
    return await require(request, ADMIN, INTEGRATOR)
