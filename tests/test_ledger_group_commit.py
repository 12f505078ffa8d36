"""The ledger's paid path: accepts that arrive together share one durable commit, none is
answered before it, a bad one fails alone; a known channel's configuration is built once
(in a bounded cache) and a voucher the payee checked is not checked again. Both back ends.

The writer is held back by a transaction another connection keeps open on the table (as
another process's writer would), so what queues behind it is known, not left to timing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from ledger_helpers import DOMAIN, channel, charge, raw_execute, voucher

from micropay.errors import (
    InvalidSignatureError,
    LedgerCorruptError,
    LedgerError,
    StaleVoucherError,
)
from micropay.ledger import Ledger
from micropay.vouchers import Voucher, VoucherDomain, VoucherVerifier

pytestmark = pytest.mark.offchain
pytest_plugins = ["ledger_fixtures"]


@contextmanager
def _writes_held(url: str) -> Iterator[None]:
    """Keep the ledger's table write-locked from another connection until the block ends."""
    if url.startswith("sqlite:"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as held:
        held.execute("BEGIN")
        held.execute("LOCK TABLE best_vouchers IN SHARE ROW EXCLUSIVE MODE")
        try:
            yield
        finally:
            held.execute("ROLLBACK")


def test_accepts_that_queue_together_share_one_commit_and_none_is_answered_before_it(
    ledger_url,
):
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        configs = [channel(100 + i) for i in range(40)]
        with _writes_held(ledger_url):
            futures = [
                ledger.accept_soon(c, voucher(c, 1_000 + i), over=0, charge=charge(c, 1_000 + i))
                for i, c in enumerate(configs)
            ]
            time.sleep(0.3)  # the writer waits on the lock: nothing may be answered yet
            assert not any(future.done() for future in futures)
        assert [future.result(timeout=60) for future in futures] == [1_000 + i for i in range(40)]
        stats = ledger.commit_stats()
        # The first accept's transaction waited on the lock; every other one queued behind it
        # and went in the next (at most 64 per transaction).
        assert stats.accepts == 40
        assert stats.commits <= 2
        assert len(ledger.charges()) == 40
    with Ledger.open(ledger_url, DOMAIN) as reopened:  # durable: another connection reads all
        assert [reopened.best(c.channel_id).cumulative_amount for c in configs] == [
            1_000 + i for i in range(40)
        ]


def test_a_bad_accept_in_a_batch_fails_alone_and_writes_nothing(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        earlier = channel(200)
        ledger.accept_if_higher(earlier, voucher(earlier, 10), charge=charge(earlier, 10, 10))
        [taken] = ledger.charges()
        good, bad, other = channel(201), channel(202), channel(203)
        with _writes_held(ledger_url):
            first = ledger.accept_soon(good, voucher(good, 5), charge=charge(good, 5, 5))
            # A receipt id already charged: the database refuses the row, in the batch.
            clash = replace(charge(bad, 5, 5), receipt_id=taken.receipt_id)
            refused = ledger.accept_soon(bad, voucher(bad, 5), charge=clash)
            last = ledger.accept_soon(other, voucher(other, 7), charge=charge(other, 7, 7))
        assert first.result(timeout=60) == 5
        assert last.result(timeout=60) == 7
        with pytest.raises(LedgerError):
            refused.result(timeout=60)
        assert ledger.best(bad.channel_id) is None  # its voucher went with its charge
        assert sorted(c.cumulative_amount for c in ledger.charges()) == [5, 7, 10]


def test_a_stale_accept_in_a_batch_is_refused_and_the_rest_commit(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        config = channel(250)
        with _writes_held(ledger_url):
            raised = ledger.accept_soon(config, voucher(config, 9), over=0)
            same = ledger.accept_soon(config, voucher(config, 9), over=0)  # the same voucher
            lower = ledger.accept_soon(config, voucher(config, 4))
        assert raised.result(timeout=60) == 9
        for stale in (same, lower):
            with pytest.raises(StaleVoucherError, match=r"holds 9|does not beat the accepted 9"):
                stale.result(timeout=60)
        assert ledger.best(config.channel_id).cumulative_amount == 9


def test_a_known_channels_configuration_is_built_once_in_a_bounded_cache(ledger_url):
    with Ledger.open(ledger_url, DOMAIN, max_cached_channels=2) as ledger:
        one, two, three = channel(300), channel(301), channel(302)
        for config in (one, two, three):
            ledger.accept_if_higher(config, voucher(config, 1))
        # Reads hand back the configuration accepted, not one rebuilt from the row ...
        assert ledger.config(three.channel_id) is three
        assert ledger.position(two.channel_id).config is two
        # ... but only for the channels the bound keeps: the first fell out, and is rebuilt.
        rebuilt = ledger.config(one.channel_id)
        assert rebuilt == one and rebuilt is not one
        # A row altered behind the cache's back is still caught.
        raw_execute(
            ledger_url,
            "UPDATE best_vouchers SET withdraw_delay = 7200 WHERE channel_id = ?",
            (three.channel_id,),
        )
        with pytest.raises(LedgerCorruptError, match="hashes to"):
            ledger.config(three.channel_id)


class _Counting(VoucherVerifier):
    """The ledger's own verifier, counting the signatures it recovers."""

    def __init__(self, domain: VoucherDomain) -> None:
        super().__init__(domain)
        self.checked = 0

    def verify(self, voucher: Voucher, authorizer: bytes) -> None:
        self.checked += 1
        super().verify(voucher, authorizer)


def test_a_voucher_checked_by_the_ledger_is_not_checked_again_when_stored(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        counting = ledger._verifier = _Counting(DOMAIN)
        config = channel(400)
        signed = voucher(config, 50)
        ledger.verify(config, signed)
        assert ledger.accept_if_higher(config, signed) == 50
        assert counting.checked == 1
        # What was remembered is that voucher: another one is checked when stored ...
        assert ledger.accept_if_higher(config, voucher(config, 60)) == 10
        assert counting.checked == 2
        # ... and a forged one is refused whether or not verify was asked first.
        forged = Voucher(config.channel_id, 70, signed.signature)
        with pytest.raises(InvalidSignatureError):
            ledger.verify(config, forged)
        with pytest.raises(InvalidSignatureError):
            ledger.accept_if_higher(config, forged)
        assert ledger.best(config.channel_id).cumulative_amount == 60
