"""A fake external OIDC issuer on loopback, for federated credentials: one real HTTP
server (``http.server`` on a thread, 127.0.0.1) hosting any number of issuers under
path prefixes, each with its own key pair, discovery document
(``/.well-known/openid-configuration``) and JWK Set, and a count of the requests
each path received. Issuers can rotate their keys and go down.

One server serves a whole test session; a test that changes an issuer (rotation, an
outage) makes an issuer of its own with :meth:`FakeOIDC.new_issuer`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey


class FakeIssuer:
    """One external issuer: ``url`` is its ``iss``; ``token`` signs tokens as it would."""

    def __init__(self, base: str, name: str, alg: str, counts: Counter[str]) -> None:
        self.name = name
        self.url = f"{base}/{name}"
        self.alg = alg
        self.jwks_path = f"/{name}/jwks"
        self.discovery_path = f"/{name}/.well-known/openid-configuration"
        self._counts = counts
        self.keys: list[Key] = [self.new_key()]
        self.down = False
        self.max_age = 300
        #: Bytes of filler added to the JWK Set (a hostile or broken issuer's).
        self.padding = 0

    def new_key(self) -> Key:
        key: Key = (ECKey.generate_key("P-256") if self.alg.startswith("ES")
                    else RSAKey.generate_key(2048))
        key.ensure_kid()
        return key

    def rotate(self) -> Key:
        """Publish a new key (first) beside the old one, and sign with it from now on."""
        key = self.new_key()
        self.keys.insert(0, key)
        return key

    @property
    def key(self) -> Key:
        """The key tokens are signed with."""
        return self.keys[0]

    @property
    def jwks_requests(self) -> int:
        return self._counts[self.jwks_path]

    @property
    def discovery_requests(self) -> int:
        return self._counts[self.discovery_path]

    def token(self, now: float, *, sub: str, aud: str | list[str], lifetime: int = 3600,
              header: dict[str, Any] | None = None, key: Key | None = None,
              **claims: Any) -> str:
        """A JWT of this issuer: ``iss``, ``sub``, ``aud``, ``iat``, ``nbf``, ``exp`` (a
        claim given as None is left out), signed with ``key`` (default: the current)."""
        key = key or self.key
        values: dict[str, Any] = {"iss": self.url, "sub": sub, "aud": aud, "iat": int(now),
                                  "nbf": int(now), "exp": int(now) + lifetime, **claims}
        values = {name: value for name, value in values.items() if value is not None}
        protected = {"alg": self.alg, "kid": key.kid, **(header or {})}
        return jwt.encode(protected, values, key, algorithms=[protected["alg"]])

    def kubernetes_token(self, now: float, *, namespace: str, service_account: str,
                         aud: str | list[str], **claims: Any) -> str:
        """Shaped like a projected service-account token (Kubernetes 1.29+, with jti)."""
        return self.token(now, sub=f"system:serviceaccount:{namespace}:{service_account}",
                          aud=aud, jti=str(uuid.uuid4()),
                          **{"kubernetes.io": {"namespace": namespace,
                                               "serviceaccount": {"name": service_account,
                                                                  "uid": str(uuid.uuid4())}}},
                          **claims)

    def ci_token(self, now: float, *, repository: str, ref: str, aud: str | list[str],
                 **claims: Any) -> str:
        """Shaped like a CI job's OIDC token (GitHub Actions' claims)."""
        return self.token(now, sub=f"repo:{repository}:ref:{ref}", aud=aud,
                          jti=str(uuid.uuid4()), repository=repository, ref=ref,
                          workflow="deploy", **claims)

    def spiffe_token(self, now: float, *, spiffe_id: str, aud: str | list[str],
                     **claims: Any) -> str:
        """Shaped like a SPIFFE JWT-SVID (no jti: SPIFFE tokens are cached and reused)."""
        return self.token(now, sub=spiffe_id, aud=aud, nbf=None, lifetime=300, **claims)

    def document(self, path: str) -> tuple[int, dict[str, str], bytes] | None:
        if path == self.discovery_path:
            body = {"issuer": self.url, "jwks_uri": f"{self.url}/jwks",
                    "id_token_signing_alg_values_supported": [self.alg]}
            return 200, {}, json.dumps(body).encode()
        if path == self.jwks_path:
            keys = [key.as_dict(private=False) for key in self.keys]
            document: dict[str, Any] = {"keys": keys}
            if self.padding:
                document["filler"] = "x" * self.padding
            return 200, {"Cache-Control": f"max-age={self.max_age}"}, json.dumps(
                document).encode()
        return None


class FakeOIDC:
    """The server; :attr:`rs256` (Kubernetes-like) and :attr:`es256` (CI-like) issuers
    exist from the start."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.issuers: dict[str, FakeIssuer] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.counts[self.path] += 1
                name = self.path.split("/")[1] if self.path.count("/") > 1 else ""
                issuer = fake.issuers.get(name)
                answer = None if issuer is None or issuer.down else issuer.document(self.path)
                status, headers, body = answer or (503 if issuer and issuer.down else 404,
                                                   {}, b"{}")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name_, value in headers.items():
                    self.send_header(name_, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.rs256 = self.new_issuer("cluster", "RS256")
        self.es256 = self.new_issuer("ci", "ES256")

    def new_issuer(self, prefix: str, alg: str = "RS256") -> FakeIssuer:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        issuer = FakeIssuer(self.base, name, alg, self.counts)
        self.issuers[name] = issuer
        return issuer

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
