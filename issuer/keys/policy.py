"""The key rotation policy: how often keys rotate, how long each state lasts, and the
JWKS max-age that follows.

The numbers are the defaults (:class:`RotationPolicy`):

- The JWKS ``Cache-Control: max-age`` is ``min(3600, rotation period / 10)``: one
  hour. A resource server refetches rarely, and a tenth of the period keeps the
  pre-publication lead small beside the period whatever it is set to.
- Every process reloads the ring from the store every ``min(60 s, max-age)``, so a
  rotation made by another process or by ``issuer keys rotate`` reaches all of them
  within a minute; the same background task rotates when the active key is
  ``ISSUER_KEY_ROTATION_DAYS`` old and deletes expired retired keys.
- A key signs only after it has been published as ``next`` for max-age + reload
  interval (``min_next_age``): by then every process publishes it, and every cached
  JWKS that lacked it has gone stale, so a resource server with a warm cache never
  meets an unknown ``kid``. A scheduled rotation promotes a key one period old; a
  manual one that would promote a younger key is refused unless forced (then
  resource servers refetch on the unknown ``kid``, as ``jwks.verifier`` does).
- A retired key stays published for reload interval (other processes may sign with
  it until they reload) + the longest token lifetime (``ISSUER_TOKEN_TTL`` or the
  largest client ``token_ttl``, at most a day) + 60 s of clock-skew leeway.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The JWKS max-age never exceeds an hour, whatever the rotation period.
JWKS_MAX_AGE_CAP = 3600
#: Seconds between two reloads of the ring (fewer when the max-age is shorter).
RELOAD_INTERVAL = 60.0
#: The longest token lifetime (registration and settings cap ``token_ttl`` here).
MAX_TOKEN_TTL = 86400
#: Clock-skew leeway after a retired key's last token expired, before it is deleted.
RETIRED_KEY_LEEWAY = 60


@dataclass(frozen=True)
class RotationPolicy:
    """How often keys rotate and how long each state lasts (module docstring)."""

    rotation_days: int = 90  # ISSUER_KEY_ROTATION_DAYS
    token_ttl: int = 3600  # ISSUER_TOKEN_TTL
    reload_interval: float = RELOAD_INTERVAL

    @property
    def rotation_period(self) -> float:
        return self.rotation_days * 86400.0

    @property
    def jwks_max_age(self) -> int:
        return int(min(JWKS_MAX_AGE_CAP, self.rotation_period / 10))

    @property
    def reload_every(self) -> float:
        return min(self.reload_interval, float(self.jwks_max_age))

    @property
    def min_next_age(self) -> float:
        """How long a key is published as ``next`` before it may sign."""
        return self.jwks_max_age + self.reload_every

    def retired_lifetime(self, max_token_ttl: int) -> float:
        """How long a retired key stays published after its retirement."""
        return self.reload_every + min(max_token_ttl, MAX_TOKEN_TTL) + RETIRED_KEY_LEEWAY
