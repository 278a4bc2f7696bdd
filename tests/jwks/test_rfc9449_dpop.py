"""RFC 9449 §7 at a resource server: ``jwks`` verifying DPoP-bound access tokens and
their proofs (``JWKSVerifier.verify_dpop``), the replay caches, and the Starlette and
FastAPI answers of §7.1.

Proofs are built with joserfc directly; ``ath`` and thumbprints are computed here.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, Key
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import jwks
from jwks.fastapi import BearerToken
from jwks.starlette import BearerAuthMiddleware, requires_scope
from jwks.verifier import JWKSVerifier, VerifiedToken
from tests.conftest import FakeClock
from tests.jwks import conftest as idp_fixtures
from tests.jwks.conftest import FakeIssuer

API = "https://orders.example.com"
URL = f"{API}/orders"
ALGS = 'algs="ES256 EdDSA PS256 RS256"'


@pytest.fixture(scope="module")
def holder() -> ECKey:
    """The client's DPoP key."""
    return ECKey.generate_key("P-256", private=True)


@pytest.fixture(scope="module")
def stranger() -> ECKey:
    return ECKey.generate_key("P-256", private=True)


def ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def proof(key: Key, clock: FakeClock, token: str | None, *, alg: str = "ES256",
          **claims: Any) -> str:
    payload = {"jti": uuid.uuid4().hex, "htm": "GET", "htu": URL, "iat": int(clock.now()),
               **({"ath": ath(token)} if token is not None else {}), **claims}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode({"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)},
                          {name: value for name, value in payload.items() if value is not None},
                          key, algorithms=[alg])


def bound_token(idp: FakeIssuer, keys: idp_fixtures.TestKeys, holder: Key, **claims: Any) -> str:
    return idp.token(keys.rsa, cnf={"jkt": holder.thumbprint()}, **claims)


async def verify(verifier: JWKSVerifier, token: str, dpop: Any, *, method: str = "GET",
                 url: str = URL) -> VerifiedToken:
    return await verifier.verify_dpop(token, dpop, method=method, url=url)


# §7 verify_dpop ---------------------------------------------------------------------------


async def test_s7_a_valid_proof_for_the_bound_key_is_accepted(idp, keys, holder, clock):
    token = bound_token(idp, keys, holder)
    async with idp.verifier() as verifier:
        verified = await verify(verifier, token, proof(holder, clock, token))
    assert verified.jkt == holder.thumbprint()
    assert verified.client_id == "client-1"


async def test_s7_the_url_is_compared_without_its_query(idp, keys, holder, clock):
    token = bound_token(idp, keys, holder)
    async with idp.verifier() as verifier:
        await verify(verifier, token, proof(holder, clock, token), url=f"{URL}?page=2")


def _other_method(idp, keys, holder, stranger, clock, token):
    return proof(holder, clock, token, htm="POST")


def _other_url(idp, keys, holder, stranger, clock, token):
    return proof(holder, clock, token, htu=f"{API}/invoices")


def _wrong_ath(idp, keys, holder, stranger, clock, token):
    return proof(holder, clock, token, ath=ath("another token"))


def _no_ath(idp, keys, holder, stranger, clock, token):
    return proof(holder, clock, None)


def _other_key(idp, keys, holder, stranger, clock, token):
    return proof(stranger, clock, token)


def _old(idp, keys, holder, stranger, clock, token):
    return proof(holder, clock, token, iat=int(clock.now()) - 61)


REFUSED = {
    "missing proof": (lambda *args: None, jwks.MissingDPoPProof),
    "two proofs": (lambda idp, keys, holder, stranger, clock, token: [
        proof(holder, clock, token), proof(holder, clock, token)], jwks.DPoPProofInvalid),
    "another method": (_other_method, jwks.DPoPProofInvalid),
    "another URL": (_other_url, jwks.DPoPProofInvalid),
    "wrong ath": (_wrong_ath, jwks.DPoPProofInvalid),
    "no ath": (_no_ath, jwks.DPoPProofInvalid),
    "key other than cnf.jkt": (_other_key, jwks.DPoPKeyMismatch),
    "iat too old": (_old, jwks.DPoPProofInvalid),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
async def test_s7_a_bad_proof_is_refused(idp, keys, holder, stranger, clock, case):
    make, error = REFUSED[case]
    token = bound_token(idp, keys, holder)
    async with idp.verifier() as verifier:
        with pytest.raises(error):
            await verify(verifier, token, make(idp, keys, holder, stranger, clock, token))


async def test_s11_1_a_replayed_proof_is_refused(idp, keys, holder, clock):
    token = bound_token(idp, keys, holder)
    dpop = proof(holder, clock, token)
    async with idp.verifier() as verifier:
        await verify(verifier, token, dpop)
        with pytest.raises(jwks.DPoPProofReplayed):
            await verify(verifier, token, dpop)


async def test_s7_2_a_dpop_bound_token_presented_as_bearer_is_refused(idp, keys, holder):
    async with idp.verifier() as verifier:
        with pytest.raises(jwks.DPoPBoundTokenAsBearer):
            await verifier.verify(bound_token(idp, keys, holder))
        # An unbound token is still a Bearer token, and not a DPoP one.
        plain = idp.token(keys.rsa)
        assert (await verifier.verify(plain)).jkt is None
        with pytest.raises(jwks.NotDPoPBound):
            await verify(verifier, plain, proof(holder, idp.clock, plain))


async def test_a_malformed_cnf_is_an_invalid_claim(idp, keys):
    async with idp.verifier() as verifier:
        with pytest.raises(jwks.InvalidClaim):
            await verifier.verify(idp.token(keys.rsa, cnf={"jkt": 7}))


class SharedStore:
    """A replay store several verifiers share (as Redis would be for processes)."""

    def __init__(self) -> None:
        self.cache = jwks.MemoryReplayCache()
        self.calls = 0

    async def use(self, key: str, expires_at: float, now: float) -> bool:
        self.calls += 1
        return await self.cache.use(key, expires_at, now)


async def test_s11_1_a_pluggable_store_shares_spent_proofs_between_verifiers(idp, keys, holder,
                                                                            clock):
    shared = SharedStore()
    token = bound_token(idp, keys, holder)
    dpop = proof(holder, clock, token)
    async with idp.verifier(dpop_replay=shared) as first, \
            idp.verifier(dpop_replay=shared) as second:
        await verify(first, token, dpop)
        with pytest.raises(jwks.DPoPProofReplayed):
            await verify(second, token, dpop)
    assert shared.calls == 2


async def test_the_memory_cache_forgets_proofs_once_they_expired_and_is_bounded():
    cache = jwks.MemoryReplayCache(max_entries=2)
    assert await cache.use("a", 100.0, 0.0) is True
    assert await cache.use("a", 100.0, 50.0) is False
    assert await cache.use("b", 120.0, 60.0) is True
    with pytest.raises(jwks.DPoPProofReplayed):  # full: refused, not forgotten
        await cache.use("c", 130.0, 70.0)
    assert await cache.use("c", 200.0, 100.0) is True  # "a" expired and was dropped
    assert len(cache) == 2


# §7.1 the integrations' answers -----------------------------------------------------------


def starlette_app(verifier: JWKSVerifier) -> Starlette:
    @requires_scope("orders:read")
    async def orders(request: Request) -> Response:
        return JSONResponse({"jkt": request.user.token.jkt})

    return Starlette(routes=[Route("/orders", orders)],
                     middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)])


def fastapi_app(verifier: JWKSVerifier) -> FastAPI:
    app = FastAPI()
    bearer = BearerToken(verifier)

    # A default, not Annotated[...]: this module's annotations are strings, and FastAPI
    # resolves them in the module's globals, where ``bearer`` is not.
    @app.get("/orders")
    async def orders(token: VerifiedToken = Depends(bearer)) -> dict[str, Any]:  # noqa: B008
        return {"jkt": token.jkt}

    return app


@pytest.fixture(params=["starlette", "fastapi"])
async def api(request: pytest.FixtureRequest, idp: FakeIssuer) -> AsyncIterator[httpx.AsyncClient]:
    build = starlette_app if request.param == "starlette" else fastapi_app
    verifier = idp.verifier()
    async with verifier, httpx.AsyncClient(transport=httpx.ASGITransport(app=build(verifier)),
                                           base_url=API) as http:
        yield http


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    return dict(body.get("detail", body))


async def test_s7_1_the_dpop_scheme_with_a_valid_proof_is_served(api, idp, keys, holder, clock):
    token = bound_token(idp, keys, holder)
    response = await api.get("/orders", headers={"Authorization": f"DPoP {token}",
                                                 "DPoP": proof(holder, clock, token)})
    assert response.status_code == 200, response.text
    assert response.json() == {"jkt": holder.thumbprint()}


async def test_s7_1_a_bad_proof_is_answered_invalid_dpop_proof_with_algs(api, idp, keys, holder,
                                                                        clock):
    token = bound_token(idp, keys, holder)
    response = await api.get("/orders", headers={
        "Authorization": f"DPoP {token}", "DPoP": proof(holder, clock, token, htm="POST")})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'DPoP error="invalid_dpop_proof", {ALGS}'
    assert error_of(response) == {"error": "invalid_dpop_proof",
                                  "error_description": "The DPoP proof is invalid"}
    missing = await api.get("/orders", headers={"Authorization": f"DPoP {token}"})
    assert missing.headers["WWW-Authenticate"] == f'DPoP error="invalid_dpop_proof", {ALGS}'


async def test_s7_1_a_bad_token_with_the_dpop_scheme_is_invalid_token_with_algs(
        api, idp, keys, holder, clock):
    token = bound_token(idp, keys, holder, aud="https://elsewhere.example")
    response = await api.get("/orders", headers={"Authorization": f"DPoP {token}",
                                                 "DPoP": proof(holder, clock, token)})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'DPoP error="invalid_token", {ALGS}'
    assert error_of(response)["error"] == "invalid_token"


async def test_s7_2_a_dpop_bound_token_sent_as_bearer_gets_a_dpop_challenge(api, idp, keys,
                                                                           holder):
    response = await api.get("/orders", headers={
        "Authorization": f"Bearer {bound_token(idp, keys, holder)}"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'DPoP error="invalid_token", {ALGS}'
    assert error_of(response) == {
        "error": "invalid_token",
        "error_description": "The access token is DPoP-bound: present it with the DPoP scheme"}
