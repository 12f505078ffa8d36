"""The ledger's paid path: accepts that arrive together share one durable commit, none is
answered before it, a bad one fails alone; a known channel's configuration is built once
(in a bounded cache) and a voucher the payee checked is not checked again. Both back ends.

The writer is held back by a transaction another connection keeps open on the table
(``ledger_helpers.writes_held``), so what queues behind it is known, not left to timing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from ledger_helpers import DOMAIN, channel, charge, raw_execute, voucher, writes_held

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


def test_accepts_that_queue_together_share_one_commit_and_none_is_answered_before_it(
    ledger_url,
):
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        configs = [channel(100 + i) for i in range(40)]
        with writes_held(ledger_url):
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
        with writes_held(ledger_url):
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
        with writes_held(ledger_url):
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


# -- accepts from an event loop: futures of the loop, one wake-up per commit ----------------


def _counting_wakeups(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count the calls another thread makes to wake ``loop`` (the real call still runs)."""
    calls: list[int] = []
    wake = loop.call_soon_threadsafe

    def counted(callback, *args, context=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        return wake(callback, *args, context=context)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    return calls


def test_accepts_from_an_event_loop_are_settled_on_it_once_per_commit(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        configs = [channel(500 + i) for i in range(20)]
        repeated = configs[0]

        async def accept_together() -> None:
            loop = asyncio.get_running_loop()
            wakeups = _counting_wakeups(loop)
            with writes_held(ledger_url):
                futures = [
                    ledger.accept_soon(
                        c, voucher(c, 100 + i), over=0, charge=charge(c, 100 + i), loop=loop
                    )
                    for i, c in enumerate(configs)
                ]
                # The same voucher again, in the same batch: refused there, not here.
                again = ledger.accept_soon(repeated, voucher(repeated, 100), over=0, loop=loop)
                await asyncio.sleep(0.3)  # the writer waits on the lock: nothing answered yet
                assert not any(f.done() for f in [*futures, again])
            assert all(isinstance(f, asyncio.Future) and f.get_loop() is loop for f in futures)
            assert await asyncio.gather(*futures) == [100 + i for i in range(20)]
            with pytest.raises(StaleVoucherError, match=r"holds 100|does not beat"):
                await again
            # Every future of a commit came with the commit's one wake-up of the loop.
            assert len(wakeups) == ledger.commit_stats().commits <= 2

        asyncio.run(accept_together())
        assert len(ledger.charges()) == 20


def test_a_bad_accept_from_an_event_loop_fails_alone(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        earlier = channel(600)
        ledger.accept_if_higher(earlier, voucher(earlier, 10), charge=charge(earlier, 10, 10))
        [taken] = ledger.charges()
        good, bad, other = channel(601), channel(602), channel(603)

        async def accept_both() -> None:
            loop = asyncio.get_running_loop()
            with writes_held(ledger_url):
                first = ledger.accept_soon(
                    good, voucher(good, 5), charge=charge(good, 5, 5), loop=loop
                )
                clash = replace(charge(bad, 5, 5), receipt_id=taken.receipt_id)
                refused = ledger.accept_soon(bad, voucher(bad, 5), charge=clash, loop=loop)
                last = ledger.accept_soon(
                    other, voucher(other, 7), charge=charge(other, 7, 7), loop=loop
                )
            assert (await first, await last) == (5, 7)
            with pytest.raises(LedgerError):
                await refused

        asyncio.run(accept_both())
        assert ledger.best(bad.channel_id) is None
        assert sorted(c.cumulative_amount for c in ledger.charges()) == [5, 7, 10]


def test_an_accept_cancelled_before_its_turn_is_not_written(ledger_url):
    """A request that went away (its task cancelled) before the writer took its accept is
    not charged; one the writer already took is, as a thread's future would be."""
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        first, left, kept = channel(700), channel(701), channel(702)

        async def cancel_one() -> None:
            loop = asyncio.get_running_loop()
            with writes_held(ledger_url):
                taken = ledger.accept_soon(first, voucher(first, 3), over=0, loop=loop)
                await asyncio.sleep(0.2)  # the writer took it and waits on the lock
                gone = ledger.accept_soon(left, voucher(left, 4), over=0, loop=loop)
                stays = ledger.accept_soon(kept, voucher(kept, 6), over=0, loop=loop)
                gone.cancel()
            assert (await taken, await stays) == (3, 6)
            assert gone.cancelled()

        asyncio.run(cancel_one())
        assert ledger.best(left.channel_id) is None
        assert ledger.best(kept.channel_id).cumulative_amount == 6


def test_a_closed_loop_does_not_stop_the_writer(ledger_url):
    """A loop that closed with an accept in flight has nobody to tell: the accept is still
    committed, and the writer goes on serving others."""
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        config, later = channel(800), channel(801)
        loop = asyncio.new_event_loop()
        with writes_held(ledger_url):
            orphan = ledger.accept_soon(config, voucher(config, 8), over=0, loop=loop)
            loop.close()
        assert ledger.accept_if_higher(later, voucher(later, 9)) == 9
        assert ledger.best(config.channel_id).cumulative_amount == 8
        assert not orphan.done()  # its loop is gone: nothing could settle it
