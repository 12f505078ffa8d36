"""The ledger's charges: written with the voucher they charged, in one transaction, on both
back ends; and the upgrade of a version 2 ledger, which kept none."""

from __future__ import annotations

import contextlib
import threading

import pytest
from ledger_helpers import DOMAIN, SITE, channel, charge, raw_execute, voucher
from ledger_v2 import create_v2_ledger

from micropay.errors import StaleVoucherError, VoucherError
from micropay.ledger import Ledger
from micropay.payee import MemoryVoucherBook
from micropay.receipts import verify_receipt

pytestmark = pytest.mark.offchain
pytest_plugins = ["ledger_fixtures"]


@pytest.fixture
def ledger(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as opened:
        yield opened


def test_a_charge_is_kept_with_its_voucher_and_reads_back_as_signed(ledger):
    config = channel(1)
    first = charge(config, 1_000, 1_000, resource="GET /a", issued_at=100)
    second = charge(config, 3_000, 2_000, resource="GET /b", issued_at=200)
    assert ledger.accept_if_higher(config, voucher(config, 1_000), over=0, charge=first) == 1_000
    assert ledger.accept_if_higher(config, voucher(config, 3_000), over=1_000, charge=second) == (
        2_000
    )
    assert ledger.charges() == [first, second]
    assert [verify_receipt(c) for c in ledger.charges()] == [SITE.address] * 2
    assert ledger.charges(since=150) == [second]
    assert ledger.charges(until=200) == [first]
    assert (
        sum(c.amount for c in ledger.charges()) == ledger.best(config.channel_id).cumulative_amount
    )


def test_a_refused_voucher_leaves_no_charge(ledger):
    config = channel(2)
    ledger.accept_if_higher(config, voucher(config, 500), charge=charge(config, 500, 500))
    with pytest.raises(StaleVoucherError):  # does not beat the stored voucher
        ledger.accept_if_higher(config, voucher(config, 500), charge=charge(config, 500, 500))
    with pytest.raises(StaleVoucherError):  # priced over an amount another process moved
        ledger.accept_if_higher(config, voucher(config, 700), over=100, charge=charge(config, 700))
    with pytest.raises(VoucherError, match="not of this voucher"):
        ledger.accept_if_higher(config, voucher(config, 900), charge=charge(config, 800))
    assert [c.cumulative_amount for c in ledger.charges()] == [500]
    assert ledger.best(config.channel_id).cumulative_amount == 500


def test_threads_racing_one_voucher_record_one_charge(ledger):
    config = channel(3)
    signed = voucher(config, 1_000)
    taken = []
    start = threading.Barrier(8)

    def race() -> None:
        start.wait()
        with contextlib.suppress(StaleVoucherError):
            taken.append(
                ledger.accept_if_higher(config, signed, over=0, charge=charge(config, 1_000))
            )

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert taken == [1_000]
    assert len(ledger.charges()) == 1


def test_the_memory_book_keeps_charges_too():
    book, config = MemoryVoucherBook(), channel(4)
    kept = charge(config, 10, 10, issued_at=5)
    book.accept_if_higher(config, voucher(config, 10), charge=kept)
    with pytest.raises(StaleVoucherError):
        book.accept_if_higher(config, voucher(config, 10), charge=charge(config, 10))
    assert book.charges() == [kept] and book.charges(since=6) == []


def test_a_schema_version_2_ledger_is_upgraded_in_place(ledger_url):
    """A ledger written by version 2's own table definitions opens as version 3, keeps its
    best and covered vouchers, has no charges, and records charges from then on."""
    first, second = channel(1), channel(2)
    create_v2_ledger(
        ledger_url,
        DOMAIN,
        [(first, voucher(first, 700), True), (second, voucher(second, 90), False)],
    )
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        assert ledger.best(first.channel_id) == voucher(first, 700)
        assert ledger.best_covered(first.channel_id) == voucher(first, 700)
        assert ledger.best_covered(second.channel_id) is None
        assert ledger.charges() == []
        assert ledger.check() == 2
        kept = charge(first, 800, 100)
        assert ledger.accept_if_higher(first, voucher(first, 800), over=700, charge=kept) == 100
    [(version,)] = raw_execute(
        ledger_url, "SELECT value FROM ledger_meta WHERE key = 'schema_version'"
    )
    assert version == "4"
    with Ledger.open(ledger_url, DOMAIN) as reopened:
        assert reopened.charges() == [kept]
        assert sorted(p.voucher.cumulative_amount for p in reopened.positions()) == [90, 800]
