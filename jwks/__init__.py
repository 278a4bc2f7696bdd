"""jwks: the resource-server verifier (``jwks.verifier``, with RFC 9449 DPoP proofs in
``jwks.dpop``) and its Starlette and FastAPI
integrations (``jwks.starlette``, ``jwks.fastapi``); a distribution of its own,
``m2m-jwks`` (``jwks/pyproject.toml``). The issuer's signing keys and their publication
live in the issuer (``issuer.keys``).

Only the verifier's names are re-exported here, and this module imports nothing from
``issuer``: ``import jwks.verifier`` runs this file first, and a resource
server installs the verifier without the issuer.
"""

from __future__ import annotations

from jwks.verifier import (
    BadSignature,
    Clock,
    DisallowedAlgorithm,
    DPoPBoundTokenAsBearer,
    DPoPKeyMismatch,
    DPoPProofInvalid,
    DPoPProofReplayed,
    DPoPVerifier,
    Expired,
    InvalidClaim,
    InvalidTokenError,
    JWKSKeySource,
    JWKSVerifier,
    KeySetUnavailable,
    KeySource,
    MalformedToken,
    MemoryReplayCache,
    MissingClaim,
    MissingDPoPProof,
    NotDPoPBound,
    NotYetValid,
    ReplayStore,
    StaticKeySource,
    TokenError,
    TokenVerifier,
    UnknownKey,
    VerifiedToken,
    WrongAudience,
    WrongIssuer,
    WrongType,
    metadata_url,
)

__all__ = [
    "BadSignature",
    "Clock",
    "DPoPBoundTokenAsBearer",
    "DPoPKeyMismatch",
    "DPoPProofInvalid",
    "DPoPProofReplayed",
    "DPoPVerifier",
    "DisallowedAlgorithm",
    "Expired",
    "InvalidClaim",
    "InvalidTokenError",
    "JWKSKeySource",
    "JWKSVerifier",
    "KeySetUnavailable",
    "KeySource",
    "MalformedToken",
    "MemoryReplayCache",
    "MissingClaim",
    "MissingDPoPProof",
    "NotDPoPBound",
    "NotYetValid",
    "ReplayStore",
    "StaticKeySource",
    "TokenError",
    "TokenVerifier",
    "UnknownKey",
    "VerifiedToken",
    "WrongAudience",
    "WrongIssuer",
    "WrongType",
    "metadata_url",
]
