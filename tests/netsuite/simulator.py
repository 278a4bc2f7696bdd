"""A NetSuite account, simulated: the OAuth 2.0 M2M token endpoint, REST web services,
RESTlets and the certificate API, enforcing NetSuite's documented rules (the checklist
below).

One :class:`NetSuiteSimulator` is one account. Its Starlette app routes by ``Host``
(``<canon>.suitetalk.api.netsuite.com`` and ``<canon>.restlets.api.netsuite.com``), so
tests reach it through ``httpx.ASGITransport`` at the real URLs, or on a loopback
socket (``alias("127.0.0.1:PORT")`` then stands for the suitetalk host, and the
assertion's ``aud`` is the URL it was posted to). The checks are independent of the
client under test: signatures are verified with ``cryptography`` directly.

Numbers in comments are the checklist's items. The account's customers, items and
sales orders, with the record and query services over them, are ``records.py``.

The checklist (NetSuite's OAuth 2.0 client credentials rules; 22, 24 and 25 are the
client's duties, proved by the connector's own tests):

1. Only the documented endpoints answer; everything else is 404.
2. The token request is ``application/x-www-form-urlencoded``.
3. The client authenticates by its assertion alone: no ``client_id`` or
   ``client_secret`` in the form, no ``Authorization`` header (the header is our choice).
4. No ``scope`` form parameter: scopes travel in the assertion.
5. The assertion is a compact JWS of unpadded base64url segments, its header naming
   the Certificate ID as ``kid``.
6. ``alg`` is one of PS256/384/512 or ES256/384/512 (another answers 500 server_error).
7. ``kid`` names a certificate mapped to the integration that is ``iss``.
8. ``alg`` fits the certificate's key: RSA for PS*, the matching curve for ES*.
9. The signature verifies: RSA-PSS with MGF1 of the same hash and a salt of the hash's
   length; ECDSA as raw R||S, never DER.
10. The integration exists, has client credentials (M2M) enabled, and is not blocked.
11. ``aud`` is the token endpoint's URL.
12. ``scope`` names any of ``restlets``, ``rest_webservices``, ``suite_analytics``
    (``mcp`` only alone) that the integration allows.
13. ``iat`` and ``exp`` are integers, current within the allowed skew, and
    ``exp - iat`` is 1 to 3600 seconds (above 900 draws a warning).
14. Only documented claims are sent.
15. ``expires_in`` comes back as a string.
16. Resource calls carry the token as a Bearer token, and the token's scope covers the
    service called (REST web services or RESTlets).
17. A token lives 3600 seconds.
18. A certificate counts as valid for at most two years from its notBefore.
19. A certificate holds an RSA 3072/4096-bit or EC P-256/P-384/P-521 key, is mapped
    once, and an integration has at most five active certificates.
20. Revoking a certificate does not revoke the tokens already issued with it.
21. The certificate API uploads, lists and revokes an integration's certificates.
22. On a 401 the client mints a new token once, retries once, then fails.
23. Concurrent calls beyond the account's limit answer 429 (REST web services) or 400
    ``SSS_REQUEST_LIMIT_EXCEEDED`` (RESTlets).
24. Concurrent callers needing a token cause exactly one token request.
25. Account ids map to hosts lowercase with ``_`` as ``-`` (``1234567_SB1`` ->
    ``1234567-sb1``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from issuer.clock import Clock, utc
from tests.netsuite.records import ALL_PERMISSIONS, Records

TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FIELDS = {"grant_type", "client_assertion_type", "client_assertion"}
SCOPES = {"restlets", "rest_webservices", "suite_analytics"}
#: alg -> (key family, hash): 8.
ALGS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "PS256": ("RSA", hashes.SHA256), "PS384": ("RSA", hashes.SHA384),
    "PS512": ("RSA", hashes.SHA512), "ES256": ("P-256", hashes.SHA256),
    "ES384": ("P-384", hashes.SHA384), "ES512": ("P-521", hashes.SHA512)}
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
RAW_SIGNATURE_BYTES = {"P-256": 64, "P-384": 96, "P-521": 132}
MAX_ACTIVE_CERTIFICATES = 5
MAX_VALIDITY = timedelta(days=730)
INVALID_LOGIN = {
    "type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.2",
    "title": "Unauthorized", "status": 401,
    "o:errorDetails": [{"detail": "Invalid login attempt. For more details, see the Login "
                                  "Audit Trail in the NetSuite UI at Setup > Users/Roles > "
                                  "User Management > View Login Audit Trail.",
                        "o:errorCode": "INVALID_LOGIN"}]}


class UploadRejected(Exception):
    """NetSuite would not take this certificate (18, 19)."""


def canonical(account_id: str) -> str:
    return account_id.lower().replace("_", "-")


@dataclass
class Integration:
    client_id: str
    scopes: set[str]
    m2m_enabled: bool = True
    blocked: bool = False
    #: What the role mapped to the integration may see: customer, item, salesorder.
    permissions: frozenset[str] = ALL_PERMISSIONS


@dataclass
class Certificate:
    certificate_id: str
    client_id: str
    entity: int
    role: int
    family: str  # "RSA" or a curve
    public_key: Any
    not_before: float
    not_after: float  # clamped to two years from notBefore (18)
    fingerprint: str
    revoked: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class IssuedToken:
    client_id: str
    certificate_id: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class Rejection:
    status: int
    error: str
    reason: str  # what the Login Audit Trail would say


class Refused(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.rejection = Rejection(status, error, reason)


class NetSuiteSimulator:
    def __init__(self, account_id: str, clock: Clock, *, skew: float = 60,
                 expires_in_as_string: bool = True, keep_tokens_on_revoke: bool = True,
                 concurrency_limit: int = 5, latency: float = 0.0) -> None:
        self.account_id = account_id
        self.clock = clock
        self.skew = skew
        self.expires_in_as_string = expires_in_as_string  # 15
        self.keep_tokens_on_revoke = keep_tokens_on_revoke  # 20
        self.concurrency_limit = concurrency_limit
        self.latency = latency  # seconds each resource call takes
        self.suitetalk_host = f"{canonical(account_id)}.suitetalk.api.netsuite.com"
        self.restlets_host = f"{canonical(account_id)}.restlets.api.netsuite.com"
        self.aliases: set[str] = set()
        self.integrations: dict[str, Integration] = {}
        self.certificates: dict[str, Certificate] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.token_requests = 0  # every POST reaching the token endpoint
        self.granted = 0
        self.rejections: list[Rejection] = []  # the Login Audit Trail
        self.warnings: list[str] = []
        self.undocumented_claims: list[str] = []  # 14: the client must never send these
        self.resource_calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.over_limit = 0
        #: Next resource answers: "401", "429", "SSS", "503"; "timeout" does the work,
        #: then the client times out waiting for the answer.
        self.scripted: list[str] = []
        self.retry_after: str | None = None  # the Retry-After of over-limit answers
        self.records = Records()
        self.app = Starlette(routes=[
            Route("/{path:path}", self._dispatch,
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ])

    # Setup ---------------------------------------------------------------------

    def alias(self, netloc: str) -> None:
        """Let ``netloc`` (a loopback ``host:port``) stand for the suitetalk host."""
        self.aliases.add(netloc)

    def add_integration(self, client_id: str | None = None,
                        scopes: set[str] | None = None) -> Integration:
        integration = Integration(client_id or secrets.token_hex(32),
                                  set(scopes or {"rest_webservices", "restlets"}))
        self.integrations[integration.client_id] = integration
        return integration

    def upload(self, data: str | bytes, client_id: str, *, entity: int = -5,
               role: int = 3) -> str:
        """Upload a certificate for (integration, entity, role); its Certificate ID (18, 19)."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            certificate = (x509.load_pem_x509_certificate(raw) if raw.lstrip().startswith(b"-----")
                           else x509.load_der_x509_certificate(raw))
        except ValueError:
            raise UploadRejected("not an X.509 certificate (PEM or DER)") from None
        if client_id not in self.integrations:
            raise UploadRejected("unknown integration")
        key = certificate.public_key()
        warnings: list[str] = []
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size not in (3072, 4096):
                raise UploadRejected(f"RSA keys are 3072 or 4096 bits, not {key.key_size}")
            family = "RSA"
            if not isinstance(certificate.signature_algorithm_parameters, padding.PSS):
                warnings.append("RSA certificate not self-signed with RSA-PSS")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in CURVES:
                raise UploadRejected(f"curve {key.curve.name} is not P-256, P-384 or P-521")
            family = CURVES[key.curve.name]
        else:
            raise UploadRejected("only RSA and EC keys")
        fingerprint = hashlib.sha256(key.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
        for other in self.certificates.values():
            if other.fingerprint == fingerprint:
                raise UploadRejected("this certificate is already mapped")  # one mapping each
        active = [c for c in self.certificates.values()
                  if c.client_id == client_id and self._usable(c)]
        if len(active) >= MAX_ACTIVE_CERTIFICATES:
            raise UploadRejected("at most 5 active certificates per integration record")
        not_before = certificate.not_valid_before_utc
        not_after = min(certificate.not_valid_after_utc, not_before + MAX_VALIDITY)
        certificate_id = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        self.certificates[certificate_id] = Certificate(
            certificate_id, client_id, entity, role, family, key, not_before.timestamp(),
            not_after.timestamp(), fingerprint, warnings=warnings)
        self.warnings.extend(warnings)
        return certificate_id

    def revoke(self, certificate_id: str) -> None:
        self.certificates[certificate_id].revoked = True

    def _usable(self, certificate: Certificate) -> bool:
        now = self.clock.now()
        return (not certificate.revoked and certificate.not_before <= now + self.skew
                and now < certificate.not_after)

    # HTTP ------------------------------------------------------------------------

    async def _dispatch(self, request: Request) -> Response:
        host = request.headers.get("host", "")
        path = request.url.path
        if host == self.suitetalk_host or host in self.aliases:
            if path == TOKEN_PATH:
                if request.method != "POST":
                    return JSONResponse({"error": "invalid_request"}, 405)
                return await self._token(request, host)
            if path.startswith("/services/rest/record/v1/") or path == \
                    "/services/rest/query/v1/suiteql":
                return await self._resource(request, "rest_webservices")
        if host == self.restlets_host:
            if path == "/app/site/hosting/restlet.nl":
                return await self._resource(request, "restlets")
            if path.startswith("/services/rest/auth/oauth2/v1/clients/"):
                return await self._certificate_api(request)
        return JSONResponse({"error": "not_found"}, 404)  # 1: nothing else is served

    # Token endpoint (1-15) -----------------------------------------------------------

    async def _token(self, request: Request, host: str) -> Response:
        self.token_requests += 1
        try:
            token, expires_in = await self._grant(request, host)
        except Refused as refused:
            self.rejections.append(refused.rejection)
            rejection = refused.rejection
            return JSONResponse({"error": rejection.error}, rejection.status)
        self.granted += 1
        body = {"access_token": token,
                "expires_in": str(expires_in) if self.expires_in_as_string else expires_in,
                "token_type": "bearer"}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def _grant(self, request: Request, host: str) -> tuple[str, int]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":  # 2
            raise Refused(400, "invalid_request", "content type is not form-encoded")
        if "authorization" in request.headers:  # 3 (ours): no Basic, no header at all
            raise Refused(400, "invalid_request", "an Authorization header was sent")
        pairs = parse_qsl((await request.body()).decode("utf-8", "replace"),
                          keep_blank_values=True)
        names = [name for name, _ in pairs]
        form = dict(pairs)
        if "scope" in form:  # 4
            raise Refused(400, "invalid_request", "scope sent as a form field")
        if "client_id" in form or "client_secret" in form:  # 3
            raise Refused(400, "invalid_request", "client_id or client_secret form field")
        if sorted(names) != sorted(FIELDS) or form["grant_type"] != "client_credentials" \
                or form["client_assertion_type"] != JWT_BEARER or not form["client_assertion"]:
            raise Refused(400, "invalid_request", f"form fields {sorted(names)}")
        header, claims, signing_input, signature = _split(form["client_assertion"])  # 5
        alg = header.get("alg")
        if alg not in ALGS:  # 6: observed as 500 server_error
            raise Refused(500, "server_error", f"alg {alg!r} is not supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:  # 5
            raise Refused(400, "invalid_grant", "missing kid")
        integration = self.integrations.get(claims.get("iss"))  # type: ignore[arg-type]
        if integration is None or not integration.m2m_enabled or integration.blocked:  # 10
            raise Refused(401, "invalid_client", "InvalidIntegration")
        certificate = self.certificates.get(kid)
        if certificate is None or not self._usable(certificate) \
                or certificate.client_id != integration.client_id:  # 7
            raise Refused(400, "invalid_grant", "unknown, revoked or expired certificate")
        family, hash_type = ALGS[alg]
        if (family == "RSA") != (certificate.family == "RSA") or (
                family != "RSA" and family != certificate.family):  # 8
            raise Refused(400, "invalid_grant", "alg does not match the certificate's key")
        if not _verify(certificate, hash_type, signing_input, signature):  # 9
            raise Refused(400, "invalid_grant", "InvalidSignature")
        expected_aud = f"https://{self.suitetalk_host}{TOKEN_PATH}" \
            if host == self.suitetalk_host else f"{request.url.scheme}://{host}{TOKEN_PATH}"
        if not isinstance(claims.get("aud"), str) or claims["aud"] != expected_aud:  # 11
            raise Refused(400, "invalid_grant", "wrong aud")
        scopes = _scopes(claims.get("scope"))  # 12
        if scopes is None or not scopes <= integration.scopes:
            raise Refused(400, "invalid_grant", "ScopeMismatched")
        self._check_times(claims)  # 13
        self.undocumented_claims.extend(sorted(set(claims) - {"iss", "aud", "scope", "iat",
                                                               "exp"}))  # 14
        token = secrets.token_urlsafe(48)
        self.tokens[token] = IssuedToken(integration.client_id, kid, frozenset(scopes),
                                         self.clock.now() + 3600)  # 17
        return token, 3600

    def _check_times(self, claims: dict[str, Any]) -> None:
        iat, exp = claims.get("iat"), claims.get("exp")
        if not all(isinstance(value, int) and not isinstance(value, bool)
                   for value in (iat, exp)):
            raise Refused(400, "invalid_grant", "iat and exp must be integer NumericDates")
        assert isinstance(iat, int) and isinstance(exp, int)
        now = self.clock.now()
        if exp <= now - self.skew or iat > now + self.skew:
            raise Refused(400, "invalid_grant", "assertion expired or from the future")
        if not 0 < exp - iat <= 3600:
            raise Refused(400, "invalid_grant", "exp - iat must be 1 to 3600 seconds")
        if exp - iat > 900:
            self.warnings.append("assertion lifetime above 900 s")

    # Resource endpoints (16, 17, 20, 23) ------------------------------------------------

    async def _resource(self, request: Request, scope: str) -> Response:
        self.resource_calls += 1
        if self.in_flight >= self.concurrency_limit:  # per account, REST and RESTlets alike
            self.over_limit += 1
            return self._limit_exceeded(scope)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            scripted = self.scripted.pop(0) if self.scripted else None
            if scripted in ("429", "SSS"):
                self.over_limit += 1
                return self._limit_exceeded("rest_webservices" if scripted == "429"
                                            else "restlets")
            if scripted == "401" or not self._authorized(request, scope):
                return JSONResponse(INVALID_LOGIN, 401)
            if scripted == "503":
                return JSONResponse({"status": 503, "o:errorDetails": [
                    {"detail": "Service Unavailable", "o:errorCode": "UNEXPECTED_ERROR"}]}, 503)
            if scope == "rest_webservices" and request.url.path.endswith("/suiteql") \
                    and request.headers.get("prefer") != "transient":
                return JSONResponse({"status": 400, "o:errorDetails": [
                    {"detail": "Prefer: transient is required", "o:errorCode": "INVALID_HEADER"}]},
                    400)
            if self.records.handles(request):
                answer = await self.records.answer(request, self._permissions(request))
                if scripted == "timeout":  # done, but the answer never arrives
                    raise httpx.ReadTimeout("simulated: no answer in time")
                return answer
            return JSONResponse({"ok": True, "path": request.url.path})
        finally:
            self.in_flight -= 1

    def _limit_exceeded(self, scope: str) -> Response:
        if scope == "restlets":
            return JSONResponse({"error": {"code": "SSS_REQUEST_LIMIT_EXCEEDED",
                                           "message": "Request limit exceeded"}}, 400)
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return JSONResponse({"type": "https://www.rfc-editor.org/rfc/rfc6585#section-4",
                             "title": "Too Many Requests", "status": 429, "o:errorDetails": [
                                 {"detail": "Concurrent request limit exceeded. Request "
                                            "blocked.",
                                  "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED"}]}, 429,
                            headers=headers)

    def _permissions(self, request: Request) -> frozenset[str]:
        token = self.tokens[request.headers["authorization"].partition(" ")[2]]
        return self.integrations[token.client_id].permissions

    def _authorized(self, request: Request, scope: str) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not value:
            return False
        token = self.tokens.get(value)
        if token is None or self.clock.now() >= token.expires_at or scope not in token.scopes:
            return False
        certificate = self.certificates[token.certificate_id]
        return self.keep_tokens_on_revoke or self._usable(certificate)

    # Certificate API (21) ---------------------------------------------------------------

    async def _certificate_api(self, request: Request) -> Response:
        parts = request.url.path.removeprefix("/services/rest/auth/oauth2/v1/clients/").split("/")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = self.tokens.get(value) if scheme == "Bearer" else None
        if token is None or self.clock.now() >= token.expires_at \
                or "rest_webservices" not in token.scopes or token.client_id != parts[0]:
            return JSONResponse(INVALID_LOGIN, 401)
        client_id = parts[0]
        if parts[1:] == ["certificates"] and request.method == "GET":
            return JSONResponse({"items": [
                {"certificateId": c.certificate_id, "entity": c.entity, "role": c.role,
                 "revoked": c.revoked, "validUntil": utc(c.not_after).isoformat()}
                for c in self.certificates.values() if c.client_id == client_id]})
        if parts[1:] == ["certificates"] and request.method == "POST":
            try:
                body = json.loads(await request.body())
                certificate_id = self.upload(body["fileContent"], client_id,
                                             entity=int(body["entity"]), role=int(body["role"]))
            except (ValueError, KeyError, TypeError) as error:
                return JSONResponse({"status": 400, "o:errorDetails": [
                    {"detail": str(error), "o:errorCode": "INVALID_REQUEST"}]}, 400)
            except UploadRejected as error:
                return JSONResponse({"status": 400, "o:errorDetails": [
                    {"detail": str(error), "o:errorCode": "INVALID_CERTIFICATE"}]}, 400)
            return JSONResponse({"certificateId": certificate_id}, 200)
        if len(parts) == 4 and parts[1] == "certificates" and parts[3] == "revoke" \
                and request.method == "POST" and parts[2] in self.certificates \
                and self.certificates[parts[2]].client_id == client_id:
            self.revoke(parts[2])
            return Response(status_code=204)
        return JSONResponse({"error": "not_found"}, 404)


def _b64(segment: str) -> bytes:
    if not segment or "=" in segment or not all(
            c.isalnum() or c in "-_" for c in segment):  # 5: base64url without padding
        raise Refused(400, "invalid_request", "malformed JWT segment")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise Refused(400, "invalid_request", "malformed JWT segment") from None


def _split(assertion: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    segments = assertion.split(".")
    if len(segments) != 3:
        raise Refused(400, "invalid_request", "a JWS has three segments")
    try:
        header, claims = (json.loads(_b64(segment)) for segment in segments[:2])
    except ValueError:
        raise Refused(400, "invalid_request", "header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Refused(400, "invalid_request", "header and claims are JSON objects")
    if header.get("typ") != "JWT":
        raise Refused(400, "invalid_request", "typ must be JWT")
    return header, claims, f"{segments[0]}.{segments[1]}".encode(), _b64(segments[2])


def _verify(certificate: Certificate, hash_type: type[hashes.HashAlgorithm], message: bytes,
            signature: bytes) -> bool:
    try:
        if certificate.family == "RSA":
            # 9: MGF1 with the same hash, salt length = hash length (RFC 7518 §3.5).
            certificate.public_key.verify(signature, message, padding.PSS(
                mgf=padding.MGF1(hash_type()), salt_length=hash_type.digest_size), hash_type())
        else:
            size = RAW_SIGNATURE_BYTES[certificate.family]
            if len(signature) != size:  # 9: raw R||S, never DER
                return False
            half = size // 2
            der = encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                       int.from_bytes(signature[half:], "big"))
            certificate.public_key.verify(der, message, ec.ECDSA(hash_type()))
    except InvalidSignature:
        return False
    return True


def _scopes(value: object) -> set[str] | None:
    """12: a JSON array of strings or one comma-separated string; no duplicates."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = list(value)
    elif isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    else:
        return None
    if not items or len(set(items)) != len(items):
        return None
    if items == ["mcp"]:
        return {"mcp"}
    return set(items) if set(items) <= SCOPES else None
