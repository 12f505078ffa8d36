"""The ledger's x402 ``payment-identifier`` ids, on SQLite and PostgreSQL.

An id is tied to the first authorization bound under it, for good: across reopenings, and
when processes race to bind one id to different authorizations (exactly one wins).
"""

from __future__ import annotations

import multiprocessing
import os

import pytest
from ledger_helpers import DOMAIN

from micropay.exact import Settlement
from micropay.ledger import Ledger

pytestmark = pytest.mark.offchain
pytest_plugins = ["ledger_fixtures"]

TOKEN = "0x" + "aa" * 20
PAYER = "0x" + "bb" * 20


def payment(nonce: bytes, signature: bytes = b"\x01" * 65) -> Settlement:
    return Settlement(TOKEN, PAYER, nonce, signature, 2**40, "claimed", 1_000.0)


def _race(url: str, nonce: bytes, start: multiprocessing.synchronize.Event) -> bool:
    """In a child process: bind the shared id to this process's own authorization."""
    with Ledger.open(url, DOMAIN) as ledger:
        start.wait()
        return ledger.authorizations.bind("race_0123456789abcdef", payment(nonce))


def test_an_id_stays_with_its_first_authorization(ledger_url):
    first, second = payment(os.urandom(32)), payment(os.urandom(32))
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        book = ledger.authorizations
        assert book.bind("pay_0123456789abcdef", first)
        assert book.bind("pay_0123456789abcdef", first)  # the same payment, again
        assert not book.bind("pay_0123456789abcdef", second)
        twin = payment(first.nonce, signature=b"\x02" * 65)  # same nonce, other signature
        assert not book.bind("pay_0123456789abcdef", twin)
        assert book.bind("pay_fedcba9876543210", second)
    with Ledger.open(ledger_url, DOMAIN) as reopened:
        assert not reopened.authorizations.bind("pay_0123456789abcdef", second)
        assert reopened.authorizations.bind("pay_0123456789abcdef", first)


def test_one_authorization_wins_an_id_across_processes(ledger_url):
    Ledger.open(ledger_url, DOMAIN).close()  # the schema exists before the race
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(6) as pool:
        pending = [pool.apply_async(_race, (ledger_url, os.urandom(32), start)) for _ in range(6)]
        start.set()
        results = [p.get(timeout=120) for p in pending]
    assert sorted(results) == [False] * 5 + [True]
