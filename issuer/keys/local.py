"""The issuer's own key ring as a ``jwks.verifier`` key source: the issuer verifies the
tokens it issued (the admin API's Bearer tokens) with the very verifier resource
servers use, reading its keys from memory instead of over HTTP.

This module is on the issuer's side (it reads :class:`issuer.keys.ring.KeyRing`);
``jwks.verifier`` itself imports nothing from ``issuer``.

The ring publishes what this process loaded from the store. A token signed a moment
ago by another process with a key this one has not loaded yet -- only possible after a
*forced* rotation, since a scheduled one promotes a key every process has published
for the JWKS max-age -- names an unknown ``kid``: the ring is then reloaded from the
store, at most once per ``min_reload_interval``, exactly as a remote verifier refetches.
"""

from __future__ import annotations

import json

from joserfc.jwk import Key

from issuer.keys.ring import KeyRing
from jwks.sources import Clock, index_key_set


class KeyRingSource:
    """``jwks.verifier.KeySource`` over this process's :class:`KeyRing`."""

    def __init__(self, ring: KeyRing, clock: Clock, *,
                 min_reload_interval: float = 30.0) -> None:
        self._ring = ring
        self._clock = clock
        self.min_reload_interval = min_reload_interval
        self._document: bytes | None = None
        self._index: dict[str, tuple[Key, ...]] = {}
        self._last_reload: float | None = None

    async def get(self, kid: str) -> tuple[Key, ...]:
        found = self._current().get(kid, ())
        if not found and self._may_reload():
            self._last_reload = self._clock.now()
            await self._ring.reload()
            found = self._current().get(kid, ())
        return found

    async def aclose(self) -> None:
        return None

    def _current(self) -> dict[str, tuple[Key, ...]]:
        # The ring swaps in a new document on every change: re-index only then.
        document = self._ring.jwks_document
        if document is not self._document:
            self._index = index_key_set(json.loads(document))
            self._document = document
        return self._index

    def _may_reload(self) -> bool:
        if self._last_reload is None:
            return True
        elapsed = self._clock.now() - self._last_reload
        return elapsed < 0 or elapsed >= self.min_reload_interval
