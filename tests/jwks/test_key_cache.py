"""The verifier's JWK Set cache: discovery (RFC 8414 §3), freshness from Cache-Control
(RFC 9111 §4.2, §5.2.2.1), bounded refetch on unknown kids, single flight, and serving
known keys while the issuer is unreachable. Fetches are counted at the fake issuer."""

from __future__ import annotations

import asyncio

import pytest

from jwks.verifier import KeySetUnavailable, UnknownKey
from tests.jwks.conftest import IDP, FakeIssuer

# Discovery -----------------------------------------------------------------------------


async def test_jwks_uri_is_discovered_once_from_rfc8414_metadata(idp: FakeIssuer, keys, clock):
    verifier = idp.verifier()
    for _ in range(3):
        await verifier.verify(idp.token(keys.rsa))
    clock.advance(600)
    await verifier.verify(idp.token(keys.rsa))
    assert idp.requests == {"/.well-known/oauth-authorization-server": 1, "/keys": 2}


async def test_given_jwks_uri_skips_discovery(idp: FakeIssuer, keys):
    await idp.verifier(jwks_uri=idp.jwks_uri).verify(idp.token(keys.rsa))
    assert idp.requests == {"/keys": 1}


async def test_s3_1_issuer_with_a_path_puts_the_well_known_suffix_before_it(clock, keys):
    issuer = FakeIssuer(clock, [keys.rsa], url=f"{IDP}/tenants/acme")
    try:
        await issuer.verifier().verify(issuer.token(keys.rsa))
        assert issuer.requests == {
            "/.well-known/oauth-authorization-server/tenants/acme": 1, "/keys": 1}
    finally:
        await issuer.aclose()


async def test_s3_3_metadata_naming_another_issuer_is_not_used(idp: FakeIssuer, keys):
    idp.metadata_issuer = "https://evil.example"
    with pytest.raises(KeySetUnavailable):
        await idp.verifier().verify(idp.token(keys.rsa))
    assert idp.jwks_fetches == 0


# Freshness -----------------------------------------------------------------------------


async def test_key_set_is_cached_for_max_age_then_refetched(idp: FakeIssuer, keys, clock):
    verifier = idp.verifier()
    token = idp.token(keys.rsa, exp=int(clock.now()) + 3600)
    for _ in range(10):
        await verifier.verify(token)
    clock.advance(599)
    await verifier.verify(token)
    assert idp.jwks_fetches == 1
    clock.advance(1)
    await verifier.verify(token)
    assert idp.jwks_fetches == 2


async def test_age_header_shortens_the_freshness_lifetime(idp: FakeIssuer, keys, clock):
    idp.extra_headers = {"Age": "500"}
    verifier = idp.verifier()
    token = idp.token(keys.rsa, exp=int(clock.now()) + 3600)
    await verifier.verify(token)
    clock.advance(99)
    await verifier.verify(token)
    assert idp.jwks_fetches == 1
    clock.advance(1)
    await verifier.verify(token)
    assert idp.jwks_fetches == 2


async def test_without_cache_control_the_default_max_age_applies(idp: FakeIssuer, keys, clock):
    idp.cache_control = None
    verifier = idp.verifier(default_max_age=300)
    token = idp.token(keys.rsa, exp=int(clock.now()) + 3600)
    await verifier.verify(token)
    clock.advance(299)
    await verifier.verify(token)
    assert idp.jwks_fetches == 1
    clock.advance(1)
    await verifier.verify(token)
    assert idp.jwks_fetches == 2


@pytest.mark.parametrize("cache_control", ["no-store", "no-cache", "max-age=0"])
async def test_uncacheable_key_set_is_still_fetched_at_most_once_per_interval(
        idp: FakeIssuer, keys, clock, cache_control):
    idp.cache_control = cache_control
    verifier = idp.verifier(min_refetch_interval=30)
    token = idp.token(keys.rsa, exp=int(clock.now()) + 3600)
    for _ in range(5):
        await verifier.verify(token)
    assert idp.jwks_fetches == 1
    clock.advance(30)
    await verifier.verify(token)
    assert idp.jwks_fetches == 2


async def test_a_key_removed_from_the_jwks_stops_verifying_after_refresh(idp, keys, clock):
    verifier = idp.verifier()
    token = idp.token(keys.ec, exp=int(clock.now()) + 3600)
    await verifier.verify(token)
    idp.published.remove(keys.ec)
    clock.advance(600)
    with pytest.raises(UnknownKey):
        await verifier.verify(token)


# Unknown kids --------------------------------------------------------------------------


async def test_unknown_kid_refetches_once_and_finds_a_newly_published_key(idp, keys):
    verifier = idp.verifier(min_refetch_interval=0)
    await verifier.verify(idp.token(keys.rsa))
    idp.published.append(keys.rsa_next)  # the issuer rotated
    result = await verifier.verify(idp.token(keys.rsa_next))
    assert result.kid == keys.rsa_next.kid
    assert idp.jwks_fetches == 2


async def test_unknown_kid_is_rejected_after_one_refetch(idp: FakeIssuer, keys):
    verifier = idp.verifier(min_refetch_interval=0)
    await verifier.verify(idp.token(keys.rsa))
    with pytest.raises(UnknownKey):
        await verifier.verify(idp.token(keys.attacker))
    assert idp.jwks_fetches == 2


async def test_kid_flood_refetches_at_most_once_per_min_refetch_interval(idp, keys, clock):
    verifier = idp.verifier(min_refetch_interval=30)
    await verifier.verify(idp.token(keys.rsa))
    clock.advance(30)
    for n in range(500):
        with pytest.raises(UnknownKey):
            await verifier.verify(idp.token(keys.attacker, header={"kid": f"bogus-{n}"}))
    assert idp.jwks_fetches == 2
    clock.advance(29)
    for n in range(100):
        with pytest.raises(UnknownKey):
            await verifier.verify(idp.token(keys.attacker, header={"kid": f"more-{n}"}))
    assert idp.jwks_fetches == 2
    clock.advance(1)
    with pytest.raises(UnknownKey):
        await verifier.verify(idp.token(keys.attacker, header={"kid": "later"}))
    assert idp.jwks_fetches == 3


async def test_kid_flood_does_not_stop_known_keys_from_verifying(idp, keys, clock):
    verifier = idp.verifier()
    await verifier.verify(idp.token(keys.rsa))
    clock.advance(30)
    bogus = [verifier.verify(idp.token(keys.attacker, header={"kid": f"bogus-{n}"}))
             for n in range(200)]
    results = await asyncio.gather(*bogus, verifier.verify(idp.token(keys.ec)),
                                   return_exceptions=True)
    assert all(isinstance(result, UnknownKey) for result in results[:-1])
    assert results[-1].kid == keys.ec.kid
    assert idp.jwks_fetches == 2


# Single flight -------------------------------------------------------------------------


async def test_concurrent_cold_start_shares_one_discovery_and_one_fetch(idp, keys):
    verifier = idp.verifier()
    idp.gate = asyncio.Event()
    tokens = [idp.token(keys.rsa), idp.token(keys.ec), idp.token(keys.okp)] * 20
    pending = asyncio.gather(*(verifier.verify(token) for token in tokens))
    await idp.entered.wait()
    idp.gate.set()
    results = await pending
    assert len(results) == 60
    assert idp.requests == {"/.well-known/oauth-authorization-server": 1, "/keys": 1}


async def test_concurrent_callers_with_a_new_kid_share_one_refetch(idp, keys):
    verifier = idp.verifier(min_refetch_interval=0)
    await verifier.verify(idp.token(keys.rsa))
    idp.published.append(keys.rsa_next)
    idp.gate, idp.entered = asyncio.Event(), asyncio.Event()
    token = idp.token(keys.rsa_next)
    pending = asyncio.gather(*(verifier.verify(token) for _ in range(50)))
    await idp.entered.wait()
    idp.gate.set()
    assert {result.kid for result in await pending} == {keys.rsa_next.kid}
    assert idp.jwks_fetches == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(idp, keys):
    verifier = idp.verifier()
    idp.gate = asyncio.Event()
    first = asyncio.ensure_future(verifier.verify(idp.token(keys.rsa)))
    second = asyncio.ensure_future(verifier.verify(idp.token(keys.ec)))
    await idp.entered.wait()
    first.cancel()
    idp.gate.set()
    assert (await second).kid == keys.ec.kid
    with pytest.raises(asyncio.CancelledError):
        await first
    assert idp.jwks_fetches == 1


# The issuer unreachable ----------------------------------------------------------------


async def test_known_keys_keep_verifying_while_the_issuer_is_down(idp, keys, clock):
    verifier = idp.verifier()
    await verifier.verify(idp.token(keys.rsa))
    idp.down = True
    clock.advance(3600)  # the cached set is stale and refetching fails
    assert await verifier.verify(idp.token(keys.rsa))
    assert await verifier.verify(idp.token(keys.ec))
    assert idp.jwks_fetches == 2  # one failed attempt, not one per verification
    with pytest.raises(UnknownKey):
        await verifier.verify(idp.token(keys.attacker))


async def test_fetch_retries_at_most_once_per_interval_while_the_issuer_is_down(
        idp, keys, clock):
    verifier = idp.verifier(min_refetch_interval=30)
    await verifier.verify(idp.token(keys.rsa))
    idp.down = True
    clock.advance(600)
    for _ in range(20):
        await verifier.verify(idp.token(keys.rsa, exp=int(clock.now()) + 60))
    clock.advance(30)
    await verifier.verify(idp.token(keys.rsa, exp=int(clock.now()) + 60))
    assert idp.jwks_fetches == 3


async def test_verification_recovers_when_the_issuer_comes_back(idp, keys, clock):
    verifier = idp.verifier(min_refetch_interval=30)
    idp.down = True
    with pytest.raises(KeySetUnavailable):
        await verifier.verify(idp.token(keys.rsa))
    idp.down = False
    with pytest.raises(KeySetUnavailable):  # the failed attempt is not retried at once
        await verifier.verify(idp.token(keys.rsa))
    clock.advance(30)
    assert await verifier.verify(idp.token(keys.rsa, exp=int(clock.now()) + 60))


@pytest.mark.parametrize("failure", ["down", "status 500", "not a JWK Set"])
async def test_first_fetch_failure_is_key_set_unavailable(idp: FakeIssuer, keys, failure):
    if failure == "down":
        idp.down = True
    elif failure == "status 500":
        idp.jwks_status = 500
    else:
        idp.jwks_body = ["not", "a", "set"]
    with pytest.raises(KeySetUnavailable):
        await idp.verifier().verify(idp.token(keys.rsa))


async def test_stale_keys_are_dropped_after_max_stale(idp: FakeIssuer, keys, clock):
    verifier = idp.verifier(max_stale=3600)
    await verifier.verify(idp.token(keys.rsa))
    idp.down = True
    clock.advance(600 + 3599)
    assert await verifier.verify(idp.token(keys.rsa, exp=int(clock.now()) + 60))
    clock.advance(1)
    with pytest.raises(KeySetUnavailable):
        await verifier.verify(idp.token(keys.rsa, exp=int(clock.now()) + 60))


# Lifecycle -----------------------------------------------------------------------------


async def test_aclose_leaves_an_injected_http_client_open(idp: FakeIssuer, keys):
    http = idp.http_client()
    async with idp.verifier(http_client=http) as verifier:
        await verifier.verify(idp.token(keys.rsa))
    assert not http.is_closed
