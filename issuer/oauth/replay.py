"""The client-assertion replay store (RFC 7523 §3): its SQL is the store's,
``issuer.store.assertion_jtis``; this name stays for the code that wires it."""

from issuer.store.assertion_jtis import PRUNE_INTERVAL, ReplayStore

__all__ = ["PRUNE_INTERVAL", "ReplayStore"]
