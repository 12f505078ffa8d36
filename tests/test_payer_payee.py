"""The payer and payee objects: signing the next voucher, accepting it safely, settling."""

from __future__ import annotations

import time

import pytest
from channel_helpers import DELAY, EthLedger, advance

from micropay.errors import (
    ChannelClosingError,
    InsufficientDepositError,
    InvalidSignatureError,
    PaymentRefusedError,
    StaleVoucherError,
    UnknownChannelError,
    VoucherError,
)
from micropay.payee import Payee
from micropay.payer import Payer
from micropay.vouchers import Voucher, new_session_key, sign_voucher

ETH = 10**18


@pytest.fixture
def payer(channels, actors):
    return Payer.open(channels, actors.payer, actors.payee.address, ETH, withdraw_delay=DELAY)


@pytest.fixture
def payee(channels, actors):
    return Payee(channels, actors.payee, safety_margin=600, state_ttl=3600)


def test_full_lifecycle_with_a_thousand_vouchers_adds_up_to_the_wei(channels, actors, w3):
    book = EthLedger(w3, actors.payer.address, actors.payee.address, channels.address)
    payer = Payer.open(channels, actors.payer, actors.payee.address, ETH, withdraw_delay=DELAY)
    payee = Payee(channels, actors.payee, safety_margin=600, state_ttl=3600)
    price = 123_456_789_012
    accepted = sum(payee.accept(payer.config, payer.pay(price)).increment for _ in range(1_000))
    assert accepted == 1_000 * price
    book.paid_gas(actors.payee.address, payee.claim(payer.config.channel_id))
    accepted += sum(payee.accept(payer.config, payer.pay(price)).increment for _ in range(500))
    book.paid_gas(actors.payee.address, payee.close(payer.config.channel_id))
    # The payer's gas is for opening; count it from the chain's own receipts.
    state = channels.state(payer.config)
    assert state.finished and state.claimed == 1_500 * price == accepted
    assert book.delta(actors.payee.address) == 1_500 * price
    assert book.delta(channels.address) == 0
    payer_delta = w3.eth.get_balance(actors.payer.address) - book.start[actors.payer.address]
    assert payer_delta <= -1_500 * price  # paid the articles (and its own gas), nothing more
    assert payer_delta > -1_500 * price - 10**16


def test_payer_signs_with_a_fresh_session_key_not_its_own(payer, actors):
    assert payer.config.authorizer != actors.payer.address
    assert payer.config.payer == actors.payer.address


def test_pay_never_promises_more_than_the_deposit(payer):
    payer.pay(ETH - 1)
    with pytest.raises(PaymentRefusedError, match="exceed the deposit"):
        payer.pay(2)
    payer.pay(1)
    assert payer.remaining == 0


def test_a_payer_resigns_from_the_acknowledged_total_never_below_it(payer, payee):
    """An HTTP request the site did not charge (or re-priced) signs again on top of what the
    payee holds; the highest total signed stays known, as the most the payee could hold."""
    payee.accept(payer.config, payer.pay(100))  # handed over: acknowledged
    assert (payer.acknowledged, payer.highest_signed) == (100, 100)
    payer.voucher_for(130)  # sent, not charged
    assert (payer.acknowledged, payer.highest_signed) == (100, 130)
    again = payer.voucher_for(110)  # the same request at a lower price
    assert payee.accept(payer.config, again).increment == 10
    payer.acknowledge(110, again.signature)
    assert (payer.acknowledged, payer.highest_signed, payer.cumulative) == (110, 130, 130)
    with pytest.raises(PaymentRefusedError, match="below the 110 the payee already holds"):
        payer.voucher_for(105)
    with pytest.raises(PaymentRefusedError, match="exceed the deposit"):
        payer.voucher_for(ETH + 1)
    assert payer.pay(5).cumulative_amount == 135  # pay() builds on everything promised
    assert payer.remaining == ETH - 135


@pytest.mark.parametrize("amount", [0, -5, 1.5, "10"])
def test_pay_refuses_nonsense_amounts(payer, amount):
    with pytest.raises(PaymentRefusedError, match="positive integer"):
        payer.pay(amount)


def test_payer_recovers_from_the_chain_and_its_last_voucher(channels, actors, payer, payee):
    for _ in range(3):
        payee.accept(payer.config, payer.pay(10))
    payee.claim(payer.config.channel_id)
    last = payer.pay(10)  # issued but, say, lost in transit
    session = payer.authorizer_key
    restored = Payer.recover(channels, actors.payer, payer.config, session, last)
    assert (restored.cumulative, restored.deposited) == (40, ETH)
    assert payee.accept(restored.config, restored.pay(5)).increment == 15
    # Without the last voucher it falls back to what was claimed: never below it.
    forgetful = Payer.recover(channels, actors.payer, payer.config, session, None)
    assert forgetful.cumulative == 30


def test_payer_top_up_raises_what_it_may_promise(payer):
    payer.pay(ETH)
    payer.top_up(ETH)
    payer.pay(ETH)
    assert payer.deposited == 2 * ETH


def test_payer_with_token_approves_and_deposits(channels, actors, usd):
    usd.mint(actors.stranger.address, 5_000, actors.deployer)
    payer = Payer.open(channels, actors.stranger, actors.payee.address, 5_000, token=usd.address)
    assert channels.state(payer.config).deposited == 5_000
    assert usd.balance_of(actors.stranger.address) == 0


def test_accept_returns_what_each_voucher_added(payer, payee):
    assert payee.accept(payer.config, payer.pay(7)).increment == 7
    result = payee.accept(payer.config, payer.pay(5))
    assert (result.increment, result.cumulative_amount) == (5, 12)
    assert payee.unclaimed(payer.config.channel_id) == 12


def test_accept_refuses_a_replayed_or_lower_voucher(payer, payee):
    first = payer.pay(7)
    payee.accept(payer.config, first)
    with pytest.raises(StaleVoucherError):
        payee.accept(payer.config, first)


def test_accept_refuses_a_voucher_above_the_deposit(channels, payer, payee):
    forged_high = sign_voucher(
        channels.domain, payer.config.channel_id, ETH + 1, payer.authorizer_key
    )
    with pytest.raises(InsufficientDepositError):
        payee.accept(payer.config, forged_high)


def test_accept_sees_a_top_up_without_waiting_for_the_cache(channels, payer, payee):
    payee.accept(payer.config, payer.pay(ETH))  # caches deposited == ETH
    payer.top_up(ETH)
    assert payee.accept(payer.config, payer.pay(ETH)).increment == ETH


def test_accept_refuses_a_forged_signature(channels, actors, payer, payee):
    forged = sign_voucher(channels.domain, payer.config.channel_id, 10, actors.stranger)
    with pytest.raises(InvalidSignatureError):
        payee.accept(payer.config, forged)


def test_accept_refuses_a_channel_paying_someone_else(channels, actors, payer):
    other = Payee(channels, actors.stranger)
    with pytest.raises(UnknownChannelError, match="another payee"):
        other.accept(payer.config, payer.pay(1))


def test_accept_refuses_a_voucher_for_another_configuration(channels, actors, payer, payee):
    voucher = payer.pay(1)
    moved = Voucher(b"\x07" * 32, 1, voucher.signature)
    with pytest.raises(UnknownChannelError, match="another channel"):
        payee.accept(payer.config, moved)


def test_accept_refuses_a_channel_that_was_never_funded(channels, actors, payee):
    session = new_session_key()
    ghost = Payer(channels, actors.payer, _config(actors, session), session, deposited=ETH)
    with pytest.raises(UnknownChannelError, match="no deposit"):
        payee.accept(ghost.config, ghost.pay(1))


def _config(actors, session):
    from micropay.payer import default_salt
    from micropay.vouchers import ZERO_ADDRESS, ChannelConfig

    return ChannelConfig(
        actors.payer.address,
        actors.payee.address,
        ZERO_ADDRESS,
        session.address,
        DELAY,
        default_salt(),
    )


def test_accept_refuses_once_the_withdraw_ends_within_the_margin(payer, payee):
    payee.accept(payer.config, payer.pay(1))
    payer.request_withdraw()
    payee.refresh(payer.config.channel_id)
    # DELAY (3600 s) is still ahead, beyond the 600 s margin: accepted.
    payee.accept(payer.config, payer.pay(1))
    advance(DELAY - 599)
    payee.refresh(payer.config.channel_id)
    with pytest.raises(ChannelClosingError, match="safety margin"):
        payee.accept(payer.config, payer.pay(1))


def test_accept_refuses_a_finished_channel(payer, payee):
    payee.accept(payer.config, payer.pay(1))
    payee.close(payer.config.channel_id)
    with pytest.raises(ChannelClosingError, match="finished"):
        payee.accept(payer.config, payer.pay(1))


def test_claim_all_settles_every_channel_in_one_transaction(channels, actors, payee, w3):
    payers = [
        Payer.open(channels, a, actors.payee.address, ETH)
        for a in (actors.payer, actors.relayer, actors.stranger)
    ]
    for i, p in enumerate(payers):
        payee.accept(p.config, p.pay((i + 1) * 1000))
    book = EthLedger(w3, actors.payee.address)
    receipt = payee.claim_all()
    assert receipt is not None
    book.paid_gas(actors.payee.address, receipt)
    assert book.delta(actors.payee.address) == 6000
    assert payee.claim_all() is None  # nothing left to claim


def test_payer_object_checks_its_keys(channels, actors, payer):
    with pytest.raises(VoucherError, match="authorizer"):
        Payer(channels, actors.payer, payer.config, actors.payer)
    with pytest.raises(VoucherError, match="payer"):
        Payer(channels, actors.stranger, payer.config, payer.authorizer_key)


def test_check_runs_every_check_and_stores_nothing(payer, payee, channels, actors):
    voucher = payer.pay(9)
    checked = payee.check(payer.config, voucher)
    assert (checked.increment, checked.claimed_floor) == (9, 0)
    assert payee.book.best(payer.config.channel_id) is None
    forged = sign_voucher(channels.domain, payer.config.channel_id, 10, actors.stranger)
    with pytest.raises(InvalidSignatureError):
        payee.check(payer.config, forged)


def test_a_fresh_book_does_not_count_what_was_claimed_on_chain_again(channels, actors, payer):
    first = Payee(channels, actors.payee)
    first.accept(payer.config, payer.pay(100))
    first.claim(payer.config.channel_id)
    amnesiac = Payee(channels, actors.payee)  # lost its book, the chain remembers
    with pytest.raises(StaleVoucherError, match="already claimed on chain"):
        amnesiac.accept(payer.config, payer.voucher_for(100))
    assert amnesiac.accept(payer.config, payer.pay(5)).increment == 5


def test_made_up_channels_are_not_cached(payee, channels, actors):
    session = new_session_key()
    for salt in range(3):
        from micropay.vouchers import ZERO_ADDRESS, ChannelConfig

        ghost = ChannelConfig(
            actors.payer.address,
            actors.payee.address,
            ZERO_ADDRESS,
            session.address,
            DELAY,
            salt.to_bytes(32, "big"),
        )
        with pytest.raises(UnknownChannelError):
            payee.accept(ghost, sign_voucher(channels.domain, ghost.channel_id, 1, session))
    assert len(payee._cache) == 0


def test_the_state_cache_is_bounded(channels, actors):
    payee = Payee(channels, actors.payee, max_cached_channels=2)
    payers = [Payer.open(channels, actors.payer, actors.payee.address, 10) for _ in range(3)]
    for p in payers:
        payee.accept(p.config, p.pay(1))
    assert len(payee._cache) == 2
    assert payee.cached_state(payers[0].config.channel_id) is None
    assert payee.cached_state(payers[2].config.channel_id).deposited == 10


def test_a_cached_state_older_than_the_asked_age_is_not_offered(channels, actors):
    payee = Payee(channels, actors.payee)
    payer = Payer.open(channels, actors.payer, actors.payee.address, 10)
    channel_id = payer.config.channel_id
    payee.refresh(channel_id)
    assert payee.cached_state(channel_id, max_age=60).deposited == 10
    time.sleep(0.05)
    assert payee.cached_state(channel_id, max_age=0.01) is None  # too old for this caller
    assert payee.cached_state(channel_id).deposited == 10  # still cached for anyone else
