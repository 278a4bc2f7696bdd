"""Signing keys: ``GET /api/v1/keys`` and ``POST /api/v1/keys/rotate``.

Platform admin only: the signing keys are the platform's, shared by every tenant.
The listing shows metadata, never key material (the public halves are at
``/.well-known/jwks.json``). A rotation that would promote a ``next`` key younger
than the pre-publication lead (``issuer.keys.policy.RotationPolicy.min_next_age``) is
refused with 409 unless the body says ``{"force": true}``; this process signs with
the new key at once, the others within their reload interval.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from issuer.admin.auth import ADMIN, require_platform
from issuer.admin.handlers import actor, iso, services
from issuer.admin.http import Endpoint, RequestModel, ResponseModel, json_response, parse_body
from issuer.errors import Conflict
from issuer.keys.ring import RotationRefused, list_keys
from issuer.store.models import SigningKeyRow

TAG = "keys"
State = Literal["next", "active", "retired"]


class KeyMetadata(ResponseModel):
    kid: str = Field(description="RFC 7638 thumbprint, the tokens' `kid` header")
    alg: str
    state: State
    created_at: str = Field(description="ISO 8601, UTC")
    activated_at: str | None = Field(description="when it began to sign")
    retired_at: str | None = Field(description="when it stopped signing")


class KeyList(ResponseModel):
    items: list[KeyMetadata]
    next_cursor: str | None = Field(description="always null: the ring is a handful of keys")


class RotateRequest(RequestModel):
    """May be left out: a rotation that is not forced."""

    model_config = ConfigDict(strict=True)
    body_optional = True

    force: bool = Field(False, description="promote a `next` key younger than the JWKS "
                        "max-age + reload interval; warm resource-server caches refetch once")


class RotationResult(ResponseModel):
    alg: str
    retired_kid: str | None = Field(description="the key that signed until now (still "
                                    "published until its tokens expire)")
    active_kid: str = Field(description="the key that signs from now on")
    next_kid: str = Field(description="the key published for the next rotation")
    forced: bool


async def get_keys(request: Request) -> Response:
    await require_platform(request)
    async with AsyncSession(services(request).engine) as session:
        rows = await list_keys(session)
    return json_response({"items": [key_json(row) for row in rows], "next_cursor": None})


async def rotate_keys(request: Request) -> Response:
    principal = await require_platform(request)
    body = await parse_body(request, RotateRequest)
    who = actor(request, principal)
    try:
        rotation = await services(request).keyring.rotate(
            force=body.force, actor=who.client_id, source=who.source,
            request_id=who.request_id)
    except RotationRefused as refused:
        raise Conflict(str(refused)) from None
    return json_response(RotationResult.model_validate({
        "alg": rotation.alg, "retired_kid": rotation.retired_kid,
        "active_kid": rotation.active_kid, "next_kid": rotation.next_kid,
        "forced": rotation.forced}).model_dump(mode="json"))


def key_json(row: SigningKeyRow) -> dict[str, Any]:
    """The documented shape, checked: metadata only, never key material."""
    return KeyMetadata.model_validate({
        "kid": row.kid, "alg": row.alg, "state": row.state,
        "created_at": iso(row.created_at.timestamp()),
        "activated_at": iso(row.activated_at.timestamp()) if row.activated_at else None,
        "retired_at": iso(row.retired_at.timestamp()) if row.retired_at else None,
    }).model_dump(mode="json")


PATH = "/api/v1/keys"
ROTATE = "/api/v1/keys/rotate"

endpoints: list[Endpoint] = [
    Endpoint("GET", PATH, get_keys, "List signing keys: metadata only (platform admin)", TAG,
             response=KeyList, roles=(ADMIN,), errors=(401, 403)),
    Endpoint("POST", ROTATE, rotate_keys, "Rotate the signing key: next -> active -> retired "
             "(platform admin)", TAG, request=RotateRequest, response=RotationResult,
             roles=(ADMIN,), errors=(401, 403, 409, 422)),
]
