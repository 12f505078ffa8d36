"""Open-ended streams: every operation and named failure, debt and its repayment, via the SDK."""

from __future__ import annotations

import ape
import pytest
from streams_fixtures import (
    DAY,
    assert_open_matches_model,
    at,
    balance,
    fee_token,
    mine_at,
    now,
    open_config,
    people,
    revert_args,
    streams,
    tok6,
    tok18,
)

from micropay.errors import ContractRevertError
from micropay.stream_model import RATE_SCALE, OpenStatus, OpenStreamState, rate_for
from micropay.streams import (
    ETH,
    AmountNotReceivedError,
    DepositTooLargeError,
    NothingToWithdrawError,
    NotStreamRecipientError,
    NotStreamSenderError,
    OpenStreamConfig,
    RefundExceedsUnownedError,
    StreamConfigError,
    StreamExistsError,
    StreamPauseError,
    UnknownStreamError,
)

__all__ = ["fee_token", "people", "streams", "tok6", "tok18"]  # fixtures used below

# 1,000 base units a day: 86,400 s do not divide it, so remainders matter.
RATE = rate_for(1_000, DAY)


def _created(streams, config, rate, deposit, sender):
    receipt = streams.create_open(config, rate, deposit, sender)
    return receipt, OpenStreamState.created(receipt.timestamp, rate, receipt.amount)


# -- create ----------------------------------------------------------------------------------


def test_create_open_eth_stream_with_a_first_deposit(w3, streams, people):
    config = open_config(people)
    before = balance(w3, ETH, streams.address)
    receipt, model = _created(streams, config, RATE, 5_000, people.sender)
    assert receipt.amount == 5_000 == balance(w3, ETH, streams.address) - before
    assert_open_matches_model(streams, config, model, receipt.timestamp)
    assert streams.open_config(config.stream_id) == config
    assert streams.contract.functions.openStreamId(config.as_abi()).call() == config.stream_id


def test_create_open_erc20_stream_without_a_deposit_then_anyone_funds_it(w3, streams, people, tok6):
    config = open_config(people, tok6.address)
    receipt, model = _created(streams, config, RATE, 0, people.sender)
    assert receipt.amount == 0
    assert streams.open_status(config) == OpenStatus.STREAMING  # nothing owed yet
    top_up = streams.top_up(config, 3_000, people.stranger)
    model = model.after_deposit(3_000)
    assert top_up.amount == 3_000 and tok6.balance_of(streams.address) == 3_000
    assert_open_matches_model(streams, config, model, top_up.timestamp)


def test_create_open_failures_are_named(w3, streams, people):
    for config, name in [
        (OpenStreamConfig(ETH, people.recipient, ETH), "Streams_ZeroSender"),
        (OpenStreamConfig(people.sender, ETH, ETH), "Streams_ZeroRecipient"),
    ]:
        with pytest.raises(StreamConfigError) as raised:
            streams.create_open(config, RATE, 0, people.sender)
        assert raised.value.error_name == name
    config = open_config(people)
    with pytest.raises(StreamConfigError) as raised:
        streams.create_open(config, 0, 0, people.sender)
    assert raised.value.error_name == "Streams_ZeroRate"
    streams.create_open(config, RATE, 0, people.sender)
    with pytest.raises(StreamExistsError):
        streams.create_open(config, RATE, 0, people.funder)
    # ETH sent without naming an amount is refused, not kept.
    other = open_config(people)
    call = streams.contract.functions.createOpenStream(other.as_abi(), RATE, 0)
    with pytest.raises(ContractRevertError) as raised:
        streams._transact(call, people.sender, 1)
    assert raised.value.error_name == "TokenTransfers_WrongValue"


# -- deposit ---------------------------------------------------------------------------------


def test_deposit_failures_are_named(w3, streams, people, tok18):
    config = open_config(people, tok18.address)
    with pytest.raises(UnknownStreamError):
        streams.top_up(config, 1, people.funder)
    streams.create_open(config, RATE, 0, people.sender)
    with pytest.raises(StreamConfigError) as raised:
        streams.top_up(config, 0, people.funder)
    assert raised.value.error_name == "Streams_ZeroAmount"
    streams.top_up(config, 2**128 - 2, people.funder)
    with pytest.raises(DepositTooLargeError) as raised:
        streams.top_up(config, 2, people.funder)
    assert raised.value.arguments["totalDeposited"] == 2**128
    streams.top_up(config, 1, people.funder)  # exactly 2**128 - 1 fits
    assert streams.open_state(config).deposited == 2**128 - 1


def test_fee_on_transfer_deposits_are_credited_with_what_arrived(w3, streams, people, fee_token):
    config = open_config(people, fee_token.address)
    receipt = streams.create_open(config, RATE, 10_000, people.sender)
    assert receipt.amount == 9_900
    assert streams.top_up(config, 1_000, people.funder).amount == 990
    assert streams.open_state(config).deposited == 10_890 == fee_token.balance_of(streams.address)
    batch = [(open_config(people, fee_token.address), RATE, 1_000)]
    with pytest.raises(AmountNotReceivedError):  # a batch's total must arrive in full
        streams.create_open_batch(batch, people.sender)


# -- withdraw, debt ---------------------------------------------------------------------------


def test_withdrawals_pay_what_streamed_to_the_last_base_unit(w3, streams, people, tok6):
    config = open_config(people, tok6.address)
    receipt, model = _created(streams, config, RATE, 10**6, people.sender)
    start = receipt.timestamp
    for elapsed in (1, 86, 87, DAY, DAY + 1, 3 * DAY + 7):
        at(start + elapsed)
        expected = model.withdrawable_at(start + elapsed)
        before = tok6.balance_of(people.other)
        if expected == 0:
            with pytest.raises(NothingToWithdrawError):
                streams.withdraw(config, people.recipient, to=people.other)
            continue
        paid = streams.withdraw(config, people.recipient, to=people.other)
        model, amount = model.after_withdraw(paid.timestamp)
        assert paid.amount == amount == expected == tok6.balance_of(people.other) - before
        assert_open_matches_model(streams, config, model, paid.timestamp)
    # The rate is 1,000 a day rounded down to 1e-18 of a unit a second: 999 after one
    # day, 3,000 after three days and seven seconds.
    assert model.withdrawn == RATE * (3 * DAY + 7) // RATE_SCALE == 3_000


def test_a_dry_stream_accrues_debt_that_the_next_deposit_pays_first(w3, streams, people):
    config = open_config(people)
    receipt, model = _created(streams, config, RATE_SCALE, 100, people.sender)  # 1 wei/s
    dry = model.runs_dry_at()
    assert dry == receipt.timestamp + 100
    mine_at(dry - 1)
    assert streams.open_amounts(config).refundable == 1
    mine_at(dry)
    assert streams.open_status(config) == OpenStatus.STREAMING  # fully owed, not yet in debt
    mine_at(dry + 50)
    amounts = streams.open_amounts(config)
    assert (amounts.withdrawable, amounts.debt, amounts.refundable) == (100, 50, 0)
    assert streams.open_status(config) == OpenStatus.STREAMING_IN_DEBT
    paid = streams.withdraw(config, people.stranger)
    model, amount = model.after_withdraw(paid.timestamp)
    assert paid.amount == amount == 100
    at(dry + 60)
    top_up = streams.top_up(config, 1_000, people.funder)
    model = model.after_deposit(1_000)
    # The deposit paid the 60 wei of debt: the recipient can take them at once.
    assert model.withdrawable_at(top_up.timestamp) == 60
    assert_open_matches_model(streams, config, model, top_up.timestamp)
    assert model.runs_dry_at() == receipt.timestamp + 1_100


def test_open_withdraw_rules_match_fixed_ones(w3, streams, people):
    config = open_config(people)
    with pytest.raises(UnknownStreamError):
        streams.withdraw(config, people.recipient)
    receipt, _ = _created(streams, config, RATE_SCALE, 100, people.sender)
    at(receipt.timestamp + 10)
    with pytest.raises(NotStreamRecipientError) as raised:
        streams.withdraw(config, people.stranger, to=people.stranger)
    assert raised.value.error_name == "Streams_WithdrawalToOther"
    with pytest.raises(StreamConfigError) as raised:
        streams.withdraw(config, people.recipient, to=ETH)
    assert raised.value.error_name == "Streams_ZeroDestination"


# -- sender controls -------------------------------------------------------------------------


def test_pause_stops_accrual_and_resume_restarts_it_keeping_the_remainder(w3, streams, people):
    config = open_config(people)
    receipt, model = _created(streams, config, RATE, 10**6, people.sender)
    t = receipt.timestamp
    at(t + 100)  # 100 s at 1,000/day: 1 whole unit and a remainder of 0.157...
    paused = streams.pause(config, people.sender)
    model = model.after_pause(paused.timestamp)
    assert model.streamed_at_snapshot == 1 and model.snapshot_remainder > 0
    assert_open_matches_model(streams, config, model, paused.timestamp)
    mine_at(t + DAY)
    assert streams.open_amounts(config).streamed == 1
    assert streams.open_status(config) == OpenStatus.PAUSED
    at(t + DAY + 1)
    resumed = streams.resume(config, RATE, people.sender)
    model = model.after_resume(resumed.timestamp, RATE)
    mine_at(t + DAY + 1 + DAY - 100)  # a full day of streaming in two pieces
    streamed = streams.open_amounts(config).streamed
    # Exactly what one uninterrupted day streams: the pause kept the fraction of a unit.
    assert streamed == model.streamed_at(t + 2 * DAY - 99) == RATE * DAY // RATE_SCALE == 999


def test_adjust_rate_keeps_what_streamed_at_the_old_rate(w3, streams, people):
    config = open_config(people)
    receipt, model = _created(streams, config, RATE, 10**6, people.sender)
    at(receipt.timestamp + 1_000)
    adjusted = streams.adjust_rate(config, 3 * RATE, people.sender)
    model = model.after_adjust_rate(adjusted.timestamp, 3 * RATE)
    [event] = streams.contract.events.RateAdjusted().process_receipt(
        w3.eth.get_transaction_receipt(adjusted.tx_hash)
    )
    assert (event.args.oldRatePerSecond, event.args.newRatePerSecond) == (RATE, 3 * RATE)
    assert event.args.totalStreamed == model.streamed_at_snapshot == 11
    mine_at(receipt.timestamp + 5_000)
    assert_open_matches_model(streams, config, model, receipt.timestamp + 5_000)


def test_pause_resume_and_rate_failures_are_named(w3, streams, people):
    config = open_config(people)
    for action in (
        lambda: streams.pause(config, people.sender),
        lambda: streams.resume(config, RATE, people.sender),
        lambda: streams.adjust_rate(config, RATE, people.sender),
        lambda: streams.refund(config, 1, people.sender),
    ):
        with pytest.raises(UnknownStreamError):
            action()
    streams.create_open(config, RATE, 1_000, people.sender)
    for action in (
        lambda: streams.pause(config, people.recipient),
        lambda: streams.resume(config, RATE, people.recipient),
        lambda: streams.adjust_rate(config, RATE, people.recipient),
        lambda: streams.refund(config, 1, people.recipient),
    ):
        with pytest.raises(NotStreamSenderError) as raised:
            action()
        assert revert_args(raised.value)["caller"] == people.recipient
    with pytest.raises(StreamPauseError) as raised:
        streams.resume(config, RATE, people.sender)
    assert raised.value.error_name == "Streams_NotPaused"
    assert raised.value.arguments["ratePerSecond"] == RATE
    with pytest.raises(StreamConfigError) as raised:
        streams.adjust_rate(config, 0, people.sender)
    assert raised.value.error_name == "Streams_ZeroRate"
    streams.pause(config, people.sender)
    with pytest.raises(StreamPauseError) as raised:
        streams.pause(config, people.sender)
    assert raised.value.error_name == "Streams_AlreadyPaused"
    with pytest.raises(StreamPauseError) as raised:
        streams.adjust_rate(config, RATE, people.sender)
    assert raised.value.error_name == "Streams_StreamPaused"
    with pytest.raises(StreamConfigError) as raised:
        streams.resume(config, 0, people.sender)
    assert raised.value.error_name == "Streams_ZeroRate"


def test_refund_returns_only_what_is_not_yet_owed(w3, streams, people, tok18):
    config = open_config(people, tok18.address)
    receipt, model = _created(streams, config, RATE_SCALE, 1_000, people.sender)  # 1 unit/s
    at(receipt.timestamp + 100)
    with pytest.raises(RefundExceedsUnownedError) as raised:
        streams.refund(config, 901, people.sender)
    assert raised.value.arguments == {
        "streamId": "0x" + config.stream_id.hex(),
        "amount": 901,
        "refundable": 900,
    }
    with pytest.raises(StreamConfigError) as raised:
        streams.refund(config, 0, people.sender)
    assert raised.value.error_name == "Streams_ZeroAmount"
    at(receipt.timestamp + 200)
    before = tok18.balance_of(people.sender)
    refunded = streams.refund(config, 800, people.sender)  # everything not owed at +200
    model = model.after_refund(refunded.timestamp, 800)
    assert refunded.amount == 800 == tok18.balance_of(people.sender) - before
    assert_open_matches_model(streams, config, model, refunded.timestamp)
    assert streams.open_status(config) == OpenStatus.STREAMING
    mine_at(receipt.timestamp + 201)
    assert streams.open_status(config) == OpenStatus.STREAMING_IN_DEBT
    assert streams.open_amounts(config).debt == 1


def test_paused_stream_in_debt_reports_it(w3, streams, people):
    config = open_config(people)
    receipt, _ = _created(streams, config, RATE_SCALE, 10, people.sender)
    at(receipt.timestamp + 30)
    streams.pause(config, people.sender)
    assert streams.open_status(config) == OpenStatus.PAUSED_IN_DEBT
    assert streams.open_amounts(config).debt == 20


def test_open_stream_transfer_hands_on_the_withdrawals(w3, streams, people):
    config = open_config(people)
    with pytest.raises(UnknownStreamError):
        streams.transfer(config, people.other, people.recipient)
    receipt, _ = _created(streams, config, RATE_SCALE, 1_000, people.sender)
    with pytest.raises(NotStreamRecipientError):
        streams.transfer(config, people.other, people.sender)
    streams.transfer(config, people.other, people.recipient)
    assert streams.recipient_of(config) == people.other
    assert streams.open_state(config).transferred
    at(receipt.timestamp + 40)
    with pytest.raises(NotStreamRecipientError):
        streams.withdraw(config, people.recipient, to=people.recipient)
    before = balance(w3, ETH, people.other)
    assert streams.withdraw(config, people.stranger).amount == 40
    assert balance(w3, ETH, people.other) - before == 40


# -- batch -----------------------------------------------------------------------------------


def test_open_batch_creates_each_stream_with_its_rate_and_deposit(w3, streams, people, tok6):
    batch = [(open_config(people, tok6.address), RATE * (i + 1), 1_000 * i) for i in range(4)]
    before = tok6.balance_of(people.sender)
    receipt = streams.create_open_batch(batch, people.sender)
    assert receipt.stream_ids == tuple(c.stream_id for c, _, _ in batch)
    assert before - tok6.balance_of(people.sender) == 6_000
    for config, rate, deposit in batch:
        state = streams.open_state(config)
        assert (state.rate_per_second, state.deposited, state.snapshot_time) == (
            rate,
            deposit,
            receipt.timestamp,
        )


def test_open_batch_failures_are_named(w3, streams, people, tok6):
    a = open_config(people)
    b = open_config(people, tok6.address)
    cases = [
        ([], "Streams_EmptyBatch"),
        ([(a, RATE, 1), (b, RATE, 1)], "Streams_BatchTokenMismatch"),
        ([(a, RATE, 1), (open_config(people), 0, 1)], "Streams_ZeroRate"),
    ]
    for batch, name in cases:
        with pytest.raises(StreamConfigError) as raised:
            streams.create_open_batch(batch, people.sender)
        assert raised.value.error_name == name
    with pytest.raises(StreamExistsError):
        streams.create_open_batch([(a, RATE, 1), (a, RATE, 1)], people.sender)
    call = streams.contract.functions.createOpenStreams([a.as_abi()], [RATE, RATE], [1])
    with pytest.raises(StreamConfigError) as raised:
        streams._transact(call, people.sender, 1)
    assert raised.value.arguments == {"streams": 1, "rates": 2, "amounts": 1}


def test_open_status_of_an_unknown_stream_is_a_named_revert(w3, streams, people, project):
    contract = project.Streams.at(streams.address)
    with ape.reverts(contract.Streams_UnknownStream):
        contract.openStatus(open_config(people).stream_id)


def test_deposit_while_paused_is_refundable_in_full(w3, streams, people):
    config = open_config(people)
    receipt, model = _created(streams, config, RATE_SCALE, 50, people.sender)
    at(receipt.timestamp + 20)
    model = model.after_pause(streams.pause(config, people.sender).timestamp)
    model = model.after_deposit(streams.top_up(config, 500, people.funder).amount)
    refundable = model.refundable_at(now(w3))
    assert refundable == 530
    sender_refund = streams.refund(config, refundable, people.sender)
    assert sender_refund.amount == 530
    assert streams.open_amounts(config).withdrawable == 20
