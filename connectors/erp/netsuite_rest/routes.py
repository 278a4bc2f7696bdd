"""HTTP: ``POST /api/v1/connectors/netsuite-rest-v1`` (create) and ``.../test``.

Both take the generic ERP routes' shape (the config flat, plus ``org_id`` and, on
create, ``test_on_save``) and add what only this connector needs: the named NetSuite
M2M connector must be the org's own -- another org's, like a missing one, is 404
before anything is tested or stored -- and a passed test says "Connection
successful". Everything else (listing, PATCH, enable/disable, pushes) is the
generic routes'. Mounted ahead of them, so these paths match here first.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from connectors.erp import routes as erp
from connectors.erp.netsuite_rest.config import NetSuiteRestConfig
from connectors.erp.netsuite_rest.connector import NETSUITE_REST_V1
from connectors.erp.state import ERP_SERVICES
from issuer.admin.auth import ADMIN, INTEGRATOR, Principal, require_connector_role
from issuer.admin.handlers import OBJECT_ID, actor
from issuer.admin.http import Endpoint, RequestModel, json_response, parse_body

PATH = "/api/v1/connectors/netsuite-rest-v1"
TEST_PASSED = "Connection successful"


class _Envelope(RequestModel):
    model_config = ConfigDict(extra="allow", strict=True)

    org_id: str | None = Field(None, pattern=OBJECT_ID)


class _CreateEnvelope(_Envelope):
    test_on_save: bool = False


class NetSuiteRestCreate(NetSuiteRestConfig):
    """NETSUITE_REST_V1 connection (documentation of the flat body)."""

    org_id: str | None = Field(None, pattern=OBJECT_ID,
                               description="platform admins: the org; default the caller's")
    test_on_save: bool = Field(False, description="test first; on failure nothing is saved")


class NetSuiteRestTest(NetSuiteRestConfig):
    """A config to test without saving; leave every config field out to test the org's
    active NETSUITE_REST_V1 connection instead."""

    org_id: str | None = Field(None, pattern=OBJECT_ID)


def _org(principal: Principal, org_id: str | None) -> str:
    org = org_id or principal.tenant_id
    principal.check_tenant(org)
    return org


async def create_connection(request: Request) -> Response:
    principal = await require_connector_role(request)
    body = await parse_body(request, _CreateEnvelope)
    org_id = _org(principal, body.org_id)
    config = body.model_extra or {}
    erp_services = ERP_SERVICES(request)
    created = await erp_services.connections.create(
        org_id, NETSUITE_REST_V1, config, test_on_save=body.test_on_save,
        actor=actor(request, principal))
    data = erp.connection_json(created.connection)
    if created.test is not None:
        data["test_result"] = {"success": True, "latency_ms": created.test.latency_ms}
    response = json_response(erp.ConnectionCreated.model_validate(data).model_dump(mode="json"),
                             201)
    response.headers["Location"] = f"{erp.CONNECTIONS}/{created.connection.id}"
    return response


async def test_connection(request: Request) -> Response:
    principal = await require_connector_role(request)
    body = await parse_body(request, _Envelope)
    org_id = _org(principal, body.org_id)
    config = body.model_extra or {}
    erp_services = ERP_SERVICES(request)
    result = await erp_services.connections.test(org_id, NETSUITE_REST_V1, config or None,
                                                 actor=actor(request, principal))
    return json_response({"success": True, "message": TEST_PASSED,
                          "latency_ms": result.latency_ms})


_ERRORS = (400, 401, 403, 404, 409, 422)
#: Admins and integrators of the org.
_ROLES = (ADMIN, INTEGRATOR)
endpoints: list[Endpoint] = [
    Endpoint("POST", PATH, create_connection, "Create the org's NETSUITE_REST_V1 connection "
             "(ACTIVE; one active per org): draft orders upserted as NetSuite sales orders "
             "through the org's NetSuite M2M connector", erp.TAG, status=201,
             request=NetSuiteRestCreate, response=erp.ConnectionCreated, roles=_ROLES,
             errors=_ERRORS),
    Endpoint("POST", f"{PATH}/test", test_connection, "Test a NetSuite config, or the org's "
             "active NetSuite connection: a token, then one read-only SuiteQL query over "
             "customers and items", erp.TAG, request=NetSuiteRestTest, response=erp.TestPassed,
             roles=_ROLES, errors=_ERRORS),
]
