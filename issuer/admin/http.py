"""Shared HTTP plumbing of the admin API: JSON bodies validated by pydantic models
(the same models generate the OpenAPI schemas), JSON answers, cursor pagination."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from issuer.errors import OAuthError

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Operation:
    """One documented HTTP operation; ``issuer/openapi.py`` builds /openapi.json from
    every module's ``operations`` list (the same models validate the bodies)."""

    method: str  # "GET", "POST", ...
    path: str  # Starlette path syntax, e.g. "/api/v1/clients/{client_id}"
    summary: str
    tag: str
    status: int = 200  # the success status
    request: type[BaseModel] | None = None  # JSON body
    query: type[BaseModel] | None = None  # query parameters, one field each
    response: type[BaseModel] | None = None  # None = no body (e.g. 204)
    auth: str = "bearer"  # "bearer" (admin token) | "client" (client authentication)
    form: bool = False  # request body is application/x-www-form-urlencoded
    errors: tuple[int, ...] = (400, 401, 403, 404, 422)
    #: The success body's media type when ``response`` is None (e.g. a PEM download).
    media_type: str = "application/json"


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestModel(BaseModel):
    """Base of every admin request body: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class InvalidBody(OAuthError):
    error = "invalid_request"
    status = 422
    public_text = "The request body is invalid"


async def parse_body(request: Request, model: type[M]) -> M:
    """The body as ``model``; a 422 naming each bad field otherwise, never a 500."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidBody(details={"errors": [{"field": "", "message": "body too large"}]})
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidBody(details={"errors": [{"field": "",
                                               "message": "the body is not JSON"}]}) from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = [{"field": ".".join(str(part) for part in item["loc"]),
                     "message": item["msg"]} for item in error.errors()]
        raise InvalidBody(details={"errors": problems}) from None


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":"), default=str),
                    status_code=status_code, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> list[Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, UnicodeDecodeError):
        raise InvalidBody("bad cursor", details={"errors": [{"field": "cursor",
                                                             "message": "malformed"}]}) from None
    if not isinstance(values, list):
        raise InvalidBody(details={"errors": [{"field": "cursor", "message": "malformed"}]})
    return values


def page_limit(request: Request, default: int = 50, maximum: int = 200) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise InvalidBody(details={"errors": [{"field": "limit",
                                               "message": f"an integer from 1 to {maximum}"}]})
    return int(raw)
