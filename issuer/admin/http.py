"""Shared HTTP plumbing of the admin API: JSON bodies validated by pydantic models
(the same models generate the OpenAPI schemas), JSON answers, cursor pagination
(the cursor itself is ``issuer.store.cursor``'s).

Every JSON body of the API (admin, ERP and NetSuite connectors) goes through
:func:`parse_body`, which bounds what a stranger can make the server hold or recurse
into: at most :data:`MAX_BODY` bytes, nested at most :data:`MAX_DEPTH` levels, no
``NaN``/``Infinity`` (not JSON, RFC 8259 §6). Anything else is a 422, never a 500.
A body may be empty only where its model says so (``RequestModel.body_optional``), and
the document says the same.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from issuer.errors import OAuthError
from issuer.store import cursor

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 64 * 1024
#: Arrays and objects inside one another; no body of the API needs more than a few.
MAX_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET = bytes(set(range(256)) - set(b"[]{}"))


#: A route handler: a request in, a response out.
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """One HTTP endpoint, declared once: the Starlette route (:meth:`route`) and the
    OpenAPI operation (``issuer/openapi.py``) are both built from it, so the served
    API and its document cannot diverge (the same models validate the bodies)."""

    method: str  # "GET", "POST", ...
    path: str  # Starlette path syntax, e.g. "/api/v1/clients/{client_id}"
    handler: Handler
    summary: str
    tag: str
    status: int = 200  # the success status
    request: type[BaseModel] | None = None  # JSON body
    query: type[BaseModel] | None = None  # query parameters, one field each
    response: type[BaseModel] | None = None  # None = no body (e.g. 204)
    auth: str = "bearer"  # "bearer" (admin token) | "client" (client authentication) | "none"
    #: Bearer endpoints: the scopes of which the caller's token must carry one.
    roles: tuple[str, ...] = ()
    form: bool = False  # request body is application/x-www-form-urlencoded
    errors: tuple[int, ...] = (400, 401, 403, 404, 422)
    #: The success body's media type (e.g. a PEM download, a JWK Set).
    media_type: str = "application/json"
    #: The path the document shows, where the route's is a template it instantiates
    #: (a connector type's slug in place of ``{connector}``).
    documented_path: str | None = None

    def route(self) -> Route:
        return Route(self.path, self.handler, methods=[self.method])

    @property
    def document_path(self) -> str:
        return self.documented_path or self.path


def routes(endpoints: Iterable[Endpoint]) -> list[BaseRoute]:
    """The Starlette routes of ``endpoints``, in their order (the order routes match in)."""
    return [endpoint.route() for endpoint in endpoints]


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's JSON Schema without its ``null`` branch (and a ``null`` default)."""
    if "anyOf" in schema:
        kept = [branch for branch in schema.pop("anyOf") if branch != {"type": "null"}]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    return schema


def _not_null_schema(schema: dict[str, Any], model: type[Any]) -> None:
    for name in model.not_null:
        if name in schema.get("properties", {}):
            without_null(schema["properties"][name])


class RequestModel(BaseModel):
    """Base of every admin request body: unknown fields are refused, not ignored. The
    fields named in ``not_null`` may be left out but not sent as null (their schema has
    no null)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True,
                              json_schema_extra=_not_null_schema)
    not_null: ClassVar[tuple[str, ...]] = ()
    #: True where every field has a default and an empty body means "all defaults"
    #: (documented as an optional request body); otherwise a body is required.
    body_optional: ClassVar[bool] = False

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name in cls.not_null:
            raise ValueError("may be left out but not null")
        return value


class InvalidBody(OAuthError):
    error = "invalid_request"
    status = 422
    public_text = "The request body is invalid"


async def parse_body(request: Request, model: type[M]) -> M:
    """The body as ``model``; a 422 naming each bad field otherwise, never a 500."""
    raw = await request.body()
    if not raw.strip():
        if getattr(model, "body_optional", False):
            return model.model_validate({})
        raise _body_error("a JSON body is required")
    if len(raw) > MAX_BODY:
        raise _body_error("body too large")
    if _nesting_depth(raw) > MAX_DEPTH:
        raise _body_error(f"nested more than {MAX_DEPTH} levels deep")
    try:
        data = json.loads(raw, parse_float=_number, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise _body_error("the body is not JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidBody(details={"errors": validation_problems(error)}) from None


def validation_problems(error: ValidationError) -> list[dict[str, str]]:
    """pydantic's errors as ``{"field", "message"}`` (the field as a dotted path)."""
    return [{"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
            for item in error.errors()]


def _body_error(message: str) -> InvalidBody:
    return InvalidBody(details={"errors": [{"field": "", "message": message}]})


def _nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest (brackets inside strings do not count), found
    before parsing: the parser and the validators recurse once per level. 0 when the
    body has too few brackets to pass the limit."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET)
    if brackets.count(b"[") + brackets.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be deeper than the limit: skip the walk
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _number(text: str) -> float | int:
    """A JSON number with a fraction or exponent: an int when it has no fractional part
    (JSON does not tell 1443.0 from 1443, and JSON Schema's "integer" is "a number with
    a zero fractional part"); one too large for a float is refused."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number out of range")
    return int(value) if value.is_integer() else value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":"), default=str),
                    status_code=status_code, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def encode_cursor(*values: Any) -> str:
    return cursor.encode_values(*values)


def decode_cursor(value: str | None) -> list[Any] | None:
    """A cursor's values, unchecked (the caller checks them); a 422 when it is none."""
    if not value:
        return None
    try:
        return cursor.decode_values(value)
    except cursor.MalformedCursor:
        raise malformed_cursor() from None


def read_cursor(keyset: cursor.Keyset, value: str | None) -> cursor.Key | None:
    """``?cursor=`` as the sort key of ``keyset``'s listing (None: the first page); a
    cursor the listing did not make is a 422 naming it, on every listing alike."""
    try:
        return keyset.decode(value)
    except cursor.MalformedCursor:
        raise malformed_cursor() from None


def malformed_cursor() -> InvalidBody:
    return InvalidBody(details={"errors": [{"field": "cursor", "message": "malformed"}]})


def page_limit(request: Request, default: int = 50, maximum: int = 200) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise InvalidBody(details={"errors": [{"field": "limit",
                                               "message": f"an integer from 1 to {maximum}"}]})
    return int(raw)
