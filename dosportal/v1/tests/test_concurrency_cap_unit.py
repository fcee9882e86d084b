"""The cap on requests in flight, in both limiters (Redis and process memory): exact, refused
calls consume nothing, a slot frees when its call ends or its lease lapses, renewal keeps it."""

from __future__ import annotations

import asyncio

from dosportal.testing.limiters import Limiter
from dosportal.v1 import ratelimit


async def admit(limiter: Limiter, cap: int = 2):
    return await limiter.admit(7, rpm=100, tpm=100_000, cost=10, max_concurrency=cap)


async def test_the_cap_is_exact_and_a_refusal_consumes_nothing(make_limiter) -> None:
    limiter = make_limiter(60, lease_seconds=60)
    first, second, third = [await admit(limiter) for _ in range(3)]

    assert (first.admitted, second.admitted, third.admitted) == (True, True, False)
    assert (third.refused_by, third.retry_after_seconds, third.slot) == ("concurrency", 1, False)
    assert third.remaining_requests == 98  # the refused call took no rate-limit entry
    await limiter.finish(7, first.entry, 10)
    fourth = await admit(limiter)
    assert fourth.admitted and fourth.remaining_requests == 97


async def test_a_402_gives_back_both_the_entry_and_the_slot(make_limiter) -> None:
    limiter = make_limiter(60, lease_seconds=60)
    decision = await admit(limiter, cap=1)
    await limiter.release(7, decision.entry)
    again = await admit(limiter, cap=1)
    assert again.admitted and again.remaining_requests == 99


async def test_a_lapsed_lease_frees_the_slot_and_renewal_keeps_it(make_limiter) -> None:
    limiter = make_limiter(60, lease_seconds=0.4)
    kept = await admit(limiter, cap=1)
    for _ in range(3):
        await asyncio.sleep(0.2)
        await limiter.refresh_slot(7, kept.entry)
    assert (await admit(limiter, cap=1)).refused_by == "concurrency"  # 0.6 s on, renewed: still held
    await asyncio.sleep(0.5)
    assert (await admit(limiter, cap=1)).admitted  # not renewed for a lease: free


async def test_without_a_cap_no_slot_is_taken(make_limiter) -> None:
    limiter = make_limiter(60, lease_seconds=60)
    decisions = [await admit(limiter, cap=0) for _ in range(5)]
    assert all(decision.admitted and not decision.slot for decision in decisions)
    await ratelimit.finish(7, decisions[0], 10)  # no slot to give back, nothing used beyond: a no-op


async def test_a_finished_call_keeps_what_it_used_in_the_token_window(make_limiter) -> None:
    """Admission counts the worst case; once the call ends its entry holds what it used."""
    limiter = make_limiter(60, lease_seconds=60)
    first = await limiter.admit(7, rpm=100, tpm=10_000, cost=4_000, max_concurrency=0)
    second = await limiter.admit(7, rpm=100, tpm=10_000, cost=4_000, max_concurrency=0)
    assert (await limiter.admit(7, rpm=100, tpm=10_000, cost=4_000, max_concurrency=0)).refused_by == "tokens"

    await limiter.finish(7, first.entry, 150)
    await limiter.finish(7, second.entry, 9_999)  # more than admitted: the entry keeps its admitted cost

    peeked = await limiter.admit(7, rpm=100, tpm=10_000, cost=0, peek=True)
    assert (peeked.remaining_requests, peeked.remaining_tokens) == (98, 10_000 - 150 - 4_000)
    assert (await limiter.admit(7, rpm=100, tpm=10_000, cost=4_000, max_concurrency=0)).admitted
