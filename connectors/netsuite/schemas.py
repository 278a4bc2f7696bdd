"""The connector API's bodies: pydantic models that validate requests and document
answers in /openapi.json (``issuer/openapi.py``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from connectors.netsuite.autorotation import DEFAULT_OVERLAP, TOKEN_LIFETIME
from connectors.netsuite.connector import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_THROTTLE_PERIOD,
    DEFAULT_THROTTLE_REQUESTS,
)
from issuer.admin.handlers import OBJECT_ID, TEXT, PageQuery, PatchModel
from issuer.admin.http import RequestModel, ResponseModel

Algorithm = Literal["PS256", "ES256", "ES384", "ES512"]
Scope = Literal["restlets", "rest_webservices", "suite_analytics", "mcp"]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=TEXT)]
CertificateId = Annotated[str, StringConstraints(min_length=1, max_length=200,
                                                 pattern=r"^[A-Za-z0-9_-]+$")]


class Throttle(RequestModel):
    model_config = ConfigDict(strict=True)

    requests: int = Field(DEFAULT_THROTTLE_REQUESTS, ge=1, le=10_000)
    period_seconds: int = Field(DEFAULT_THROTTLE_PERIOD, ge=1, le=86_400)


class ConnectorCreate(RequestModel):
    model_config = ConfigDict(strict=True)

    tenant_id: str | None = Field(None, pattern=OBJECT_ID,
                                  description="default: the caller's tenant")
    name: Name
    account_id: Short = Field(description="NetSuite account id, e.g. 1234567 or 1234567_SB1")
    client_id: Short = Field(description="the integration record's Client ID (JWT iss)")
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    algorithm: Algorithm = Field("PS256", description="PS256 = RSA-4096; ES256/384/512 = "
                                 "EC P-256/384/521")
    token_url: Url | None = Field(None, description="default: derived from account_id")
    rest_base_url: Url | None = Field(None, description="default: derived from account_id")
    restlets_base_url: Url | None = Field(None, description="default: derived from account_id")
    throttle: Throttle | None = Field(None, description="default: 20 requests per 60 s")
    max_concurrency: int = Field(DEFAULT_MAX_CONCURRENCY, ge=1, le=100)


class ConnectorPatch(PatchModel):
    """Left-out fields keep their value; a URL set to null goes back to its default."""

    not_null = ("name", "client_id", "scopes", "throttle", "max_concurrency")

    name: Name | None = None
    client_id: Short | None = None
    scopes: list[Scope] | None = Field(None, min_length=1, max_length=3)
    token_url: Url | None = None
    rest_base_url: Url | None = None
    restlets_base_url: Url | None = None
    throttle: Throttle | None = None
    max_concurrency: int | None = Field(None, ge=1, le=100)


class CertificateIdBody(RequestModel):
    model_config = ConfigDict(strict=True)

    certificate_id: CertificateId = Field(description="the Certificate ID NetSuite shows for "
                                          "the uploaded certificate (the JWT kid)")


class AutoRotation(RequestModel):
    model_config = ConfigDict(strict=True)

    entity: int = Field(description="the mapping's entity (NetSuite internal id)")
    role: int = Field(description="the mapping's role (NetSuite internal id)")
    overlap_seconds: int = Field(DEFAULT_OVERLAP, ge=TOKEN_LIFETIME, le=7 * 86400,
                                 description="how long the old certificate stays valid")


class AutoRotated(ResponseModel):
    success: bool
    message: str
    certificate_id: str
    previous_certificate_id: str | None
    revoke_previous_at: str | None


class ThrottleOut(ResponseModel):
    requests: int
    period_seconds: int


class Connector(ResponseModel):
    id: str
    tenant_id: str
    name: str
    auth_type: Literal["netsuite_m2m"]
    account_id: str
    client_id: str
    scopes: list[str]
    algorithm: str
    token_url: str
    rest_base_url: str
    restlets_base_url: str
    throttle: ThrottleOut
    max_concurrency: int
    primary_key_id: str | None
    active_key_id: str | None
    secondary_key_id: str | None
    active_certificate_id: str | None
    pending_certificate_id: str | None
    certificate_expires_at: str | None
    rotation_in_progress: bool
    rotation_initiated_at: str | None
    retiring_certificate_id: str | None = Field(
        description="after an automatic rotation: the old certificate, revoked at "
                    "retiring_certificate_revoke_at")
    retiring_certificate_revoke_at: str | None
    created_at: str
    updated_at: str


class ConnectorPage(ResponseModel):
    items: list[Connector]
    next_cursor: str | None


class ConnectorQuery(PageQuery):
    tenant_id: str | None = Field(
        None, description="only this tenant's connectors (an impossible id: 404)")


class RotationStarted(ResponseModel):
    message: str
    certificate: str = Field(description="the new public certificate (PEM) to upload")


class Outcome(ResponseModel):
    success: bool
    message: str


class Verified(ResponseModel):
    success: bool
    token_preview: str = Field(description="Bearer <first 20 characters>...")
    expires_in: int
