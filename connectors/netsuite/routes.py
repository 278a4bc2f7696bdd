"""HTTP: ``/api/v1/ipaas/connectors`` and the plan's ``/{connectorId}/m2m/...`` endpoints.

The caller is an ``admin`` or ``integrator`` of the connector's tenant (a platform
admin: any tenant, naming it with ``tenant_id`` on create). Another tenant's connector
answers 404 like a missing one. Handlers are thin: parse, call the service
(:data:`connectors.netsuite.state.NETSUITE_SERVICE`), render; the service's errors
reach the caller as the rows :data:`ERRORS` maps them onto. No answer carries key
material, an assertion or a token -- only public certificates and the documented
``token_preview``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from connectors.netsuite.certificates_api import CertificateApiFailed
from connectors.netsuite.connector import (
    DEFAULT_THROTTLE_PERIOD,
    DEFAULT_THROTTLE_REQUESTS,
    ConnectorRecord,
    ConnectorSpec,
)
from connectors.netsuite.errors import (
    ConnectorNotFound,
    InvalidConnector,
    KeyPairExists,
    NetSuiteError,
    NetSuiteRequestFailed,
    NoKeyPair,
    RotationBusy,
)
from connectors.netsuite.rotation import CONFIRMED
from connectors.netsuite.schemas import (
    AutoRotated,
    AutoRotation,
    CertificateIdBody,
    Connector,
    ConnectorCreate,
    ConnectorPage,
    ConnectorPatch,
    ConnectorQuery,
    Outcome,
    RotationStarted,
    Throttle,
    Verified,
)
from connectors.netsuite.service import NetSuiteM2MService
from connectors.netsuite.state import NETSUITE_SERVICE
from connectors.netsuite.strategies import NETSUITE_M2M
from connectors.netsuite.token_client import TokenRequestFailed
from issuer.admin.auth import ADMIN, INTEGRATOR, require_integrator
from issuer.admin.handlers import (
    actor,
    iso,
    listed_tenant,
    object_id,
    page_json,
    page_params,
    parse_query,
)
from issuer.admin.http import (
    Endpoint,
    InvalidBody,
    json_response,
    parse_body,
)
from issuer.errors import (
    NO_STORE,
    Busy,
    Conflict,
    InvalidState,
    NotFound,
    Translation,
)

TAG = "netsuite"
PEM = "application/x-pem-file"


def _service(request: Request) -> NetSuiteM2MService:
    return NETSUITE_SERVICE(request)


#: The connector's errors as rows of the error table (``issuer.errors.ErrorTable``; the
#: most specific class decides).
ERRORS: dict[type[Exception], Translation] = {
    ConnectorNotFound: lambda error: NotFound(reason="unknown_or_other_tenant_connector"),
    InvalidConnector: lambda error: InvalidBody(details={"errors": [
        {"field": error.field, "message": str(error)}]}),  # type: ignore[attr-defined]  # this row gets InvalidConnector
    # NetSuite said no.
    TokenRequestFailed: lambda error: NetSuiteRequestFailed(str(error)),
    CertificateApiFailed: lambda error: NetSuiteRequestFailed(str(error)),
    KeyPairExists: lambda error: Conflict(str(error)),
    RotationBusy: lambda error: Busy(str(error), headers={"Retry-After": "1"}),
    # A state that does not allow the operation.
    NetSuiteError: lambda error: InvalidState(str(error)),
}


def _id(request: Request) -> str:
    return object_id(request.path_params["connector_id"])


def _ts(value: float | None) -> str | None:
    return iso(value) if value is not None else None


def connector_json(record: ConnectorRecord) -> dict[str, Any]:
    """The documented shape, checked: identifiers and settings, never key material."""
    return Connector.model_validate({
        "id": record.id, "tenant_id": record.tenant_id, "name": record.name,
        "auth_type": NETSUITE_M2M, "account_id": record.account_id,
        "client_id": record.client_id, "scopes": list(record.scopes),
        "algorithm": record.algorithm, "token_url": record.token_url,
        "rest_base_url": record.rest_base_url, "restlets_base_url": record.restlets_base_url,
        "throttle": {"requests": record.throttle_requests,
                     "period_seconds": record.throttle_period},
        "max_concurrency": record.max_concurrency, "primary_key_id": record.primary_key_id,
        "active_key_id": record.active_key_id, "secondary_key_id": record.secondary_key_id,
        "active_certificate_id": record.active_certificate_id,
        "pending_certificate_id": record.pending_certificate_id,
        "certificate_expires_at": _ts(record.certificate_expires_at),
        "rotation_in_progress": record.rotation_in_progress,
        "rotation_initiated_at": _ts(record.rotation_initiated_at),
        "retiring_certificate_id": record.retiring_certificate_id,
        "retiring_certificate_revoke_at": _ts(record.retiring_certificate_revoke_at),
        "created_at": iso(record.created_at), "updated_at": iso(record.updated_at),
    }).model_dump(mode="json")


def pem_response(pem: str) -> Response:
    return Response(pem, media_type=PEM, headers={
        **NO_STORE, "Content-Disposition": 'attachment; filename="netsuite_public_cert.pem"'})


async def create_connector(request: Request) -> Response:
    principal = await require_integrator(request)
    body = await parse_body(request, ConnectorCreate)
    tenant_id = body.tenant_id or principal.tenant_id
    principal.check_tenant(tenant_id)
    throttle = body.throttle or Throttle(requests=DEFAULT_THROTTLE_REQUESTS,
                                         period_seconds=DEFAULT_THROTTLE_PERIOD)
    spec = ConnectorSpec(
        tenant_id=tenant_id, name=body.name, account_id=body.account_id,
        client_id=body.client_id, scopes=body.scopes, algorithm=body.algorithm,
        token_url=body.token_url, rest_base_url=body.rest_base_url,
        restlets_base_url=body.restlets_base_url, throttle_requests=throttle.requests,
        throttle_period=throttle.period_seconds, max_concurrency=body.max_concurrency)
    created = await _service(request).create(spec, actor(request, principal))
    response = json_response(connector_json(created), 201)
    response.headers["Location"] = f"{PATH}/{created.id}"
    return response


async def list_connectors(request: Request) -> Response:
    principal = await require_integrator(request)
    parse_query(request, ConnectorQuery)
    limit, after = page_params(request)
    records, next_key = await _service(request).page(
        tenant_id=listed_tenant(request, principal), after=after, limit=limit)
    return json_response(page_json([connector_json(record) for record in records], next_key))


async def get_connector(request: Request) -> Response:
    principal = await require_integrator(request)
    record = await _service(request).get(_id(request), principal.sees)
    return json_response(connector_json(record))


async def update_connector(request: Request) -> Response:
    principal = await require_integrator(request)
    body = await parse_body(request, ConnectorPatch)
    changes = body.model_dump(exclude_unset=True)
    throttle = changes.pop("throttle", None) or {}  # merge-patch: a left-out member stays
    for member, column in (("requests", "throttle_requests"),
                           ("period_seconds", "throttle_period")):
        if member in throttle:
            changes[column] = throttle[member]
    record = await _service(request).update(_id(request), changes,
                                            actor(request, principal), principal.sees)
    return json_response(connector_json(record))


async def delete_connector(request: Request) -> Response:
    principal = await require_integrator(request)
    await _service(request).delete(_id(request), actor(request, principal), principal.sees)
    return Response(status_code=204, headers=NO_STORE)


async def create_key_pair(request: Request) -> Response:
    principal = await require_integrator(request)
    pem = await _service(request).generate_key_pair(_id(request), actor(request, principal),
                                                    principal.sees)
    return pem_response(pem)


async def get_certificate(request: Request) -> Response:
    principal = await require_integrator(request)
    try:
        pem = await _service(request).certificate(_id(request), principal.sees)
    except NoKeyPair:
        raise NotFound(reason="no_key_pair") from None
    return pem_response(pem)


async def put_certificate_id(request: Request) -> Response:
    principal = await require_integrator(request)
    body = await parse_body(request, CertificateIdBody)
    record = await _service(request).record_certificate_id(
        _id(request), body.certificate_id, actor(request, principal), principal.sees)
    return json_response(connector_json(record))


async def initiate_rotation(request: Request) -> Response:
    principal = await require_integrator(request)
    pem = await _service(request).initiate_rotation(_id(request), actor(request, principal),
                                                    principal.sees)
    return json_response(RotationStarted(
        message="Upload this certificate to NetSuite for the same integration, entity and "
                "role, then confirm the rotation with the Certificate ID NetSuite shows.",
        certificate=pem).model_dump(mode="json"))


async def confirm_rotation(request: Request) -> Response:
    principal = await require_integrator(request)
    body = await parse_body(request, CertificateIdBody)
    await _service(request).confirm_rotation(_id(request), body.certificate_id,
                                             actor(request, principal), principal.sees)
    return json_response(Outcome(success=True, message=CONFIRMED).model_dump(mode="json"))


async def cancel_rotation(request: Request) -> Response:
    principal = await require_integrator(request)
    await _service(request).cancel_rotation(_id(request), actor(request, principal),
                                            principal.sees)
    return json_response(Outcome(success=True, message="Rotation cancelled; the pending key "
                                 "was discarded.").model_dump(mode="json"))


async def auto_rotation(request: Request) -> Response:
    """Rotate end to end through NetSuite's certificate API: upload, prove, switch; the old
    certificate is revoked after the overlap."""
    principal = await require_integrator(request)
    body = await parse_body(request, AutoRotation)
    service = _service(request)
    before = await service.get(_id(request), principal.sees)
    record = await service.auto_rotate(
        _id(request), entity=body.entity, role=body.role, overlap=body.overlap_seconds,
        actor=actor(request, principal), visible=principal.sees)
    assert record.active_certificate_id is not None
    return json_response(AutoRotated(
        success=True, message="Certificate rotated. The previous certificate is revoked at "
        "NetSuite when the overlap ends.", certificate_id=record.active_certificate_id,
        previous_certificate_id=before.active_certificate_id,
        revoke_previous_at=_ts(record.retiring_certificate_revoke_at)).model_dump(mode="json"))


async def verify(request: Request) -> Response:
    principal = await require_integrator(request)
    token = await _service(request).verify(_id(request), actor(request, principal),
                                           principal.sees)
    return json_response(Verified(success=True, token_preview=token.preview,
                                  expires_in=token.expires_in).model_dump(mode="json"))


PATH = "/api/v1/ipaas/connectors"
ITEM = PATH + "/{connector_id}"
M2M = ITEM + "/m2m"

#: An ``admin`` or ``integrator`` of the connector's tenant.
_ROLES = (ADMIN, INTEGRATOR)
endpoints: list[Endpoint] = [
    Endpoint("POST", PATH, create_connector, "Create a NetSuite M2M connector", TAG,
             status=201, request=ConnectorCreate, response=Connector, roles=_ROLES,
             errors=(401, 403, 404, 422)),
    Endpoint("GET", PATH, list_connectors, "List NetSuite connectors (a tenant's caller sees "
             "its tenant's)", TAG, query=ConnectorQuery, response=ConnectorPage, roles=_ROLES,
             errors=(401, 403, 404, 422)),
    Endpoint("GET", ITEM, get_connector, "Show a NetSuite connector", TAG, response=Connector,
             roles=_ROLES, errors=(401, 403, 404)),
    Endpoint("PATCH", ITEM, update_connector, "Change a NetSuite connector's settings", TAG,
             request=ConnectorPatch, response=Connector, roles=_ROLES,
             errors=(401, 403, 404, 422)),
    Endpoint("DELETE", ITEM, delete_connector, "Delete a NetSuite connector and its keys", TAG,
             status=204, roles=_ROLES, errors=(401, 403, 404)),
    Endpoint("POST", M2M + "/key-pair", create_key_pair, "Generate the key pair; download the "
             "public certificate to upload to NetSuite", TAG, media_type=PEM, roles=_ROLES,
             errors=(401, 403, 404, 409)),
    Endpoint("GET", M2M + "/certificate", get_certificate, "The current public certificate "
             "(PEM)", TAG, media_type=PEM, roles=_ROLES, errors=(401, 403, 404)),
    Endpoint("PUT", M2M + "/certificate-id", put_certificate_id, "Record the Certificate ID "
             "NetSuite assigned", TAG, request=CertificateIdBody, response=Connector,
             roles=_ROLES, errors=(401, 403, 404, 422)),
    Endpoint("POST", M2M + "/rotation/initiate", initiate_rotation, "Start a certificate "
             "rotation: a new key pair and certificate", TAG, response=RotationStarted,
             roles=_ROLES, errors=(401, 403, 404, 422)),
    Endpoint("POST", M2M + "/rotation/confirm", confirm_rotation, "Switch to the new "
             "certificate by its Certificate ID", TAG, request=CertificateIdBody,
             response=Outcome, roles=_ROLES, errors=(401, 403, 404, 422, 503)),
    Endpoint("POST", M2M + "/rotation/cancel", cancel_rotation, "Discard a pending rotation",
             TAG, response=Outcome, roles=_ROLES, errors=(401, 403, 404, 422)),
    Endpoint("POST", M2M + "/rotation/auto", auto_rotation, "Rotate through NetSuite's "
             "certificate API; the old certificate is revoked after the overlap", TAG,
             request=AutoRotation, response=AutoRotated, roles=_ROLES,
             errors=(401, 403, 404, 422, 503)),
    Endpoint("POST", M2M + "/verify", verify, "Fetch a fresh token from NetSuite", TAG,
             response=Verified, roles=_ROLES, errors=(401, 403, 404, 422)),
]
