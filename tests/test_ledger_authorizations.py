"""The ledger's claims on ``exact`` authorizations, on SQLite and PostgreSQL.

One claim per (token, authorizer, nonce) across processes: eight processes race for each of
a handful of nonces and exactly one wins each; a stale claim (a worker that died before it
submitted) is taken over, a claim with a transaction never is.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import replace

import pytest
from ledger_helpers import DOMAIN

from micropay.exact import Settlement
from micropay.ledger import Ledger

pytestmark = pytest.mark.offchain
pytest_plugins = ["ledger_fixtures"]

TOKEN = "0x" + "aa" * 20
PAYER = "0x" + "bb" * 20


def claim_of(nonce: bytes, at: float = 1_000.0) -> Settlement:
    return Settlement(TOKEN, PAYER, nonce, b"\x01" * 65, 2**40, "claimed", at)


def _race(url: str, nonces: list[bytes], start: multiprocessing.synchronize.Event) -> list[bool]:
    """In a child process: open the ledger, wait for the others, claim every nonce."""
    with Ledger.open(url, DOMAIN) as ledger:
        start.wait()
        return [ledger.authorizations.claim(claim_of(n), 0.0) is None for n in nonces]


def test_one_claim_per_nonce_wins_across_processes(ledger_url):
    Ledger.open(ledger_url, DOMAIN).close()  # the schema exists before the race
    nonces = [os.urandom(32) for _ in range(5)]
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(8) as pool:
        pending = [pool.apply_async(_race, (ledger_url, nonces, start)) for _ in range(8)]
        start.set()
        results = [p.get(timeout=120) for p in pending]
    assert [sum(column) for column in zip(*results, strict=True)] == [1] * len(nonces)


def test_claims_hold_their_progress_and_only_stale_ones_are_taken_over(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        book = ledger.authorizations
        nonce = os.urandom(32)
        first = claim_of(nonce, at=1_000.0)
        assert book.claim(first, stale_before=0.0) is None
        assert book.claim(claim_of(nonce, at=1_001.0), stale_before=500.0) == first
        # Older than the stale mark and never submitted: another worker takes it over.
        taken = claim_of(nonce, at=2_000.0)
        assert book.claim(taken, stale_before=1_500.0) is None
        submitted = replace(taken, transaction=b"\x02" * 32)
        book.update(submitted)
        assert book.claim(claim_of(nonce, at=9_000.0), stale_before=8_000.0) == submitted
        settled = replace(submitted, state="settled", receipt="eyJ9")
        book.update(settled)
        assert book.get(TOKEN, PAYER, nonce) == settled
    with Ledger.open(ledger_url, DOMAIN) as reopened:  # durable
        assert reopened.authorizations.get(TOKEN, PAYER, nonce) == settled
        assert reopened.authorizations.get(TOKEN, PAYER, os.urandom(32)) is None
