"""Prometheus metrics (``GET /metrics``, the text exposition format).

One registry per app, built by the lifespan: nothing global, so two apps in one
process (the tests) count apart. Labels are bounded: tenant ids and a fixed set
of reasons and policies, never client ids (unbounded cardinality).

Each issuer process counts its own requests; with ``issuer serve --workers N``
scrape every process (one per container is the usual deployment) or sum them.
``issuer_process_info{pid}`` names the process that answered a scrape, so that
scrapes over fresh connections (which the kernel spreads over the workers) can
be told apart and summed per worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from issuer.clock import Clock
from issuer.errors import OAuthError, TooManyRequests
from issuer.keys.ring import KeyRing

#: Server-side reasons worth a label of their own; any other failure is labelled
#: with its RFC error code (``invalid_client``, ``invalid_scope``, ...).
_NAMED_REASONS = frozenset({"tenant_disabled", "client_disabled", "rate_limited",
                            "rate_limit_store_unavailable", "store_unavailable"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def failure_reason(error: OAuthError) -> str:
    return error.reason if error.reason in _NAMED_REASONS else error.error


class Metrics:
    """The issuer's counters; handlers call the methods, ``/metrics`` renders them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.tokens_issued = Counter(
            "issuer_tokens_issued", "Access tokens issued", ["tenant", "grant"],
            registry=registry)
        self.token_failures = Counter(
            "issuer_token_failures", "Token requests refused, by reason", ["reason"],
            registry=registry)
        self.rate_limited = Counter(
            "issuer_rate_limit_rejections", "Requests refused by a rate limit, by policy",
            ["policy"], registry=registry)
        self.rate_limit_fallback = Counter(
            "issuer_rate_limit_fallback",
            "Rate-limit checks decided in process memory because Redis did not answer",
            registry=registry)
        self.token_latency = Histogram(
            "issuer_token_request_duration_seconds", "POST /token latency, seconds",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.store_unavailable = Counter(
            "issuer_store_unavailable",
            "Requests that met a database that failed or did not answer in time (answered "
            "503, or their audit event not written)",
            registry=registry)
        self.introspections = Counter(
            "issuer_introspections", "RFC 7662 introspections, by answer", ["active"],
            registry=registry)
        Info("issuer_process", "The process that answered this scrape",
             registry=registry).info({"pid": str(os.getpid())})
        # The tokens-issued counter of each (tenant, grant) met so far: ``labels()``
        # validates and looks its child up on every call (as many as there are tenants).
        self._issued: dict[tuple[str, str], Counter] = {}

    def watch_keys(self, keyring: KeyRing, clock: Clock) -> None:
        """Report the active signing key's age at every scrape."""
        self.registry.register(_SigningKeyAge(keyring, clock))

    def watch_value(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read at every scrape (e.g. a connector service's own figure)."""
        gauge = Gauge(name, documentation, registry=self.registry)
        gauge.set_function(read)

    def token_issued(self, tenant: str, grant: str) -> None:
        """Count one access token issued to ``tenant`` by ``grant``."""
        child = self._issued.get((tenant, grant))
        if child is None:
            child = self._issued[tenant, grant] = self.tokens_issued.labels(tenant, grant)
        child.inc()

    def token_failed(self, error: OAuthError) -> None:
        self.token_failures.labels(failure_reason(error)).inc()
        if isinstance(error, TooManyRequests):
            self.rate_limited.labels(error.policy).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SigningKeyAge(Collector):
    def __init__(self, keyring: KeyRing, clock: Clock) -> None:
        self._keyring = keyring
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("issuer_active_signing_key_age_seconds",
                                   "Seconds since the active signing key began to sign",
                                   labels=["alg", "kid"])
        now = self._clock.now()
        for key in self._keyring.keys:
            if key.state == "active":
                started = key.activated_at or key.created_at or now
                family.add_metric([key.alg, key.kid], max(0.0, now - started))
        yield family


async def metrics_endpoint(request: Request) -> Response:
    from issuer.services import services_of  # services.py imports this module

    metrics = services_of(request).metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})
