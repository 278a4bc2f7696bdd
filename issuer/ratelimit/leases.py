"""Budget leases: how one issuer process answers most checks of a busy budget
without a Redis round trip, and still never admits more than the limit.

When a check that Redis allows finds its rules busy in this process (checked
again and again within one lease lifetime), the same atomic script also reserves
further slots of every counted rule's log for this process: as many as were
checked in the last lifetime, at most :data:`LEASE_MAX`, at most
1/:data:`LEASE_SHARE` of what remains, and none when that would be fewer than
:data:`LEASE_MIN`. The next checks of the same rules spend those slots here, with
no round trip, until they run out or the lease's lifetime (250 ms, or 1% of the
shortest window) ends; then the unused slots are handed back (``ZREM``) and the
next check asks Redis again.

Why the budget stays exact across processes:

- a slot is in Redis's log before this process spends it, so the log never holds
  fewer hits than were admitted, and no process can admit past the limit;
- reserved slots are scored at the end of the lease, not its start, so a slot
  spent at any moment of the lease still counts for a whole window after it;
- a lease needs ``LEASE_SHARE * LEASE_MIN`` = 32 hits left after its own check
  and takes at most 1/8 of them, so at least the last 28 hits of a budget are
  decided in Redis one by one, and "N of N+k" holds to the request.

What it costs, and why that is acceptable:

- a spent slot may count up to one lease lifetime longer than its window
  (at most 1% of it);
- while a lease is open, other processes see its unused slots as spent: at most
  1/8 of what remained, for at most 250 ms, and handed back when it ends;
- a look-only rule (the source address's failed-authentication guard) is read
  when the lease is granted. A failure charged by another process in the lease's
  last 250 ms is seen when the lease ends; a failure charged by this process ends
  every lease that looked at that key at once. The lease serves only requests that
  have just authenticated as the leased client from that same address.

:class:`LeaseBook` is the bookkeeping alone (no I/O, time from the caller); the
Redis limiter (:mod:`issuer.ratelimit.redis_backend`) sends the reservations and the hand-backs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from issuer.ratelimit.rates import Rate, Rule

#: The most slots one lease reserves.
LEASE_MAX = 64
#: A lease takes at most 1/LEASE_SHARE of the budget that remains.
LEASE_SHARE = 8
#: Fewer slots than this are not worth a lease: the check is decided in Redis alone.
LEASE_MIN = 4
#: The longest a lease lives (seconds); shorter for short windows (1% of the window).
LEASE_LIFETIME = 0.25
#: Rule sets tracked for their demand; past this, new ones are decided in Redis alone.
MAX_TRACKED = 10_000
#: Rule sets idle this long (seconds) are forgotten.
IDLE_AFTER = 10.0

Rules = tuple[Rule, ...]


def lifetime_ms(rate: Rate) -> int:
    """How long a lease on ``rate`` lives, in milliseconds (the script uses the same)."""
    return min(int(LEASE_LIFETIME * 1000), rate.period * 10)


def leasable(rules: Rules) -> bool:
    """Only sets with a counted rule, every counted one large enough to lease from."""
    counted = [rule for rule in rules if rule.count]
    return bool(counted) and all(rule.rate.limit >= LEASE_SHARE * LEASE_MIN for rule in counted)


@dataclass(eq=False)
class Lease:
    """Slots ``<member>:1`` .. ``<member>:<granted>`` of every key in ``keys``."""

    member: str
    keys: tuple[str, ...]
    granted: int
    until: float  # clock seconds: no slot is spent at or after this
    remaining: int  # the budget after the granting check, these slots included
    reset_at: float  # clock seconds
    rule: Rule  # the rule the headers describe
    used: int = 0

    def spend(self, now: float) -> bool:
        """Take one slot, if one is left and the lease has not ended."""
        if self.used >= self.granted or now >= self.until:
            return False
        self.used += 1
        return True

    def unused_members(self) -> list[str]:
        return [f"{self.member}:{slot}" for slot in range(self.used + 1, self.granted + 1)]


@dataclass(eq=False)
class _Entry:
    """One rule set's demand in this process, and its open lease."""

    started: float  # the current lifetime-long interval
    lifetime: float
    peeks: tuple[str, ...]  # the keys of its look-only rules
    count: int = 0  # checks in the current interval
    previous: int = 0  # checks in the interval before it
    seen: float = 0.0
    lease: Lease | None = None
    # The reservation in flight, done when it comes back (checks wait on it).
    asking: asyncio.Future[None] | None = None
    stale: bool = False  # a key it looks at was charged here while it was in flight
    quiet_until: float = 0.0  # a reservation was refused: none asked for until then

    def observe(self, now: float) -> None:
        elapsed = now - self.started
        if elapsed >= self.lifetime:
            self.previous = self.count if elapsed < 2 * self.lifetime else 0
            self.count = 0
            self.started = now
        self.count += 1
        self.seen = now


@dataclass
class LeaseBook:
    """This process's leases and the demand behind them. Not thread-safe: one
    event loop, and no method awaits or does I/O."""

    max_tracked: int = MAX_TRACKED
    _entries: dict[Rules, _Entry] = field(default_factory=dict)
    _open: dict[Rules, Lease] = field(default_factory=dict)
    # Look-only keys -> the rule sets with a lease open or asked for that read them.
    _watching: dict[str, set[Rules]] = field(default_factory=dict)
    _ended: list[Lease] = field(default_factory=list)
    _swept: float = 0.0

    def __len__(self) -> int:
        """Open leases."""
        return len(self._open)

    def spend(self, rules: Rules, now: float, *, observe: bool = True) -> Lease | None:
        """This process's open lease on exactly ``rules``, one of its slots just
        spent; or None (ask Redis). Each check counts once towards the rules'
        demand (``observe=False`` for its second try)."""
        self._charged(rules)
        entry = self._entries.get(rules)
        if entry is None:
            if not leasable(rules) or len(self._entries) >= self.max_tracked:
                return None
            lifetime = min(lifetime_ms(rule.rate) for rule in rules if rule.count) / 1000
            entry = self._entries[rules] = _Entry(
                started=now, lifetime=lifetime,
                peeks=tuple(rule.key for rule in rules if not rule.count))
        if observe:
            entry.observe(now)
        if entry.lease is not None:
            if entry.lease.spend(now):
                return entry.lease
            self._end(rules, entry)
        return None

    def asking(self, rules: Rules) -> asyncio.Future[None] | None:
        """The reservation on its way for ``rules``, if one is: wait on it rather
        than ask Redis too."""
        entry = self._entries.get(rules)
        return entry.asking if entry is not None else None

    def want(self, rules: Rules) -> int:
        """How many slots to reserve with the check about to go to Redis (0: none).
        A non-zero answer must be followed by :meth:`granted`."""
        entry = self._entries.get(rules)
        if (entry is None or entry.asking is not None or entry.lease is not None
                or entry.seen < entry.quiet_until):
            return 0
        wanted = min(LEASE_MAX, max(entry.previous, entry.count - 1))
        if wanted < LEASE_MIN:
            return 0
        entry.asking = asyncio.get_running_loop().create_future()
        for key in entry.peeks:
            self._watching.setdefault(key, set()).add(rules)
        return wanted

    def granted(self, rules: Rules, lease: Lease | None, now: float) -> None:
        """The reservation asked for by :meth:`want` came back (``None``: nothing,
        or the check failed). After nothing, none is asked for during one lifetime:
        the budget is nearly spent, and its checks go to Redis together."""
        entry = self._entries[rules]  # an entry asking is never forgotten (expire)
        assert entry.asking is not None
        entry.asking.set_result(None)
        entry.asking = None
        if lease is None or entry.stale:
            # Nothing granted; or granted on a look that a charge here has since
            # made stale: those slots go straight back.
            if lease is None:
                entry.quiet_until = now + entry.lifetime
            else:
                self._ended.append(lease)
            entry.stale = False
            self._unwatch(rules, entry)
            return
        entry.lease = lease
        self._open[rules] = lease

    def expire(self, now: float) -> None:
        """End the leases whose lifetime is over; now and then forget idle rule sets."""
        for rules in [rules for rules, lease in self._open.items() if now >= lease.until]:
            self._end(rules, self._entries[rules])
        if now - self._swept >= IDLE_AFTER:
            self._swept = now
            idle = [rules for rules, entry in self._entries.items()
                    if entry.lease is None and entry.asking is None
                    and now - entry.seen >= IDLE_AFTER]
            for rules in idle:
                del self._entries[rules]

    def end_all(self) -> None:
        """End every open lease (the process is stopping)."""
        for rules in list(self._open):
            self._end(rules, self._entries[rules])

    def ended(self) -> list[Lease]:
        """Leases ended since the last call whose unused slots go back to Redis."""
        if not self._ended:
            return []
        ended, self._ended = self._ended, []
        return [lease for lease in ended if lease.used < lease.granted]

    def _charged(self, rules: Rules) -> None:
        """A look at a key is stale once this process charges that key: the leases
        that read it end, and the ones on their way will not open."""
        if not self._watching:
            return
        for rule in rules:
            if rule.count and rule.key in self._watching:
                for watching in list(self._watching[rule.key]):
                    entry = self._entries[watching]
                    if entry.asking is not None:
                        entry.stale = True
                    self._end(watching, entry)

    def _end(self, rules: Rules, entry: _Entry) -> None:
        lease = entry.lease
        if lease is None:
            return
        entry.lease = None
        self._open.pop(rules, None)
        self._ended.append(lease)
        if entry.asking is None:
            self._unwatch(rules, entry)

    def _unwatch(self, rules: Rules, entry: _Entry) -> None:
        for key in entry.peeks:
            watching = self._watching.get(key)
            if watching is not None:
                watching.discard(rules)
                if not watching:
                    del self._watching[key]
