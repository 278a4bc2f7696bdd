"""Benchmark of ``jwks.verifier`` on one core, as a ratio to raw joserfc verification.

Not a test: CI does not run it. One run, in one process pinned to one CPU:

1. an RSA-2048 key (or ``--alg ES256|EdDSA``) and ``--tokens`` distinct RFC 9068 access
   tokens signed with it (``typ: at+jwt``, ``kid``, the issuer's claims);
2. a ``JWKSVerifier`` whose key set comes from a JWKS endpoint (``httpx.MockTransport``)
   fetched once while warming up: afterwards every verification is served from its
   cache, as in a resource server between two refreshes;
3. ``--rounds`` rounds, each timing ``--seconds`` of raw ``joserfc.jws.deserialize_compact``
   (signature only, the key given) and then ``--seconds`` of ``await verifier.verify()``
   (header, typ, alg, key lookup, signature, every claim) over the same tokens;
4. one greppable line: the medians and their ratio.

Run: ``.venv/bin/python bench/verifier.py [--alg ES256] [--seconds 2] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
import warnings

import httpx
from joserfc import jws
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from jwks.verifier import JWKSVerifier

ISSUER = "https://issuer.bench"
AUDIENCE = "https://api.bench"


def _key(alg: str) -> Key:
    if alg == "RS256":
        return RSAKey.generate_key(2048, {"use": "sig", "alg": alg}, private=True,
                                   auto_kid=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", {"use": "sig", "alg": alg}, private=True,
                                  auto_kid=True)
    return OKPKey.generate_key("Ed25519", {"use": "sig", "alg": alg}, private=True,
                               auto_kid=True)


def _tokens(key: Key, alg: str, count: int, now: int) -> list[str]:
    header = {"alg": alg, "kid": key.kid, "typ": "at+jwt"}
    tokens = []
    for _ in range(count):
        claims = {"iss": ISSUER, "sub": "m2m_bench", "aud": AUDIENCE, "exp": now + 3600,
                  "iat": now, "nbf": now, "jti": uuid.uuid4().hex, "client_id": "m2m_bench",
                  "scope": "orders:read orders:write", "tenant_id": str(uuid.uuid4()),
                  "mode": "m2m"}
        tokens.append(jws.serialize_compact(header, json.dumps(claims).encode(), key,
                                            algorithms=[alg]))
    return tokens


def _raw_rate(tokens: list[str], key: Key, alg: str, seconds: float) -> float:
    registry = jws.JWSRegistry(algorithms=[alg])
    done, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for token in tokens:
            jws.deserialize_compact(token, key, [alg], registry)
        done += len(tokens)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


async def _verifier_rate(verifier: JWKSVerifier, tokens: list[str], seconds: float) -> float:
    done, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for token in tokens:
            await verifier.verify(token)
        done += len(tokens)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


async def _run(args: argparse.Namespace) -> int:
    key = _key(args.alg)
    tokens = _tokens(key, args.alg, args.tokens, int(time.time()))
    fetches = 0

    def serve(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        return httpx.Response(200, json={"keys": [key.as_dict(private=False)]},
                              headers={"Cache-Control": "public, max-age=3600"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as http, \
            JWKSVerifier(ISSUER, AUDIENCE, jwks_uri=f"{ISSUER}/.well-known/jwks.json",
                         http_client=http, algorithms=[args.alg]) as verifier:
        result = await verifier.verify(tokens[0])  # warm: one fetch, and every check
        assert result.kid == key.kid and result.client_id == "m2m_bench"
        raw_rates, verifier_rates = [], []
        for _ in range(args.rounds):
            raw_rates.append(_raw_rate(tokens, key, args.alg, args.seconds))
            verifier_rates.append(await _verifier_rate(verifier, tokens, args.seconds))
    raw, verified = statistics.median(raw_rates), statistics.median(verifier_rates)
    print(f"bench=verifier alg={args.alg} cpu={args.cpu} tokens={args.tokens} "
          f"rounds={args.rounds}x{args.seconds:g}s python={platform.python_version()} "
          f"raw_joserfc_verify/s={raw:.1f} verifier/s={verified:.1f} "
          f"ratio={verified / raw:.3f} jwks_fetches={fetches}")
    spread = (f"# raw/s per round: {' '.join(f'{rate:.0f}' for rate in raw_rates)}; "
              f"verifier/s per round: {' '.join(f'{rate:.0f}' for rate in verifier_rates)}")
    print(spread)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alg", choices=["RS256", "ES256", "EdDSA"], default="RS256")
    parser.add_argument("--tokens", type=int, default=200, help="distinct tokens cycled")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="raw/verifier pairs; medians")
    parser.add_argument("--cpu", type=int, default=0, help="the one CPU to run on")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc: RFC 9864 deprecates "EdDSA"
        return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
