"""Ledger schema 4: the charged total beside the best voucher, its compare-and-swap, and
off-chain refunds, on SQLite and PostgreSQL alike (and the in-memory book the same way)."""

from __future__ import annotations

import threading

import pytest
from ledger_helpers import DOMAIN, channel, charge, raw_execute, voucher
from ledger_v3 import create_v3_ledger

from micropay.errors import RefundError, StaleVoucherError
from micropay.ledger import Ledger
from micropay.payee import MemoryVoucherBook

pytest_plugins = ["ledger_fixtures"]


@pytest.fixture
def charged_ledger(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as opened:
        yield opened


def charges_below_the_ceiling(book):
    """A metered charge stores the voucher as the ceiling and moves the charged total by
    the charge only; a later voucher below the ceiling keeps the ceiling."""
    config = channel(1)
    cid = config.channel_id
    assert book.accept_if_higher(config, voucher(config, 100), over=0, charged=30) == 30
    held = book.held(cid)
    assert (held.ceiling, held.charged, held.refunded) == (100, 30, 0)
    # The next request: charged 30 + maximum 100 = 130, charged 0 (a zero charge).
    assert book.accept_if_higher(config, voucher(config, 130), over=30, charged=30) == 0
    assert (book.held(cid).ceiling, book.held(cid).charged) == (130, 30)
    # A refund brings the charged total down; the next voucher (below the ceiling) charges.
    refund = book.refund(cid, 20, "wrong answer")
    assert (refund.charged, refund.refunded, refund.amount) == (10, 20, 20)
    assert book.accept_if_higher(config, voucher(config, 110), over=10, charged=60) == 50
    held = book.held(cid)
    assert (held.ceiling, held.charged, held.refunded) == (130, 60, 20)
    assert book.best(cid) == voucher(config, 130)
    # A charge over a stale read (the refund moved the total) is refused, nothing written.
    with pytest.raises(StaleVoucherError, match="holds 60 for the channel, not 10"):
        book.accept_if_higher(config, voucher(config, 110), over=10, charged=70)
    with pytest.raises(ValueError):  # a charged total above its voucher
        book.accept_if_higher(config, voucher(config, 200), over=60, charged=201)
    assert book.held(cid).charged == 60


def refuses_bad_refunds(book):
    config = channel(2)
    cid = config.channel_id
    book.accept_if_higher(config, voucher(config, 50), over=0, charged=40)
    for amount in (0, -1, 1.5, True, "3"):
        with pytest.raises(RefundError) as err:
            book.refund(cid, amount, "bad")
        assert err.value.reason == "invalid_amount"
    with pytest.raises(RefundError) as err:
        book.refund(cid, 41, "too much")
    assert err.value.reason == "exceeds_refundable"
    with pytest.raises(RefundError) as err:  # never below what is claimed on chain
        book.refund(cid, 11, "below the claims", floor=30)
    assert err.value.reason == "exceeds_refundable"
    assert book.refund(cid, 10, "fine", floor=30).charged == 30
    with pytest.raises(RefundError) as err:
        book.refund(channel(3).channel_id, 1, "unknown")
    assert err.value.reason == "unknown_channel"
    assert book.held(cid).charged == 30 and book.held(cid).refunded == 10
    assert [(r.amount, r.reason, r.charged) for r in book.refunds(cid)] == [(10, "fine", 30)]


@pytest.mark.parametrize("make", ["ledger", "memory"])
def test_a_metered_charge_moves_the_charged_total_under_the_ceiling(make, charged_ledger):
    charges_below_the_ceiling(charged_ledger if make == "ledger" else MemoryVoucherBook())


@pytest.mark.parametrize("make", ["ledger", "memory"])
def test_refunds_are_positive_ints_within_the_charged_total_above_the_claims(make, charged_ledger):
    refuses_bad_refunds(charged_ledger if make == "ledger" else MemoryVoucherBook())


def test_refunds_and_charges_racing_never_lose_one(ledger_url):
    """Charges (compare-and-swap on the charged total, retried over a fresh read) and refunds
    from several threads and connections: the charged total ends at exactly the charges
    less the refunds, and every refund is recorded."""
    config = channel(4)
    cid = config.channel_id
    with Ledger.open(ledger_url, DOMAIN) as book:
        book.accept_if_higher(config, voucher(config, 10**6), over=0, charged=1000)
        charged_ok, refunds_ok = [], []

        def charge() -> None:
            for _ in range(20):
                while True:
                    held = book.held(cid)
                    try:
                        book.accept_if_higher(
                            config, voucher(config, 10**6), over=held.charged,
                            charged=held.charged + 3,
                        )  # fmt: skip
                    except StaleVoucherError:
                        continue
                    charged_ok.append(3)
                    break

        def refund() -> None:
            for _ in range(20):
                book.refund(cid, 2, "race")
                refunds_ok.append(2)

        threads = [threading.Thread(target=f) for f in (charge, charge, refund, refund)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        held = book.held(cid)
        assert held.charged == 1000 + sum(charged_ok) - sum(refunds_ok) == 1000 + 120 - 80
        assert held.refunded == 80 and len(book.refunds(cid)) == 40


def test_a_schema_version_3_ledger_is_upgraded_in_place(ledger_url):
    """A version 3 ledger opens as version 4: each channel's charged total is its best
    voucher (v3 charged vouchers whole), nothing is refunded, its charges keep their rows
    with the ceiling they were charged under, and a zero charge (a repeated charged total,
    which v3's uniqueness forbade) is recorded from then on."""
    first, second = channel(1), channel(2)
    kept = [charge(first, 300, 300, issued_at=10), charge(first, 700, 400, issued_at=20)]
    create_v3_ledger(
        ledger_url,
        DOMAIN,
        [(first, voucher(first, 700), True), (second, voucher(second, 90), False)],
        kept,
    )
    with Ledger.open(ledger_url, DOMAIN) as book:
        held = book.held(first.channel_id)
        assert (held.ceiling, held.charged, held.refunded) == (700, 700, 0)
        assert book.held(second.channel_id).charged == 90
        assert book.charges() == kept
        assert book.best_covered(first.channel_id) == voucher(first, 700)
        zero = charge(first, 700, 0, issued_at=30)  # a metered request that used nothing
        assert (
            book.accept_if_higher(first, voucher(first, 1_700), over=700, charge=zero, charged=700)
            == 0
        )
        assert book.refund(first.channel_id, 100, "upgrade").charged == 600
    [(version,)] = raw_execute(
        ledger_url, "SELECT value FROM ledger_meta WHERE key = 'schema_version'"
    )
    assert version == "4"
    ceilings = raw_execute(ledger_url, "SELECT ceiling FROM charges ORDER BY issued_at")
    assert [int(c) for (c,) in ceilings] == [300, 700, 1_700]
    with Ledger.open(ledger_url, DOMAIN) as reopened:
        assert reopened.charges() == [*kept, zero]
        assert reopened.held(first.channel_id).charged == 600
        assert [r.amount for r in reopened.refunds()] == [100]
