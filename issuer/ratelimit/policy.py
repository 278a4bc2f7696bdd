"""The rate-limit policies, as :class:`~issuer.ratelimit.rates.Rule` builders.

- ``client``: a client's successful token requests at ``/token``: the client's
  own ``rate_limit``, else ``ISSUER_RATE_LIMIT`` (default ``1200/minute``).
  Counted after the client authenticated, so nobody who merely knows a
  ``client_id`` can spend that client's budget.
- ``failed_auth``: failed client authentications per source address, the
  brute-force guard (``ISSUER_FAILED_AUTH_RATE_LIMIT``, default ``20/minute``).
  It is consulted on every request, in the same atomic check as the client's
  budget, and charged by each failure; an address that spent it gets 429 whether
  or not its next secret is right, so the guard is no oracle for guesses.
- ``m2m_mint``: ``POST /auth/m2m/token``, 10 per hour per target client (the
  platform's M2M spec).
- ``admin``: the admin API, per admin client (``ISSUER_ADMIN_RATE_LIMIT``,
  default ``600/minute``).

Every check happens before any signing or database write.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from issuer.errors import TooManyRequests
from issuer.ratelimit.protocol import RateLimiter
from issuer.ratelimit.rates import Decision, Rate, Rule
from issuer.settings import Settings
from issuer.store.records import ClientRecord

CLIENT = "client"
FAILED_AUTH = "failed_auth"
M2M_MINT = "m2m_mint"
ADMIN = "admin"
#: POST /auth/m2m/token: "10 per hour per client".
MINT_RATE = Rate(limit=10, period=3600)


@lru_cache(maxsize=256)
def _parse(text: str) -> Rate:
    return Rate.parse(text)


@dataclass(frozen=True)
class RatePolicies:
    client_default: Rate
    failed_auth: Rate
    admin: Rate
    m2m_mint: Rate = MINT_RATE

    @classmethod
    def from_settings(cls, settings: Settings) -> RatePolicies:
        return cls(client_default=Rate.parse(settings.rate_limit),
                   failed_auth=Rate.parse(settings.failed_auth_rate_limit),
                   admin=Rate.parse(settings.admin_rate_limit))

    def client_rate(self, record: ClientRecord) -> Rate:
        return _parse(record.rate_limit) if record.rate_limit else self.client_default

    def token(self, address: str, record: ClientRecord) -> tuple[Rule, Rule]:
        """A granted token request: the address must not have spent its failure
        budget; the client's budget is charged."""
        return (self.guard(address),
                Rule(f"token:{record.client_id}", self.client_rate(record), CLIENT))

    def guard(self, address: str) -> Rule:
        """The address must not have spent its failure budget (nothing charged)."""
        return Rule(f"auth-fail:{address}", self.failed_auth, FAILED_AUTH, count=False)

    def failure(self, address: str) -> Rule:
        """A failed client authentication: charged to the address."""
        return Rule(f"auth-fail:{address}", self.failed_auth, FAILED_AUTH)

    def mint(self, client_id: str) -> Rule:
        return Rule(f"m2m-mint:{client_id}", self.m2m_mint, M2M_MINT)

    def admin_client(self, client_id: str) -> Rule:
        return Rule(f"admin:{client_id}", self.admin, ADMIN)


async def enforce(limiter: RateLimiter, *rules: Rule,
                  error: type[TooManyRequests] = TooManyRequests) -> Decision:
    """Check ``rules``: the decision when allowed (its headers may go on the answer),
    else the 429 raised."""
    decision = await limiter.check(*rules)
    if not decision.allowed:
        raise _refusal(decision, error)
    return decision


def _refusal(decision: Decision, error: type[TooManyRequests]
             ) -> TooManyRequests:
    """The 429 of a refused decision, headers included."""
    return error(policy=decision.policy, first_refusal=decision.first_refusal,
                 headers=decision.headers())
