"""The verifier's typed errors (RFC 9068 §4, RFC 6750 §3.1): each failed check raises
one, and ``description`` is fixed text safe to show a caller.

Imports nothing from ``issuer``.
"""

from __future__ import annotations

from typing import ClassVar


class TokenError(Exception):
    """The token was not accepted. ``description`` is fixed text, safe to show callers;
    ``str(error)`` may carry detail (never the token) for logs."""

    description: ClassVar[str] = "The access token could not be verified"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.description)


class InvalidTokenError(TokenError):
    """The token itself is bad: RFC 6750 §3.1 ``invalid_token``."""

    description = "The access token is invalid"


class MalformedToken(InvalidTokenError):
    description = "The access token is not a well-formed signed JWT"


class WrongType(InvalidTokenError):
    description = "The token is not a JWT access token (typ must be at+jwt)"


class DisallowedAlgorithm(InvalidTokenError):
    description = "The access token's signing algorithm is not accepted"


class UnknownKey(InvalidTokenError):
    description = "The access token was signed by an unknown key"


class BadSignature(InvalidTokenError):
    description = "The access token's signature is invalid"


class MissingClaim(InvalidTokenError):
    description = "The access token lacks a required claim"

    def __init__(self, claim: str) -> None:
        super().__init__(f"the token has no {claim!r} claim")
        self.claim = claim


class InvalidClaim(InvalidTokenError):
    description = "The access token has a malformed claim"

    def __init__(self, claim: str) -> None:
        super().__init__(f"the token's {claim!r} claim has the wrong type")
        self.claim = claim


class WrongIssuer(InvalidTokenError):
    description = "The access token was issued by another issuer"


class WrongAudience(InvalidTokenError):
    description = "The access token is not meant for this resource server"


class Expired(InvalidTokenError):
    description = "The access token expired"


class NotYetValid(InvalidTokenError):
    description = "The access token is not valid yet"


class KeySetUnavailable(TokenError):
    """The issuer's keys could not be obtained: not the token's fault, still rejected."""

    description = "The issuer's signing keys are unavailable"


# RFC 9449 (DPoP) ------------------------------------------------------------------------


class DPoPProofInvalid(TokenError):
    """The ``DPoP`` proof failed a check of RFC 9449 §4.3 (or is missing): answered
    ``invalid_dpop_proof`` (§7.1). ``str(error)`` names the check (fixed text)."""

    description = "The DPoP proof is invalid"


class MissingDPoPProof(DPoPProofInvalid):
    description = "A DPoP proof is required with a DPoP access token"


class DPoPProofReplayed(DPoPProofInvalid):
    description = "The DPoP proof was used before"


class DPoPKeyMismatch(DPoPProofInvalid):
    """§7 (12): the proof's key is not the one the token's ``cnf.jkt`` names."""

    description = "The DPoP proof's key is not the one the access token is bound to"


class DPoPBoundTokenAsBearer(InvalidTokenError):
    """§7.2: a DPoP-bound token (``cnf.jkt``) presented as a Bearer token."""

    description = "The access token is DPoP-bound: present it with the DPoP scheme"


class NotDPoPBound(InvalidTokenError):
    """A token without ``cnf.jkt`` presented with the DPoP scheme."""

    description = "The access token is not DPoP-bound"
