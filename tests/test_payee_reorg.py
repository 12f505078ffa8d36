"""A reorged top-up must not cost the payee what the confirmed deposit covered (issue 12).

The payer opens a channel with D, pays within D, tops up, and pays beyond D against the
top-up before it is confirmed; then the top-up is reorganised away (a snapshot taken before
it is restored and new blocks are mined) and the payer asks to withdraw. The payee's best
voucher now exceeds the deposit and can never be claimed, but the best voucher D covered
was kept beside it, and ``claim_all`` and the watchtower claim that one. Runs on every
network pass (``chain.snapshot``/``chain.restore`` are ``evm_snapshot``/``evm_revert`` on
anvil) and on every book: in memory, SQLite and PostgreSQL. Then when the payee counts a
voucher as covered, and its ``confirmations`` setting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from micropay.errors import PayeeConfigError
from micropay.ledger import Ledger
from micropay.payee import MemoryVoucherBook, Payee, VoucherBook
from micropay.payer import Payer
from micropay.watchtower import Watchtower

pytest_plugins = ["ledger_fixtures"]

ETH = 10**18
DEPOSIT = ETH
COVERED = [2 * 10**17, 5 * 10**17, 8 * 10**17]  # cumulative totals within the deposit
BEYOND = [12 * 10**17, 15 * 10**17]  # totals only the top-up covers
SETTLE_BLOCKS = 3  # deeper than the payee's default confirmation depth (2 blocks)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.standalone),
    ]
)
def book(request: pytest.FixtureRequest, channels, tmp_path: Path) -> Iterator[VoucherBook]:
    if request.param == "memory":
        yield MemoryVoucherBook()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_ledger_url")
    with Ledger.open(url, channels.domain) as ledger:
        yield ledger


@pytest.fixture
def ledger(channels, ledger_url: str) -> Iterator[Ledger]:
    """The watchtower keeps its chain view in a durable ledger: SQLite and PostgreSQL."""
    with Ledger.open(ledger_url, channels.domain) as opened:
        yield opened


def pay_through_a_reorged_top_up(chain, channels, actors, book: VoucherBook) -> Payer:
    """Accept vouchers within the deposit, then beyond it against a top-up that a reorg
    removes; the payer then asks to withdraw. Returns the payer."""
    payer = Payer.open(channels, actors.payer, actors.payee.address, DEPOSIT, withdraw_delay=3600)
    chain.mine(SETTLE_BLOCKS)  # the opening deposit is confirmed
    payee = Payee(channels, actors.payee, book=book, safety_margin=60)
    for total in COVERED:
        payee.accept(payer.config, payer.pay(total - payer.cumulative))
    before_top_up = chain.snapshot()
    payer.top_up(ETH)
    for total in BEYOND:  # accepted against the latest deposit, as a site does
        payee.accept(payer.config, payer.pay(total - payer.cumulative))
    assert book.best(payer.config.channel_id).cumulative_amount == BEYOND[-1]
    chain.restore(before_top_up)  # the top-up is reorganised away...
    chain.mine(SETTLE_BLOCKS)  # ...and the chain goes on without it
    assert channels.state(payer.config).deposited == DEPOSIT
    payer.request_withdraw()
    return payer


def test_claim_all_after_a_reorged_top_up_claims_what_the_deposit_covered(
    chain, channels, actors, book, caplog
):
    payer = pay_through_a_reorged_top_up(chain, channels, actors, book)
    payee = Payee(channels, actors.payee, book=book)
    with caplog.at_level(logging.WARNING, logger="micropay.payee"):
        assert payee.claim_all() is not None
    assert channels.state(payer.config).claimed == COVERED[-1]
    assert f"claiming the covered voucher for {COVERED[-1]} instead" in caplog.text
    assert payee.claim_all() is None  # the rest was never covered: nothing more to claim


def test_watchtower_after_a_reorged_top_up_claims_what_the_deposit_covered(
    chain, channels, actors, ledger
):
    watch = Watchtower(
        channels,
        ledger,
        actors.relayer,
        confirmations=1,
        poll_interval=0.01,
        payee_key=actors.payee,  # the relayer's claims carry the payee's signature
    )
    watch.run_once()  # it follows the chain from before the channel opens
    payer = pay_through_a_reorged_top_up(chain, channels, actors, ledger)
    chain.mine(2)
    report = watch.run_once()
    channel_id = payer.config.channel_id
    assert report.underfunded == (channel_id,)  # the best voucher is still reported short
    assert report.claimed_covered == (channel_id,)
    [outcome] = report.outcomes
    assert outcome.ok and outcome.amounts == (COVERED[-1],)
    assert [claim.channel_id for claim in outcome.claims] == [channel_id]
    assert channels.state(payer.config).claimed == COVERED[-1]
    chain.mine(2)
    after = watch.run_once()
    assert not after.outcomes  # claimed once; nothing covered is left to claim
    assert ledger.position(channel_id).chain.claimed == COVERED[-1]


def test_a_voucher_is_covered_once_the_deposit_under_it_is_confirmed(chain, channels, actors):
    payee = Payee(channels, actors.payee, state_ttl=0.0)  # reads the chain for every voucher
    payer = Payer.open(channels, actors.payer, actors.payee.address, DEPOSIT)
    channel_id = payer.config.channel_id
    payee.accept(payer.config, payer.pay(10**17))  # the opening deposit is not confirmed yet
    assert payee.book.best_covered(channel_id) is None
    chain.mine(SETTLE_BLOCKS)
    payee.accept(payer.config, payer.pay(10**17))
    assert payee.book.best_covered(channel_id).cumulative_amount == 2 * 10**17
    payer.top_up(ETH)
    payee.accept(payer.config, payer.pay(10**18))  # beyond the confirmed deposit: accepted
    assert payee.book.best(channel_id).cumulative_amount == 12 * 10**17
    assert payee.book.best_covered(channel_id).cumulative_amount == 2 * 10**17
    chain.mine(SETTLE_BLOCKS)  # the top-up is confirmed
    payee.accept(payer.config, payer.pay(10**17))
    assert payee.book.best(channel_id) == payee.book.best_covered(channel_id)
    assert payee.book.best_covered(channel_id).cumulative_amount == 13 * 10**17


def test_with_no_confirmations_the_latest_deposit_covers_every_voucher(channels, actors):
    payee = Payee(channels, actors.payee, confirmations=0)
    payer = Payer.open(channels, actors.payer, actors.payee.address, DEPOSIT)
    payee.accept(payer.config, payer.pay(10**17))
    assert payee.book.best_covered(payer.config.channel_id) == payer.last_voucher


@pytest.mark.parametrize("confirmations", [-1, 1.5, "2", None])
def test_nonsense_confirmations_are_refused(channels, actors, confirmations):
    with pytest.raises(PayeeConfigError, match="confirmations"):
        Payee(channels, actors.payee, confirmations=confirmations)


def test_a_top_up_after_a_refund_is_not_covered_until_it_is_confirmed(chain, channels, actors):
    """Deposits no longer only grow (the payee's on-chain refund lowers them), so a confirmed
    deposit seen before a refund says nothing about a later top-up: it must be read again."""
    payee = Payee(channels, actors.payee, state_ttl=0.0)
    payer = Payer.open(channels, actors.payer, actors.payee.address, DEPOSIT)
    channel_id = payer.config.channel_id
    chain.mine(SETTLE_BLOCKS)
    payee.accept(payer.config, payer.pay(10**17))  # seen: 1 ETH, confirmed
    assert payee.book.best_covered(channel_id).cumulative_amount == 10**17
    channels.refund(payer.config, 6 * 10**17, actors.payee)  # 0.4 ETH left
    chain.mine(SETTLE_BLOCKS)  # the refund is confirmed
    payer.top_up(5 * 10**17)  # 0.9 ETH, not confirmed: a reorg could take it away
    payee.accept(payer.config, payer.pay(7 * 10**17))  # 0.8 ETH: only the top-up covers it
    assert payee.book.best(channel_id).cumulative_amount == 8 * 10**17
    assert payee.book.best_covered(channel_id).cumulative_amount == 10**17
