"""Starlette's own refusals -- no route for the path, a method the path does not have --
answered like every other error: the error table's JSON body (``issuer.errors``).

A path served by several routes (``GET`` and ``POST /api/v1/tenants`` are two) answers
a wrong method with every method any of them has in ``Allow`` (RFC 9110 §15.5.6
"MUST generate an Allow header field"), not only the first route's. No redirect is
ever built from the request's ``Host`` header: the router's trailing-slash redirect is
off (:func:`without_slash_redirects`), so ``/api/v1/tenants/`` is a 404.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from issuer.errors import InvalidRequest, MethodNotAllowed, NotFound, OAuthError, error_response


def without_slash_redirects(app: Starlette) -> Starlette:
    """``app`` with the router's trailing-slash redirect turned off (its ``Location``
    would be built from the caller's ``Host`` header)."""
    app.router.redirect_slashes = False
    return app


async def http_exception(request: Request, exc: Exception) -> Response:
    """The exception handler for Starlette's ``HTTPException``."""
    assert isinstance(exc, HTTPException)
    error: OAuthError
    if exc.status_code == 405:
        allow = ", ".join(allowed_methods(request))
        error = MethodNotAllowed(headers={"Allow": allow})
    elif exc.status_code == 404:
        error = NotFound(reason="no_route")
    else:  # e.g. a form Starlette could not parse
        error = InvalidRequest(reason=f"http_{exc.status_code}")
    return error_response(error)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path, sorted."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)
