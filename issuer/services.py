"""The core's services: what the lifespan builds and every core handler reads through
:func:`services_of`. Connectors keep their own services under their own state keys
(``issuer.connector``); nothing here knows of them."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from issuer.changes import ChangeNotices
from issuer.clock import Clock
from issuer.crypto import Encryptor
from issuer.keys.ring import KeyRing, Signer
from issuer.metrics import Metrics
from issuer.oauth.assertions import AssertionAuthenticator
from issuer.oauth.dpop import DPoPBinding
from issuer.oauth.server import IssuerAuthorizationServer
from issuer.ratelimit import RateLimiter, RatePolicies
from issuer.settings import Settings
from issuer.state import StateKey
from issuer.store.clients import ClientStore
from issuer.store.failures import StoreFailures
from issuer.store.writer import GroupWriter
from jwks.verifier import JWKSVerifier


@dataclass(frozen=True)
class Services:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    encryptor: Encryptor
    keyring: KeyRing
    signer: Signer
    clients: ClientStore
    # Client and tenant changes: published after their commit, heard from every process.
    notices: ChangeNotices
    writer: GroupWriter
    authorization_server: IssuerAuthorizationServer
    limiter: RateLimiter
    rate_policies: RatePolicies
    metrics: Metrics
    #: Requests refused for an unavailable store: counted, logged once per interval.
    store_failures: StoreFailures
    # The admin API's bearer-token verifier: jwks.verifier over the key ring.
    admin_verifier: JWKSVerifier
    # private_key_jwt / client_secret_jwt: keys, Authlib's check, the jti replay store.
    assertions: AssertionAuthenticator
    # RFC 9449: the token endpoint's DPoP proofs, their replay store and nonces.
    dpop: DPoPBinding
    # ISSUER_REDIS_URL's connection pool; None = single process, in-process state only.
    redis: Redis | None = None


#: Where the lifespan state keeps the core's services.
SERVICES: StateKey[Services] = StateKey("services")


def services_of(connection: HTTPConnection) -> Services:
    """The core's services, typed, for a request of the app that built them."""
    return SERVICES(connection)
