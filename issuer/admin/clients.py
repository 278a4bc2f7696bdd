"""Clients and their secrets: ``/api/v1/clients``.

Field names follow RFC 7591 §2 client metadata where one exists (``client_id``,
``client_secret``, ``grant_types``, ``scope`` as lists here), snake_case
throughout. The secret is returned once, at creation or rotation, and only its
digest is stored (RFC 7591 §3.2.1: the server issues it); no answer carries a
digest.

Rotation without downtime: ``POST /api/v1/clients/{client_id}/secret`` makes a new
secret and keeps the previous one valid for ``grace_seconds`` (default 24 h, 0 =
revoked at once); ``DELETE .../secret/previous`` ends the grace early. The token
endpoint accepts either during the grace and audits which one it saw.

Platform admins reach every tenant's clients; a tenant admin its own tenant's,
and another tenant's client answers 404 like a missing one.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from issuer import changes, registration
from issuer.admin.auth import ADMIN, require
from issuer.admin.handlers import (
    OBJECT_ID,
    TEXT,
    PageQuery,
    PatchModel,
    actor,
    iso,
    listed_tenant,
    object_id,
    parse_query,
    registration_errors,
    services,
    transaction,
)
from issuer.admin.http import (
    Endpoint,
    RequestModel,
    ResponseModel,
    json_response,
    page_limit,
    parse_body,
    read_cursor,
)
from issuer.errors import NO_STORE, NotFound
from issuer.registration import ClientSpec
from issuer.store import clients, tenants
from issuer.store.records import ClientRecord

TAG = "clients"
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); wildcards are checked later.
ScopeEntry = Annotated[str, StringConstraints(min_length=1, max_length=200,
                                              pattern=r"^[\x21\x23-\x5B\x5D-\x7E]+$")]
#: No space or control character: spelled out, not ``\s``, whose meaning differs
#: between the server's regex engine and ECMA-262's (OpenAPI's).
VISIBLE = (r"[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200B\u2028\u2029\u202F\u205F\u3000"
           r"\uFEFF]")
Audience = Annotated[str, StringConstraints(min_length=1, max_length=2000,
                                            pattern=rf"^{VISIBLE}+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT)]
TokenTtl = Annotated[int, Field(ge=60, le=86400, description="seconds")]
RateLimit = Annotated[str, StringConstraints(pattern=registration.RATE_LIMIT.pattern),
                      Field(description="like ISSUER_RATE_LIMIT, e.g. 600/minute")]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "client_secret_jwt",
                     "private_key_jwt", "federated_jwt"]
JwksUri = Annotated[str, StringConstraints(min_length=1, max_length=2000,
                                           pattern=rf"^https://{VISIBLE}+$"),
                    Field(description="private_key_jwt: an https URL serving the client's "
                                      "public JWK Set (RFC 7591 §2)")]
Jwks = Annotated[dict[str, Any], Field(description='private_key_jwt: the client\'s public '
                                       'JWK Set, {"keys": [...]} (RFC 7591 §2); a private '
                                       'key in it is refused')]
DPoPBound = Annotated[bool, Field(description="RFC 9449 §5.2: every token request must "
                                  "carry a DPoP proof (the tokens are DPoP-bound)")]


class FederatedCredential(RequestModel):
    """federated_jwt: an external token (a Kubernetes service-account token, a CI job's
    OIDC token, a SPIFFE JWT-SVID) authenticates the client when its ``iss`` is this
    trusted issuer's, its ``sub`` matches and its ``aud`` holds ``audience``."""

    model_config = ConfigDict(strict=True)

    trusted_issuer_id: str = Field(pattern=OBJECT_ID,
                                   description="one of the client's tenant's trusted issuers")
    subject: str = Field(min_length=1, max_length=1024, pattern=TEXT,
                         description="the external token's sub, exactly; or a prefix "
                                     "ending in *")
    audience: Audience | None = Field(None, description="a value the external token's aud "
                                      "must hold; default: this issuer's token endpoint URL")


class FederatedCredentialOut(ResponseModel):
    trusted_issuer_id: str
    subject: str
    audience: str | None = Field(description="null: this issuer's token endpoint URL")


GrantType = Literal["client_credentials"]
Status = Literal["active", "disabled"]
#: The API's names for the registration's, where they differ.
_TO_SPEC = {"token_endpoint_auth_methods": "auth_methods"}


class ClientCreate(RequestModel):
    model_config = ConfigDict(strict=True)

    tenant_id: str | None = Field(None, pattern=OBJECT_ID,
                                  description="default: the caller's tenant")
    name: Name
    allowed_scopes: list[ScopeEntry] = Field(max_length=100)
    default_scopes: list[ScopeEntry] | None = Field(None, max_length=100)
    allowed_audiences: list[Audience] = Field(default_factory=list, max_length=20)
    default_audience: Audience | None = Field(None, description="default: the first allowed")
    grant_types: list[GrantType] = Field(["client_credentials"], min_length=1)
    token_endpoint_auth_methods: list[AuthMethod] = Field(
        ["client_secret_basic", "client_secret_post"], min_length=1, max_length=5)
    token_ttl: TokenTtl | None = None
    rate_limit: RateLimit | None = None
    jwks: Jwks | None = None
    jwks_uri: JwksUri | None = None
    dpop_bound_access_tokens: DPoPBound = False
    federated_credentials: list[FederatedCredential] = Field(default_factory=list,
                                                             max_length=20)


class ClientPatch(PatchModel):
    """Left-out fields keep their value; null resets ``default_scopes``,
    ``default_audience``, ``token_ttl`` or ``rate_limit`` to the default."""

    not_null = ("name", "allowed_scopes", "allowed_audiences", "grant_types",
                "token_endpoint_auth_methods", "status", "dpop_bound_access_tokens",
                "federated_credentials")

    name: Name | None = None
    allowed_scopes: list[ScopeEntry] | None = Field(None, max_length=100)
    default_scopes: list[ScopeEntry] | None = Field(None, max_length=100)
    allowed_audiences: list[Audience] | None = Field(None, max_length=20)
    default_audience: Audience | None = None
    grant_types: list[GrantType] | None = Field(None, min_length=1)
    token_endpoint_auth_methods: list[AuthMethod] | None = Field(None, min_length=1,
                                                                 max_length=5)
    token_ttl: TokenTtl | None = None
    rate_limit: RateLimit | None = None
    status: Status | None = None
    jwks: Jwks | None = None
    jwks_uri: JwksUri | None = None
    dpop_bound_access_tokens: DPoPBound | None = None
    federated_credentials: list[FederatedCredential] | None = Field(None, max_length=20)


class SecretRotation(RequestModel):
    """May be left out: a rotation with the default grace."""

    model_config = ConfigDict(strict=True)
    body_optional = True

    grace_seconds: int = Field(registration.DEFAULT_GRACE_SECONDS, ge=0,
                               le=registration.MAX_GRACE_SECONDS,
                               description="how long the previous secret stays valid")


class ClientQuery(PageQuery):
    tenant_id: str | None = Field(
        None, description="only this tenant's clients (an impossible id: 404)")


class Client(ResponseModel):
    client_id: str
    tenant_id: str
    name: str
    status: Status
    allowed_scopes: list[str]
    default_scopes: list[str] | None
    allowed_audiences: list[str]
    default_audience: str | None
    grant_types: list[str]
    token_endpoint_auth_methods: list[str]
    token_ttl: int | None
    rate_limit: str | None
    created_at: str = Field(description="ISO 8601, UTC")
    previous_secret_expires_at: str | None = Field(
        description="end of the previous secret's grace period (ISO 8601, UTC), if any")
    jwks: dict[str, Any] | None = Field(description="private_key_jwt: the public JWK Set")
    jwks_uri: str | None = Field(description="private_key_jwt: where the JWK Set is served")
    dpop_bound_access_tokens: DPoPBound
    federated_credentials: list[FederatedCredentialOut] = Field(
        description="federated_jwt: the external identities that authenticate the client")


class ClientWithSecret(Client):
    client_secret: str | None = Field(description="shown once; only its digest is stored "
                                      "(and, for client_secret_jwt, an encrypted copy); null "
                                      "for a client that authenticates with private_key_jwt "
                                      "only")


class ClientPage(ResponseModel):
    items: list[Client]
    next_cursor: str | None


async def create_client(request: Request) -> Response:
    principal = await require(request, ADMIN)
    body = await parse_body(request, ClientCreate)
    tenant_id = body.tenant_id or principal.tenant_id
    principal.check_tenant(tenant_id)
    fields = _spec_fields(body.model_dump(exclude={"tenant_id"}))
    with registration_errors():
        async with transaction(request) as session:
            created = await registration.register_client(
                session, ClientSpec(tenant_id=tenant_id, **fields), services(request).clock,
                actor(request, principal), encryptor=services(request).encryptor)
            await changes.record(session, changes.client_changed(created.record.client_id))
    response = json_response(client_json(created.record, created.client_secret,
                                         with_secret=True), 201)
    response.headers["Location"] = f"/api/v1/clients/{created.record.client_id}"
    return response


async def list_clients(request: Request) -> Response:
    """Platform admins page through every client (or one tenant's); a tenant admin
    through its tenant's. Naming a tenant one may not see is a 404."""
    principal = await require(request, ADMIN)
    query = parse_query(request, ClientQuery)
    limit = page_limit(request)
    after = read_cursor(clients.ORDER, query.cursor)
    tenant_id = listed_tenant(request, principal)
    async with AsyncSession(services(request).engine) as session:
        if tenant_id is not None and await tenants.get(session, tenant_id) is None:
            raise NotFound(reason="unknown_tenant")
        page = await clients.page(session, after=after, limit=limit, tenant_id=tenant_id)
    return json_response({"items": [client_json(record) for record in page.items],
                          "next_cursor": page.next_cursor})


async def get_client(request: Request) -> Response:
    principal = await require(request, ADMIN)
    async with AsyncSession(services(request).engine) as session:
        record = await clients.get_client(session,
                                          object_id(request.path_params["client_id"]))
    if record is None or not principal.sees(record.tenant_id):
        raise NotFound(reason="unknown_or_other_tenant_client")
    return json_response(client_json(record))


async def update_client(request: Request) -> Response:
    principal = await require(request, ADMIN)
    body = await parse_body(request, ClientPatch)
    client_id = object_id(request.path_params["client_id"])
    with registration_errors():
        async with transaction(request) as session:
            record = await registration.update_client(
                session, client_id, _spec_fields(body.model_dump(exclude_unset=True)),
                services(request).clock, actor(request, principal), visible=principal.sees)
            await changes.record(session, changes.client_changed(client_id))
    return json_response(client_json(record))


async def delete_client(request: Request) -> Response:
    """The client is gone; its live tokens are revoked in the same transaction."""
    principal = await require(request, ADMIN)
    client_id = object_id(request.path_params["client_id"])
    with registration_errors():
        async with transaction(request) as session:
            await registration.delete_client(session, client_id, services(request).clock,
                                             actor(request, principal), visible=principal.sees)
            await changes.record(session, changes.client_changed(client_id))
    return Response(status_code=204, headers=NO_STORE)


async def rotate_secret(request: Request) -> Response:
    principal = await require(request, ADMIN)
    body = await parse_body(request, SecretRotation)
    client_id = object_id(request.path_params["client_id"])
    with registration_errors():
        async with transaction(request) as session:
            rotated = await registration.rotate_secret(
                session, client_id, body.grace_seconds, services(request).clock,
                actor(request, principal), visible=principal.sees,
                encryptor=services(request).encryptor)
            await changes.record(session, changes.client_changed(client_id))
    return json_response(client_json(rotated.record, rotated.client_secret,
                                     with_secret=True))


async def revoke_previous_secret(request: Request) -> Response:
    principal = await require(request, ADMIN)
    client_id = object_id(request.path_params["client_id"])
    with registration_errors():
        async with transaction(request) as session:
            await registration.revoke_previous_secret(
                session, client_id, services(request).clock, actor(request, principal),
                visible=principal.sees)
            await changes.record(session, changes.client_changed(client_id))
    return Response(status_code=204, headers=NO_STORE)


def _spec_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {_TO_SPEC.get(name, name): value for name, value in body.items()}


def client_json(record: ClientRecord, client_secret: str | None = None, *,
                with_secret: bool = False) -> dict[str, Any]:
    """The documented shape, checked; never a secret digest."""
    expires = record.previous_secret_expires_at
    data: dict[str, Any] = {
        "client_id": record.client_id, "tenant_id": record.tenant_id, "name": record.name,
        "status": record.status, "allowed_scopes": list(record.allowed_scopes),
        "default_scopes": (list(record.default_scopes) if record.default_scopes is not None
                           else None),
        "allowed_audiences": list(record.allowed_audiences),
        "default_audience": record.default_audience, "grant_types": list(record.grant_types),
        "token_endpoint_auth_methods": list(record.auth_methods),
        "token_ttl": record.token_ttl, "rate_limit": record.rate_limit,
        "created_at": iso(record.created_at),
        "previous_secret_expires_at": iso(expires) if expires is not None else None,
        "jwks": record.jwks, "jwks_uri": record.jwks_uri,
        "dpop_bound_access_tokens": record.dpop_bound,
        "federated_credentials": [asdict(credential)
                                  for credential in record.federated_credentials],
    }
    if not with_secret:
        return Client.model_validate(data).model_dump(mode="json")
    data["client_secret"] = client_secret
    return ClientWithSecret.model_validate(data).model_dump(mode="json")


PATH = "/api/v1/clients"
ITEM = "/api/v1/clients/{client_id}"
SECRET = "/api/v1/clients/{client_id}/secret"
PREVIOUS = "/api/v1/clients/{client_id}/secret/previous"

endpoints: list[Endpoint] = [
    Endpoint("POST", PATH, create_client, "Register a client; its secret is shown once", TAG,
             status=201, request=ClientCreate, response=ClientWithSecret, roles=(ADMIN,)),
    Endpoint("GET", PATH, list_clients, "List clients (a tenant admin sees its tenant's)", TAG,
             query=ClientQuery, response=ClientPage, roles=(ADMIN,),
             errors=(401, 403, 404, 422)),
    Endpoint("GET", ITEM, get_client, "Show a client", TAG, response=Client, roles=(ADMIN,),
             errors=(401, 403, 404)),
    Endpoint("PATCH", ITEM, update_client, "Change a client's metadata or status", TAG,
             request=ClientPatch, response=Client, roles=(ADMIN,),
             errors=(400, 401, 403, 404, 409, 422)),
    Endpoint("DELETE", ITEM, delete_client, "Delete a client and revoke its live tokens", TAG,
             status=204, roles=(ADMIN,), errors=(401, 403, 404, 409)),
    # 409: a private_key_jwt-only client has no secret; or a concurrent change.
    Endpoint("POST", SECRET, rotate_secret, "Rotate the secret; the previous one stays valid "
             "for a grace", TAG, request=SecretRotation, response=ClientWithSecret,
             roles=(ADMIN,), errors=(400, 401, 403, 404, 409, 422)),
    Endpoint("DELETE", PREVIOUS, revoke_previous_secret, "End the previous secret's grace "
             "period now", TAG, status=204, roles=(ADMIN,), errors=(401, 403, 404, 409)),
]
