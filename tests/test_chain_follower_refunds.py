"""The chain follower follows the payee's on-chain partial refund (``Refunded``, contract v2).

A refund lowers a channel's deposit, so the ledger's chain view must show the lowered total
(the latest by block order, not the highest seen) and everything planned from it (the
watchtower's claims, the settlement policy's candidates) must stay within it. On the real
contract on the in-process chain, against real ledgers (SQLite; PostgreSQL when the suite
runs its standalone tests). Reorgs that remove a refund are in tests/test_watchtower.py,
which runs its own anvil.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from micropay.chain_follower import ChainFollower
from micropay.ledger import EventKind, Ledger
from micropay.payee import Payee
from micropay.payer import Payer
from micropay.settlement import Candidate
from micropay.watchtower import Watchtower

pytest_plugins = ["ledger_fixtures"]

ETH = 10**18
SETTLE_BLOCKS = 3  # deeper than the payee's default confirmation depth (2 blocks)


@pytest.fixture
def refund_ledger(channels, ledger_url: str) -> Iterator[Ledger]:
    with Ledger.open(ledger_url, channels.domain) as opened:
        yield opened


def test_a_followed_refund_lowers_the_deposit_and_a_top_up_raises_it_again(
    chain, channels, actors, refund_ledger
):
    payer = Payer.open(channels, actors.payer, actors.payee.address, ETH, withdraw_delay=3600)
    channel_id = payer.config.channel_id
    chain.mine(SETTLE_BLOCKS)
    payee = Payee(channels, actors.payee, book=refund_ledger, safety_margin=60)
    payee.accept(payer.config, payer.pay(3 * 10**17))
    follower = ChainFollower(channels, refund_ledger, confirmations=0)
    assert follower.sync().seeded == 1
    assert refund_ledger.position(channel_id).chain.deposited == ETH

    refunded = channels.refund(payer.config, 4 * 10**17, actors.payee)
    report = follower.sync()
    assert report.events == 1
    view = refund_ledger.position(channel_id).chain
    assert view.deposited == 6 * 10**17 == channels.state(payer.config).deposited
    assert view.as_of_block == refunded["blockNumber"]
    [event] = [e for e in refund_ledger.chain.events(channel_id) if e.kind is EventKind.REFUNDED]
    assert (event.block_number, event.total_deposited) == (refunded["blockNumber"], 6 * 10**17)
    assert refund_ledger.chain.views()[channel_id] == view  # every channel's view agrees

    # A second refund, then a top-up: each total replaces the one before, by block order.
    channels.refund(payer.config, 10**17, actors.payee)
    follower.sync()
    assert refund_ledger.position(channel_id).chain.deposited == 5 * 10**17
    payer.top_up(2 * 10**17)
    follower.sync()
    assert refund_ledger.position(channel_id).chain.deposited == 7 * 10**17
    position = refund_ledger.position(channel_id)
    assert position.to_claim == payer.last_voucher and position.claimable_amount == 3 * 10**17


def test_after_a_refund_below_the_best_voucher_the_plan_claims_within_the_new_deposit(
    chain, channels, actors, refund_ledger
):
    """The payee refunds more than its best voucher leaves unspent: the best voucher can no
    longer be claimed, and the plan falls back on the covered one instead of promising a
    claim the lowered deposit cannot pay."""
    payer = Payer.open(channels, actors.payer, actors.payee.address, ETH, withdraw_delay=3600)
    channel_id = payer.config.channel_id
    chain.mine(SETTLE_BLOCKS)  # the opening deposit is confirmed
    payee = Payee(channels, actors.payee, book=refund_ledger, safety_margin=60)
    covered = payer.pay(2 * 10**17)
    payee.accept(payer.config, covered)
    payer.top_up(ETH)
    best = payer.pay(10**18)  # 1.2 ETH: accepted against the unconfirmed top-up
    payee.accept(payer.config, best)
    assert refund_ledger.best_covered(channel_id) == covered
    watch = Watchtower(
        channels,
        refund_ledger,
        actors.relayer,
        confirmations=0,
        poll_interval=0.01,
        payee_key=actors.payee,
    )
    watch.run_once()
    assert refund_ledger.position(channel_id).to_claim == best

    channels.refund(payer.config, ETH, actors.payee)  # the deposit is 1 ETH again
    payer.request_withdraw()
    watch.follower.sync()
    position = refund_ledger.position(channel_id)
    assert position.chain.deposited == ETH and position.underfunded
    assert position.to_claim == covered and position.claimable_amount == 2 * 10**17
    assert Candidate.from_position(position).unsettled == 2 * 10**17  # what the ranker sees

    report = watch.run_once()
    assert report.underfunded == (channel_id,) and report.claimed_covered == (channel_id,)
    [outcome] = report.outcomes
    assert outcome.ok and outcome.amounts == (2 * 10**17,)
    state = channels.state(payer.config)
    assert (state.deposited, state.claimed) == (ETH, 2 * 10**17)
    watch.run_once()
    assert refund_ledger.position(channel_id).chain.claimed == 2 * 10**17
