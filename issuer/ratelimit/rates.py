"""Rates, rules and decisions: what a check asks and what it answers (no I/O).

A :class:`Decision` renders as the ``RateLimit-Limit`` / ``RateLimit-Remaining``
/ ``RateLimit-Reset`` fields of draft-ietf-httpapi-ratelimit-headers, plus
``Retry-After`` (RFC 9110 §10.2.3) on a refusal (``429``, RFC 6585 §4).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(
    r"^\s*(?P<limit>\d+)\s*(?:/|\s+per\s+)\s*(?P<count>\d+)?\s*"
    r"(?P<unit>second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    """``limit`` hits per ``period`` seconds, e.g. ``Rate.parse("10/hour")``."""

    limit: int
    period: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period < 1:
            raise ValueError("a rate needs a limit and a period of at least 1")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"10/hour"``, ``"1200/minute"``, ``"5 per second"``, ``"100/2 hours"``."""
        match = _RATE.match(text)
        if match is None:
            raise ValueError(f"a rate looks like '10/hour' or '1200/minute', got {text!r}")
        count = int(match["count"]) if match["count"] else 1
        return cls(limit=int(match["limit"]), period=count * _UNITS[match["unit"].lower()])

    def __str__(self) -> str:
        for unit, seconds in reversed(_UNITS.items()):
            if self.period % seconds == 0:
                count = self.period // seconds
                return f"{self.limit}/{unit}" if count == 1 else f"{self.limit}/{count} {unit}s"
        raise AssertionError("unreachable: every period is a whole number of seconds")


@dataclass(frozen=True)
class Rule:
    """One budget a request must fit: ``rate`` on ``key``, named ``policy`` (the
    label of the rejection metric). ``count=False`` looks without charging."""

    key: str
    rate: Rate
    policy: str = "default"
    count: bool = True


@dataclass(frozen=True)
class Decision:
    """The answer to one check. Times are seconds from now.

    When allowed, the numbers are those of the tightest counted rule; when
    refused, those of the rule that refused.
    """

    allowed: bool
    limit: int
    remaining: int  # hits still allowed in the current window, after this one
    reset_after: float  # until one more hit becomes available (0 with nothing counted)
    retry_after: float  # until a refused caller may try again; 0 when allowed
    policy: str = "default"  # the refusing rule's policy (or the tightest counted one's)
    # True for the first refusal of a key since its budget ran out: callers audit
    # that one, so a flood of refused requests cannot flood the audit log.
    first_refusal: bool = False

    def headers(self) -> dict[str, str]:
        """RateLimit-* fields, plus ``Retry-After`` on a refusal (whole seconds, >= 1)."""
        headers = {"RateLimit-Limit": str(self.limit),
                   "RateLimit-Remaining": str(self.remaining),
                   "RateLimit-Reset": str(math.ceil(self.reset_after))}
        if not self.allowed:
            # RFC 9110 §10.2.3: delay-seconds is a non-negative integer; round
            # up so that a caller who waits exactly that long is let in.
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers
