"""GET /openapi.json: an OpenAPI 3.1 document built from the app's endpoints
(:class:`issuer.admin.http.Endpoint`, the records its routes are built from too).

The pydantic models that validate the request bodies are the ones documented
here, so the document cannot drift from what the server accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from issuer.admin.http import Endpoint, ResponseModel, without_null

_PATH_PARAMETER = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}")
_REF = "#/components/schemas/{model}"


class ErrorBody(ResponseModel):
    """RFC 6749 §5.2 / RFC 6750 §3 error body; ``details`` only where documented."""

    error: str
    error_description: str
    details: dict[str, Any] | None = None


class ClientAuthForm(BaseModel):
    """The client-authentication fields of the form-encoded endpoints (/token,
    /introspect, /revoke): RFC 6749 §2.3.1 ``client_secret_post`` or a client assertion."""

    model_config = ConfigDict(extra="allow")
    client_id: str | None = Field(default=None, description="client_secret_post; optional "
                                  "with a client assertion; required with a federated "
                                  "credential")
    client_secret: str | None = Field(default=None, description="client_secret_post only")
    client_assertion_type: str | None = Field(
        default=None, description="private_key_jwt / client_secret_jwt / federated_jwt "
        "(RFC 7523 §2.2): urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    client_assertion: str | None = Field(
        default=None, description="the client's signed JWT (RFC 7523 §3): iss = sub = "
        "client_id, aud, exp at most 300 s after iat, a single-use jti; or (federated_jwt) "
        "a token of one of the tenant's trusted issuers whose sub and aud match one of the "
        "client's federated credentials")


class TokenForm(ClientAuthForm):
    """RFC 6749 §4.4.2 access token request (form-encoded)."""

    grant_type: str = Field(examples=["client_credentials"])
    scope: str | None = Field(default=None, description="space-separated scopes")
    resource: str | None = Field(default=None, description="RFC 8707 resource indicator")
    audience: str | None = None


class TokenResponse(ResponseModel):
    """RFC 6749 §5.1 access token response."""

    access_token: str
    token_type: str = Field("Bearer", description='"DPoP" for a token bound to the key of '
                            "the request's DPoP proof (RFC 9449)")
    expires_in: int
    scope: str


class JWKSet(BaseModel):
    model_config = ConfigDict(extra="allow")
    keys: list[dict[str, Any]]


class Health(ResponseModel):
    status: str


class Readiness(ResponseModel):
    status: str = Field(description="ok | degraded (Redis down, tokens still issued) | "
                        "unavailable (503)")
    checks: dict[str, str] = Field(description="database, signing_key and (when "
                                   "configured) redis: ok, or what is wrong")


def build_document(issuer_url: str, endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    operations = list(endpoints)
    schemas = _schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        path = _PATH_PARAMETER.sub(r"{\1}", operation.document_path)
        paths.setdefault(path, {})[operation.method.lower()] = _operation(operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": "m2m-issuer", "version": "1",
                 "description": "OAuth 2.0 authorization server for machine clients."},
        "servers": [{"url": issuer_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "An access token of this issuer (scope admin)"},
                "clientBasic": {"type": "http", "scheme": "basic",
                                "description": "client_secret_basic (RFC 6749 §2.3.1)"},
            },
        },
    }


def _schemas(operations: Sequence[Endpoint]) -> dict[str, Any]:
    models: dict[type[BaseModel], None] = {ErrorBody: None}
    for operation in operations:
        for model in (None if operation.form else operation.request, operation.response):
            if model is not None:
                models[model] = None
    _, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template=_REF)
    schemas: dict[str, Any] = definitions.get("$defs", {})
    return schemas


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _operation(operation: Endpoint) -> dict[str, Any]:
    document: dict[str, Any] = {
        "summary": operation.summary,
        "tags": [operation.tag],
        "operationId": f"{operation.method.lower()}_{_slug(operation.document_path)}",
        "parameters": _parameters(operation),
        "responses": _responses(operation),
    }
    if operation.auth == "bearer":
        # OpenAPI 3.1 Security Requirement Object: for a non-OAuth scheme, the roles the
        # call needs -- here
        # the scopes of which the bearer token must carry one.
        document["security"] = [{"bearer": list(operation.roles)}]
    elif operation.auth == "client":
        document["security"] = [{"clientBasic": []}, {}]
    if operation.form and operation.request is not None:
        # A form field is a string or absent, never null: the schema is inlined as such.
        form = operation.request.model_json_schema(ref_template=_REF)
        for field in form.get("properties", {}).values():
            without_null(field)
        document["requestBody"] = {
            "required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}}
    elif operation.request is not None:
        document["requestBody"] = {
            "required": not getattr(operation.request, "body_optional", False),
            "content": {"application/json": {"schema": _ref(operation.request)}}}
    return document


def _parameters(operation: Endpoint) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(operation.document_path)
    ]
    if operation.query is not None:
        schema = operation.query.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", []))
        for name, field_schema in schema.get("properties", {}).items():
            # A query parameter is a string or absent, never null.
            parameters.append({"name": name, "in": "query", "required": name in required,
                               "schema": without_null(field_schema)})
    return parameters


def _responses(operation: Endpoint) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "Success"}
    if operation.response is not None:
        success["content"] = {operation.media_type: {"schema": _ref(operation.response)}}
    elif operation.media_type != "application/json":
        success["content"] = {operation.media_type: {"schema": {"type": "string"}}}
    elif operation.status != 204:
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    responses: dict[str, Any] = {str(operation.status): success}
    # Every admin call is rate limited per admin client (issuer.ratelimit.policy).
    errors = (*operation.errors, 429) if operation.auth == "bearer" else operation.errors
    for status in dict.fromkeys(errors):
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": _ref(ErrorBody)}},
        }
    return responses


_ERROR_TEXT = {400: "Invalid request", 401: "Authentication failed (RFC 6750 / RFC 6749 §5.2)",
               403: "Insufficient scope or grant not allowed", 404: "No such object",
               409: "Conflict", 422: "Invalid body: each bad field is named",
               429: "Rate limited (Retry-After)", 503: "Temporarily unavailable"}


def _slug(path: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", _PATH_PARAMETER.sub(r"\1", path)).strip("_")


def openapi_endpoint(issuer_url: str, operations: Sequence[Endpoint]) -> Any:
    """The route handler; the document is built on first use and kept."""
    cache: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        if "document" not in cache:
            cache["document"] = build_document(issuer_url, operations)
        return JSONResponse(cache["document"], headers={"Cache-Control": "public, max-age=300"})

    return openapi
